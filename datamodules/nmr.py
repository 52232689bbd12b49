"""Convert the NMR/SoftRas ``{synset}_{split}_{images,voxels}.npz`` files to recon-views HDF5.

The npz files hold one array each (``arr_0``; images uint8 (N, 24, 4, 64, 64), voxels bool (N, 32, 32, 32),
docs/conventions.md#dataset) and reach several GB. ``np.load`` would inflate a whole array; here a member of the zip
is opened with ``zipfile`` (stored or deflated alike), its .npy header parsed with ``numpy.lib.format``
and rows streamed a block at a time, so memory stays at one block whatever the file size.
Bytes are copied unchanged: no re-orientation, no re-scaling.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from math import prod
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np
from numpy.lib import format as npy_format
from rich.progress import Progress

from recon.datamodules.categories import SHAPENET_CATEGORIES, Category, resolve_categories
from recon.datamodules.h5 import SPLITS, ViewsFileInfo, ViewsLayout, ViewsWriter, read_info

# 32 objects of images are 12.6 MB: large enough to amortise the per-call costs, small enough to bound memory.
ROWS_PER_BLOCK = 32
# What zipfile raises on a damaged member: a CRC mismatch (BadZipFile), broken deflate data (zlib.error), a
# member shorter than its header says (EOFError), a failing disk (OSError).
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


class NpyMemberReader:
    """The first ``.npy`` array of an ``.npz`` read row by row (axis 0) without loading it whole.

    ``shape`` and ``dtype`` come from the .npy header; ``blocks(n)`` yields arrays of up to ``n`` rows.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as error:
            raise ValueError(f"{self.path}: not a readable .npz (zip) file ({error})") from None
        members = [name for name in self._zip.namelist() if name.endswith(".npy")]
        if not members:
            self._zip.close()
            raise ValueError(f"{self.path}: holds no .npy array; expected one array saved with np.savez")
        self.member = members[0]
        try:
            self._stream: IO[bytes] = self._zip.open(self.member)
        except _DAMAGE as error:
            self._zip.close()
            raise self._damaged(error) from None
        try:
            version = npy_format.read_magic(self._stream)
            if version == (1, 0):
                shape, fortran_order, dtype = npy_format.read_array_header_1_0(self._stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = npy_format.read_array_header_2_0(self._stream)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except _DAMAGE as error:
            self.close()
            raise self._damaged(error) from None
        except ValueError as error:
            self.close()
            raise ValueError(f"{self.path}: member {self.member} is not a readable .npy array ({error})") from None
        if fortran_order or dtype.hasobject or not shape:
            self.close()
            raise ValueError(f"{self.path}: array {self.member} is Fortran-ordered, object-typed or a scalar; "
                             "expected a C-ordered numeric array as np.savez writes")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype: np.dtype = dtype
        self._row_bytes = prod(self.shape[1:]) * dtype.itemsize

    def _damaged(self, error: BaseException) -> ValueError:
        reason = f"zlib: {error}" if isinstance(error, zlib.error) else str(error) or type(error).__name__
        return ValueError(f"{self.path}: member {self.member} is damaged ({reason}); "
                          "the .npz file is corrupt: copy or download it again")

    def blocks(self, rows: int | None = None) -> Iterator[np.ndarray]:
        """Yield consecutive blocks of at most ``rows`` (default ``ROWS_PER_BLOCK``) rows, (n, *shape[1:])."""
        rows = rows or ROWS_PER_BLOCK
        done = 0
        while done < self.shape[0]:
            n = min(rows, self.shape[0] - done)
            try:
                data = self._stream.read(n * self._row_bytes)
            except _DAMAGE as error:
                raise self._damaged(error) from None
            if len(data) != n * self._row_bytes:
                raise ValueError(f"{self.path}: array {self.member} ends after {done + len(data) // self._row_bytes}"
                                 f" of {self.shape[0]} rows; the file is truncated")
            yield np.frombuffer(data, self.dtype).reshape(n, *self.shape[1:])
            done += n

    def close(self) -> None:
        self._stream.close()
        self._zip.close()

    def __enter__(self) -> NpyMemberReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def nmr_file(src_dir: Path, category: Category, split: str, kind: str) -> Path:
    """The NMR file name: ``{synset}_{split}_{kind}.npz`` with kind ``images`` or ``voxels``."""
    return src_dir / f"{category.synset}_{split}_{kind}.npz"


def discover_categories(src_dir: Path) -> list[Category]:
    """The categories of which ``src_dir`` holds at least one NMR file, in the canonical order."""
    return [c for c in SHAPENET_CATEGORIES if any(src_dir.glob(f"{c.synset}_*_*.npz"))]


def _check_pair(images: NpyMemberReader, voxels: NpyMemberReader, layout: ViewsLayout) -> None:
    s, r = layout.image_size, layout.voxel_size
    want_images = (layout.num_views, 4, s, s)
    if images.shape[1:] != want_images or images.dtype != np.uint8:
        raise ValueError(f"{images.path}: array of shape {images.shape} {images.dtype}; expected "
                         f"(N, {', '.join(map(str, want_images))}) uint8")
    if voxels.shape[1:] != (r, r, r) or voxels.dtype != np.bool_:
        raise ValueError(f"{voxels.path}: array of shape {voxels.shape} {voxels.dtype}; expected (N, {r}, {r}, {r}) bool")
    if images.shape[0] != voxels.shape[0]:
        raise ValueError(f"{images.path} holds {images.shape[0]} objects but {voxels.path} holds "
                         f"{voxels.shape[0]}; expected the same objects in both")


def convert_nmr(src_dir: str | os.PathLike[str], out: str | os.PathLike[str], categories: Sequence[str] | None = None,
                splits: Sequence[str] = SPLITS, progress: Progress | None = None) -> ViewsFileInfo:
    """Convert NMR npz files in ``src_dir`` to the recon-views file ``out``; returns its description.

    ``categories``: names or synsets (default: every category with files in ``src_dir``). Every checked
    problem (missing file, shape, dtype, object-count mismatch) raises before ``out`` exists, and a
    failure while copying leaves no file under ``out``.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory; expected the NMR dataset folder with "
                                "{synset}_{split}_images.npz and _voxels.npz files")
    unknown_splits = [s for s in splits if s not in SPLITS]
    if unknown_splits or not splits:
        raise ValueError(f"splits {list(splits)}; expected a non-empty subset of {list(SPLITS)}")
    if categories:
        chosen = resolve_categories(categories, SHAPENET_CATEGORIES)
    else:
        chosen = discover_categories(src)
        if not chosen:
            raise FileNotFoundError(f"{src}: no NMR files ({{synset}}_{{split}}_images.npz) found")
    missing = [str(nmr_file(src, c, s, k)) for s in splits for c in chosen for k in ("images", "voxels")
               if not nmr_file(src, c, s, k).is_file()]
    if missing:
        raise FileNotFoundError(f"missing NMR files: {', '.join(missing)}")

    layout = ViewsLayout()
    counts: dict[tuple[str, Category], int] = {}
    for split in splits:  # validate every header before writing anything
        for category in chosen:
            with NpyMemberReader(nmr_file(src, category, split, "images")) as images, \
                    NpyMemberReader(nmr_file(src, category, split, "voxels")) as voxels:
                _check_pair(images, voxels, layout)
                counts[split, category] = images.shape[0]

    task = progress.add_task("convert-nmr", total=sum(counts.values())) if progress is not None else None
    with ViewsWriter(out, chosen, source="nmr", layout=layout, attributes={"source_dir": str(src)}) as writer:
        for split in splits:
            writer.create_split(split)
            for index, category in enumerate(chosen):
                with NpyMemberReader(nmr_file(src, category, split, "images")) as images, \
                        NpyMemberReader(nmr_file(src, category, split, "voxels")) as voxels:
                    done = 0
                    for image_block, voxel_block in zip(images.blocks(), voxels.blocks(), strict=True):
                        n = len(image_block)
                        ids = [f"{category.synset}/{split}/{done + i:05d}" for i in range(n)]
                        writer.append(split, image_block, voxel_block, np.full(n, index), ids)
                        done += n
                        if progress is not None and task is not None:
                            progress.advance(task, n)
    return read_info(out)
