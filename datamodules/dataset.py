"""``ViewPairDataset``: one split of a recon-views file, streamed, keyed by (object, view_a, view_b).

The HDF5 file is opened lazily in the process that reads (h5py handles cannot be pickled and HDF5 is not
fork-safe): the dataset holds only the path until its first item, and reopens after a fork. Reads go through
h5py alone, so whatever h5py reads (any filter, chunks never written and read as the fill value) reads here
the same. Each view and voxel grid of a batch is one read (``ItemReader``); nothing loads a whole split.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from recon.datamodules.h5 import ViewsLayout, corrupt_file_error, open_views
from recon.datamodules.samplers import PairKey


def view_eyes(layout: ViewsLayout) -> Tensor:
    """(V, 3) float32 camera positions of the file's views, SoftRas's ``get_points_from_angles``."""
    from recon.render import eye_from_angles

    azimuths = torch.from_numpy(layout.azimuths())
    return eye_from_angles(layout.distance, layout.elevation, azimuths).float()


class ItemReader:
    """Reads whole items of an h5py dataset, the trailing dimensions at one leading index, into given arrays.

    One low-level ``H5Dread`` of one hyperslab per item: h5py's slicing costs more per call than inflating a
    view. Not one read of the union of a batch's items: HDF5 maps an irregular selection to chunks by
    visiting every chunk of its bounding box, which for a random batch is most of the file. One-byte items
    are read in the file's own type: bool is an HDF5 enum, and converting an enum looks up every element.
    An item read twice in a batch comes from HDF5's chunk cache.
    """

    def __init__(self, dataset: h5py.Dataset, leading: int) -> None:
        self.dataset = dataset
        self.tail = tuple(dataset.shape[leading:])
        self._file_space, self._item_space = dataset.id.get_space(), h5py.h5s.create_simple(self.tail)
        self._memory_type = dataset.id.get_type() if dataset.dtype.itemsize == 1 else None
        self._count, self._zeros = (1,) * leading + self.tail, (0,) * len(self.tail)

    def read(self, index: tuple[int, ...], out: np.ndarray) -> None:
        """Fill ``out`` (shape ``tail``, the dataset's dtype, C-contiguous) with the item at ``index``."""
        self._file_space.select_hyperslab((*index, *self._zeros), self._count)
        self.dataset.id.read(self._item_space, self._file_space, out, self._memory_type)


def batch_tensors(layout: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, Tensor]:
    """Empty tensors of the given shapes and dtypes, cut from one storage (each 64-byte aligned).

    In a DataLoader worker the storage is allocated in shared memory and filled in place: the batch then
    reaches the main process as one segment, instead of one new segment per tensor and a copy into each.
    """
    sizes = {name: -(-int(np.prod(shape, dtype=np.int64)) * dtype.itemsize // 64) * 64
             for name, (shape, dtype) in layout.items()}
    storage = torch.empty(sum(sizes.values()), dtype=torch.uint8)
    if get_worker_info() is not None:
        storage.share_memory_()
    tensors, offset = {}, 0
    for name, (shape, dtype) in layout.items():
        length = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        tensors[name] = storage[offset: offset + length].view(dtype).view(shape)
        offset += sizes[name]
    return tensors


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
            self._handles = {"file": file, "images": ItemReader(group["images"], 2),
                             "voxels": ItemReader(group["voxels"], 1),
                             "category": group["category"][()].astype(np.int64)}  # N int16: tiny, read once
            self._pid = os.getpid()
        return self._handles

    def close(self) -> None:
        """Close this process's file handle (reopened on the next item)."""
        if self._handles is not None and self._pid == os.getpid():
            self._handles["file"].close()
        self._handles, self._pid = None, None

    def _check(self, keys: list[PairKey]) -> np.ndarray:
        """``keys`` as an (n, 3) int64 array, each checked against the split's size."""
        array = np.asarray(keys, dtype=np.int64).reshape(len(keys), 3)
        v = self.layout.num_views
        bad = (array < 0).any(1) | (array[:, 0] >= self.num_objects) | (array[:, 1:] >= v).any(1)
        if bad.any():
            o, a, b = array[np.flatnonzero(bad)[0]].tolist()
            raise IndexError(f"key {(o, a, b)} outside {self.num_objects} objects × {v} views of "
                             f"{self.path}:{self.split}")
        return array

    def _read(self, keys: np.ndarray) -> dict[str, Tensor]:
        handles = self._open()
        n, s, r = len(keys), self.layout.image_size, self.layout.voxel_size
        layout = {"images_a": ((n, 4, s, s), torch.uint8), "images_b": ((n, 4, s, s), torch.uint8)}
        if self.voxels:
            layout["voxels"] = ((n, r, r, r), torch.bool)
        layout.update({name: ((n, 3), torch.float32) for name in ("eyes_a", "eyes_b")})
        layout.update({name: ((n,), torch.int64) for name in ("views_a", "views_b", "category", "object_index")})
        batch = batch_tensors(layout)
        images_a, images_b = batch["images_a"].numpy(), batch["images_b"].numpy()
        try:
            for i, (o, a, b) in enumerate(keys.tolist()):
                handles["images"].read((o, a), images_a[i])
                handles["images"].read((o, b), images_b[i])
                if self.voxels:
                    handles["voxels"].read((o,), batch["voxels"].numpy()[i])
        except OSError as error:  # a damaged chunk: HDF5 fails to read or inflate it
            raise corrupt_file_error(self.path, error) from None
        for name, column in (("object_index", 0), ("views_a", 1), ("views_b", 2)):
            batch[name].copy_(torch.from_numpy(keys[:, column]))
        batch["category"].copy_(torch.from_numpy(handles["category"][keys[:, 0]]))
        torch.index_select(self.eyes, 0, batch["views_a"], out=batch["eyes_a"])
        torch.index_select(self.eyes, 0, batch["views_b"], out=batch["eyes_b"])
        if self.float_images:
            for side in ("images_a", "images_b"):
                batch[side] = images_to_float(batch[side])
        return batch

    def __getitem__(self, key: PairKey | list[PairKey]) -> dict[str, Tensor]:
        """One item for a key, or a whole batch (leading dimension n) for a list of n keys."""
        batched = isinstance(key, list)
        batch = self._read(self._check(key if batched else [key]))
        return batch if batched else {name: value[0] for name, value in batch.items()}


def images_to_float(images: Tensor) -> Tensor:
    """uint8 images as stored → float32 in [0, 1] (same shape, on the same device)."""
    return images * (1.0 / 255.0)  # one fused pass; uint8 × float promotes to float32
