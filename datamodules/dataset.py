"""``ViewPairDataset``: one split of a recon-views file, streamed, keyed by (object, view_a, view_b).

The HDF5 file is opened lazily in the process that reads (h5py handles cannot be pickled and HDF5 is not
fork-safe): the dataset holds only the path until its first item, and reopens after a fork. An item is
two image chunks and one voxel chunk (``ChunkReader``); nothing loads a whole split.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from recon.datamodules.chunks import ChunkReader
from recon.datamodules.h5 import ViewsLayout, open_views
from recon.datamodules.ring import ItemSpec, batch_bytes, carve
from recon.datamodules.samplers import PairKey


def view_eyes(layout: ViewsLayout) -> Tensor:
    """(V, 3) float32 camera positions of the file's views, SoftRas's ``get_points_from_angles``."""
    from recon.render import eye_from_angles

    azimuths = torch.from_numpy(layout.azimuths())
    return eye_from_angles(layout.distance, layout.elevation, azimuths).float()


class ViewPairDataset(Dataset[dict[str, Tensor]]):
    """Items of one split: ``dataset[(object, view_a, view_b)]`` is a dict of

    - ``images_a``, ``images_b``: float32 (4, S, S) in [0, 1], channels as stored (NMR: RGB inverted,
      background 0; alpha = mask) — or the stored uint8 with ``float_images=False`` (see ``images_to_float``);
    - ``eyes_a``, ``eyes_b``: float32 (3,); ``views_a``, ``views_b``: int64 ();
    - ``voxels``: bool (R, R, R) in the dataset orientation (left out with ``voxels=False``: training never
      uses them and inflating 32 KiB per item is the largest single cost of a read);
    - ``category``: int64 () index into the file's category table; ``object_index``: int64 () within the split.

    ``dataset[[key, ...]]`` reads a whole batch at once (leading dimension n), the way the DataModule's
    loaders use it. Keys come from ``TrainPairSampler`` / ``EvalPairSampler``; ``len`` is the number of objects.
    """

    def __init__(self, path: str | os.PathLike[str], split: str, layout: ViewsLayout, num_objects: int,
                 eyes: Tensor | None = None, float_images: bool = True, voxels: bool = True) -> None:
        self.path = os.fspath(path)
        self.float_images = float_images
        self.voxels = voxels
        self.split = split
        self.layout = layout
        self.num_objects = num_objects
        self.eyes = view_eyes(layout) if eyes is None else eyes.float()
        self._handles: dict[str, Any] | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.num_objects

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = None, None  # never pickle an open h5py file
        return state

    def _open(self) -> dict[str, Any]:
        if self._handles is None or self._pid != os.getpid():
            file = open_views(self.path)
            group = file[self.split]
            s, r = self.layout.image_size, self.layout.voxel_size
            self._handles = {
                "file": file,
                "images": ChunkReader(group["images"], (4, s, s)),
                "voxels": ChunkReader(group["voxels"], (r, r, r)) if self.voxels else None,
                "category": group["category"][()].astype(np.int64),  # N int16: tiny, read once
            }
            self._pid = os.getpid()
        return self._handles

    def close(self) -> None:
        """Close this process's file handles (reopened on the next item)."""
        if self._handles is not None and self._pid == os.getpid():
            for reader in (self._handles["images"], self._handles["voxels"]):
                if reader is not None:
                    reader.close()
            self._handles["file"].close()
        self._handles, self._pid = None, None

    def item_spec(self) -> ItemSpec:
        """Shape (of one item) and dtype of every batch entry."""
        s, r = self.layout.image_size, self.layout.voxel_size
        image = ((4, s, s), torch.float32 if self.float_images else torch.uint8)
        spec: ItemSpec = {"images_a": image, "images_b": image, "eyes_a": ((3,), torch.float32),
                          "eyes_b": ((3,), torch.float32)}
        spec.update({name: ((), torch.int64) for name in ("views_a", "views_b", "category", "object_index")})
        if self.voxels:
            spec["voxels"] = ((r, r, r), torch.bool)
        return spec

    def _check(self, keys: list[PairKey]) -> tuple[list[int], list[int], list[int]]:
        objects, views_a, views_b = ([int(k[i]) for k in keys] for i in range(3))
        v = self.layout.num_views
        for o, a, b in zip(objects, views_a, views_b, strict=True):
            if not (0 <= o < self.num_objects and 0 <= a < v and 0 <= b < v):
                raise IndexError(f"key {(o, a, b)} outside {self.num_objects} objects × {v} views of "
                                 f"{self.path}:{self.split}")
        return objects, views_a, views_b

    def read_batch(self, keys: list[PairKey], out: dict[str, Tensor]) -> None:
        """Write the batch of ``keys`` into ``out`` (tensors shaped by ``item_spec`` with leading n)."""
        objects, views_a, views_b = self._check(keys)
        handles = self._open()
        for side, views in (("images_a", views_a), ("images_b", views_b)):
            target = out[side]
            raw = target.numpy() if target.dtype == torch.uint8 else np.empty(target.shape, np.uint8)
            handles["images"].read(list(zip(objects, views, strict=True)), raw)
            if target.dtype != torch.uint8:
                torch.mul(torch.from_numpy(raw), 1.0 / 255.0, out=target)
        if self.voxels:
            handles["voxels"].read([(o,) for o in objects], out["voxels"].numpy())
        for name, values in (("views_a", views_a), ("views_b", views_b), ("object_index", objects)):
            out[name].copy_(torch.tensor(values))
        out["category"].copy_(torch.from_numpy(handles["category"][objects]))
        torch.index_select(self.eyes, 0, out["views_a"], out=out["eyes_a"])
        torch.index_select(self.eyes, 0, out["views_b"], out=out["eyes_b"])

    def __getitem__(self, key: PairKey | list[PairKey]) -> dict[str, Tensor]:
        """One item for a key, or a whole batch (leading dimension n) for a list of n keys."""
        batched = isinstance(key, list)
        keys = key if batched else [key]
        spec = self.item_spec()
        # One buffer for the whole batch: from a DataLoader worker, it reaches the main process as one
        # shared-memory segment written in place (see recon.datamodules.ring for why that matters).
        buffer = torch.empty(batch_bytes(spec, len(keys)), dtype=torch.uint8)
        if get_worker_info() is not None:
            buffer.share_memory_()
        out = carve(buffer, spec, len(keys), len(keys))
        self.read_batch(keys, out)
        return out if batched else {name: value[0] for name, value in out.items()}


def images_to_float(images: Tensor) -> Tensor:
    """uint8 images as stored → float32 in [0, 1] (same shape, on the same device)."""
    return images * (1.0 / 255.0)  # one fused pass; uint8 × float promotes to float32
