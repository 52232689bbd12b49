"""The recon-views HDF5 format, version 1: a validating reader and an atomic writer.

Layout (docs/conventions.md#hdf5-layout): one group per split with
``images`` uint8 (N, V, 4, S, S) chunked one view per chunk, ``voxels`` bool (N, R, R, R),
``category`` int16 (N,) indexing ``/categories`` (synset ids, attribute ``names``) and
``object_id`` (N,), both UTF-8 strings; file attributes describe the camera and the sizes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from recon import atomic
from recon.datamodules.categories import Category
from recon.datamodules.interrupts import raise_if_interrupted
from recon.errors import DataFileError, disk_full_cause, disk_full_error, human_size

FORMAT = "recon-views"
VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
MIN_VIEWS = 2  # training pairs a view of an object with another
MAX_VOXEL_SIZE = 64  # recon.mesh.voxelize's largest grid (one int64 bit line a row)
_HOW_TO_CREATE = "create one with `recon-data synth` or `recon-data convert-nmr`"
# One view per chunk keeps a random view read at one 16 KiB inflate; the chunk cache only needs to hold the
# few chunks of one batch, w0=1 evicts fully read chunks first.
READ_CACHE_BYTES = 4 * 2**20
READ_CACHE_SLOTS = 1_009


log = logging.getLogger(__name__)


class ViewsFormatError(DataFileError):
    """A file that is not a readable recon-views version 1 file; the message names file and problem (a
    ``ValueError``, and a user error: the commands print it as one line)."""


def h5py_reason(error: BaseException) -> str:
    """The useful part of an h5py/HDF5 error, on one short line: ``Unable to synchronously open file
    (truncated file: eof = 1000, ...)`` → ``truncated file: eof = 1000, ...``."""
    text = str(error)
    inner = re.search(r"\((.*)\)\s*$", text, flags=re.DOTALL)
    reason = " ".join((inner.group(1) if inner else text).split())
    return reason if len(reason) <= 120 else reason[:117] + "..."


def corrupt_file_error(path: str | os.PathLike[str], error: BaseException) -> ViewsFormatError:
    """The one-line error for a file HDF5 cannot read: ``FILE: truncated or corrupt HDF5 file (reason)``."""
    return ViewsFormatError(f"{os.fspath(path)}: truncated or corrupt HDF5 file ({h5py_reason(error)})")


@dataclass(frozen=True)
class ViewsLayout:
    """Camera and sizes shared by every object of a file (the NMR/SoftRas rendering set's values)."""

    image_size: int = 64
    num_views: int = 24
    distance: float = 2.732
    elevation: float = 30.0
    azimuth_step: float = -15.0
    voxel_size: int = 32

    def azimuths(self) -> np.ndarray:
        """Azimuth in degrees of each view: (V,) float64, ``azimuth_step * view``."""
        return self.azimuth_step * np.arange(self.num_views, dtype=np.float64)


@dataclass(frozen=True)
class ViewsFileInfo:
    """What a validated file holds, read without touching image or voxel data."""

    path: Path
    layout: ViewsLayout
    categories: tuple[Category, ...]
    split_sizes: dict[str, int]
    attributes: dict[str, object] = field(default_factory=dict)

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    return value


def open_views(path: str | os.PathLike[str]) -> h5py.File:
    """Open a recon-views file read-only with a chunk cache sized for random view reads (no validation).

    A file HDF5 cannot open (truncated, corrupt) raises ``ViewsFormatError`` naming it, not h5py's OSError.
    """
    _check_is_file(Path(path))
    try:
        return h5py.File(path, "r", rdcc_nbytes=READ_CACHE_BYTES, rdcc_nslots=READ_CACHE_SLOTS, rdcc_w0=1.0)
    except OSError as error:
        raise corrupt_file_error(path, error) from None


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise ViewsFormatError(f"{path}: is a directory; expected a recon-views HDF5 file (such as "
                               f"data/synthetic.h5) — {_HOW_TO_CREATE}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a recon-views HDF5 file — {_HOW_TO_CREATE}")


def read_info(path: str | os.PathLike[str]) -> ViewsFileInfo:
    """Validate ``path`` as recon-views version 1 and return its description.

    Cheap: it reads attributes, shapes and the per-object category arrays, never image or voxel data.
    Raises ``FileNotFoundError`` for a missing file and ``ViewsFormatError`` (a ``ValueError``) naming the
    file and the problem for anything else: a directory, not HDF5, truncated or corrupt, a wrong layout.
    """
    path = Path(path)
    _check_is_file(path)
    if not h5py.is_hdf5(path):
        raise ViewsFormatError(f"{path}: not an HDF5 file; expected a recon-views file — {_HOW_TO_CREATE}")
    with open_views(path) as file:
        try:
            return _validate(path, file)
        except (OSError, RuntimeError, KeyError) as error:  # HDF5 failing on damaged metadata
            raise corrupt_file_error(path, error) from None


def _validate(path: Path, file: h5py.File) -> ViewsFileInfo:
    def fail(problem: str) -> ViewsFormatError:
        return ViewsFormatError(f"{path}: {problem}")

    attrs = {key: _plain(value) for key, value in file.attrs.items()}
    if "format" not in attrs:
        raise fail(f"not a recon-views file (attribute 'format' is missing); expected format='{FORMAT}' "
                   f"version {VERSION} — {_HOW_TO_CREATE}")
    if attrs["format"] != FORMAT:
        raise fail(f"format is {attrs['format']!r}; expected {FORMAT!r} — {_HOW_TO_CREATE}")
    if attrs.get("version") != VERSION:
        raise fail(f"recon-views version {attrs.get('version')!r}; this reader understands version {VERSION}")
    values: dict[str, object] = {}
    for name, default in asdict(ViewsLayout()).items():
        if name not in attrs:
            raise fail(f"attribute {name!r} is missing; expected a {type(default).__name__}")
        try:
            values[name] = type(default)(attrs[name])
        except (TypeError, ValueError):
            raise fail(f"attribute {name!r} is {attrs[name]!r}; expected a {type(default).__name__}") from None
    layout = ViewsLayout(**values)  # type: ignore[arg-type]
    if layout.num_views < MIN_VIEWS:
        raise fail(f"attribute 'num_views' is {layout.num_views}; recon trains on pairs of views of an object, so a "
                   f"file needs at least {MIN_VIEWS} views per object")
    if not 1 <= layout.voxel_size <= MAX_VOXEL_SIZE:
        raise fail(f"attribute 'voxel_size' is {layout.voxel_size}; recon's voxelizer scores IoU on grids of 1 to "
                   f"{MAX_VOXEL_SIZE} voxels a side (the dataset's are 32)")

    if "categories" not in file or not isinstance(file["categories"], h5py.Dataset):
        raise fail("dataset '/categories' is missing; expected bytes synset ids with attribute 'names'")
    synsets = [_plain(s) for s in file["categories"][()].tolist()]
    names = _plain(file["categories"].attrs.get("names", np.array([])))
    if not isinstance(names, list) or len(names) != len(synsets) or not synsets:
        raise fail(f"'/categories' has {len(synsets)} synsets but attribute 'names' is {names!r}; "
                   "expected one name per synset")
    categories = tuple(Category(str(s), str(n)) for s, n in zip(synsets, names, strict=True))

    split_sizes: dict[str, int] = {}
    for split in SPLITS:
        if split in file:
            split_sizes[split] = _validate_split(path, file[split], split, layout, len(categories))
    if not split_sizes:
        raise fail(f"no split groups; expected at least one of {list(SPLITS)}")
    return ViewsFileInfo(path, layout, categories, split_sizes, attrs)


def _validate_split(path: Path, group: h5py.Group, split: str, layout: ViewsLayout, num_categories: int) -> int:
    s, r = layout.image_size, layout.voxel_size
    expected = {
        "images": ((layout.num_views, 4, s, s), np.dtype(np.uint8)),
        "voxels": ((r, r, r), np.dtype(bool)),
        "category": ((), None),
        "object_id": ((), None),
    }
    count: int | None = None
    for name, (tail, dtype) in expected.items():
        where = f"/{split}/{name}"
        if name not in group or not isinstance(group[name], h5py.Dataset):
            raise ViewsFormatError(f"{path}: dataset {where} is missing")
        shape = group[name].shape
        if len(shape) != 1 + len(tail) or shape[1:] != tail:
            raise ViewsFormatError(f"{path}: {where} has shape {shape}; expected (N, {', '.join(map(str, tail))})"
                                   if tail else f"{path}: {where} has shape {shape}; expected (N,)")
        if dtype is not None and group[name].dtype != dtype:
            raise ViewsFormatError(f"{path}: {where} has dtype {group[name].dtype}; expected {dtype}")
        if count is not None and shape[0] != count:
            raise ViewsFormatError(f"{path}: /{split} holds {count} images but {shape[0]} entries in {where}")
        count = shape[0]
    category = group["category"][()]
    if category.dtype.kind not in "iu":
        raise ViewsFormatError(f"{path}: /{split}/category has dtype {category.dtype}; expected int16")
    if category.size and (category.min() < 0 or category.max() >= num_categories):
        raise ViewsFormatError(f"{path}: /{split}/category has values outside [0, {num_categories})")
    assert count is not None
    return count


class ViewsWriter:
    """Write a recon-views v1 file atomically: everything goes to a hidden temporary file next to
    ``path`` that is renamed onto ``path`` only when the ``with`` block ends without an exception
    (an error or Ctrl-C removes it, and a killed process leaves only the hidden temporary file).
    Entering the block removes such leftovers of earlier writers to ``path`` whose process is gone
    (``remove_stale_temporaries``); a live writer's file is never touched.

    ``append(split, images (n, V, 4, S, S) uint8, voxels (n, R, R, R) bool, category (n,) int,
    object_ids n str)`` grows the split's datasets.
    """

    def __init__(self, path: str | os.PathLike[str], categories: Sequence[Category], source: str,
                 layout: ViewsLayout = ViewsLayout(), attributes: Mapping[str, str | int | float] | None = None,
                 compression_level: int = 4) -> None:
        self.path = Path(path)
        self.categories = tuple(categories)
        self.layout = layout
        self._attributes = {"source": source, **(attributes or {})}
        self._level = compression_level
        self._temp = atomic.temporary_path(self.path)
        self._file: h5py.File | None = None
        self._reached = 0  # bytes the temporary file held when it was given up
        self._datasets: dict[str, dict[str, h5py.Dataset]] = {}

    def __enter__(self) -> ViewsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        try:  # an error or Ctrl-C in here skips __exit__: clean up the same way
            # h5py writes no object timestamps by default: the same content gives the same bytes.
            self._file = h5py.File(self._temp, "w")
            self._file.attrs.update({"format": FORMAT, "version": VERSION, **asdict(self.layout),
                                     **self._attributes})
            # UTF-8: a category or object named after its folder or file may be any name (``café``, ``Stühle``).
            table = self._file.create_dataset("categories", data=np.array([c.synset for c in self.categories], object),
                                              dtype=h5py.string_dtype("utf-8"))
            table.attrs["names"] = [c.name for c in self.categories]
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def create_split(self, split: str) -> None:
        """Create ``split``'s empty datasets (a split with no objects is still a valid, listed split)."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r}; expected one of {list(SPLITS)}")
        file = self._require_open()
        if split in file:
            return
        group = file.create_group(split)
        v, s, r = self.layout.num_views, self.layout.image_size, self.layout.voxel_size
        gzip = {"compression": "gzip", "compression_opts": self._level}
        # Held open until the file closes: a dataset object dropped after each append would flush its chunk
        # cache as it is freed, where a failed write (a full disk) is only printed, never raised.
        self._datasets[split] = {
            "images": group.create_dataset("images", (0, v, 4, s, s), np.uint8, maxshape=(None, v, 4, s, s),
                                           chunks=(1, 1, 4, s, s), **gzip),
            "voxels": group.create_dataset("voxels", (0, r, r, r), bool, maxshape=(None, r, r, r),
                                           chunks=(1, r, r, r), **gzip),
            "category": group.create_dataset("category", (0,), np.int16, maxshape=(None,), chunks=(4096,)),
            "object_id": group.create_dataset("object_id", (0,), h5py.string_dtype("utf-8"), maxshape=(None,),
                                              chunks=(4096,)),
        }

    def append(self, split: str, images: np.ndarray, voxels: np.ndarray, category: np.ndarray | Sequence[int],
               object_ids: Sequence[str]) -> None:
        """Append ``n`` objects to ``split`` (created on first use)."""
        raise_if_interrupted()
        self.create_split(split)
        group = self._datasets[split]
        category = np.asarray(category)
        n = len(images)
        checks = {"images": (images, group["images"]), "voxels": (voxels, group["voxels"])}
        for name, (array, dataset) in checks.items():
            if array.shape[1:] != dataset.shape[1:] or array.dtype != dataset.dtype or len(array) != n:
                raise ValueError(f"{name} of shape {array.shape} {array.dtype}; expected ({n}, "
                                 f"{', '.join(map(str, dataset.shape[1:]))}) {dataset.dtype}")
        if category.shape != (n,) or len(object_ids) != n:
            raise ValueError(f"{n} objects but {category.shape} categories and {len(object_ids)} object ids")
        if n and (category.min() < 0 or category.max() >= len(self.categories)):
            raise ValueError(f"category indices outside [0, {len(self.categories)})")
        start = group["images"].shape[0]
        for name, data in (("images", images), ("voxels", voxels), ("category", category.astype(np.int16)),
                           ("object_id", np.array(object_ids, dtype=object))):
            group[name].resize(start + n, axis=0)
            group[name][start:] = data

    def _require_open(self) -> h5py.File:
        if self._file is None:
            raise RuntimeError("ViewsWriter is used outside its `with` block")
        return self._file

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        file, self._file = self._file, None
        try:
            if file is not None and kind is None:
                try:
                    file.flush()  # what close would write: a full disk fails here, with the file still open
                except BaseException as failure:
                    self._discard(file)
                    self._raise_if_disk_full(failure)
                    raise
                self._datasets.clear()
                file.close()
            elif file is not None:
                self._discard(file)
            if kind is None:
                raise_if_interrupted()  # Ctrl-C during the last append: never publish the file
                os.replace(self._temp, self.path)
        finally:
            if self._temp.exists():
                self._temp.unlink()
        self._raise_if_disk_full(error)

    def _discard(self, file: h5py.File) -> None:
        """Close a file that will not be published. It is emptied first: HDF5 flushes its caches on close, and
        on a full disk those writes fail over and over (a screenful of errors per object, then a crash at exit)."""
        self._reached = max(self._reached, self._temp.stat().st_size if self._temp.exists() else 0)
        with contextlib.suppress(OSError):
            os.truncate(self._temp, 0)
        self._datasets.clear()
        with contextlib.suppress(Exception):
            file.close()

    def _raise_if_disk_full(self, error: BaseException | None) -> None:
        cause = disk_full_cause(error)
        if cause is not None:
            kept = f"the existing {self.path.name} is unchanged" if self.path.exists() else "no output file was written"
            if self._reached >= 2**20:
                kept += f" (the unfinished file had reached {human_size(self._reached)})"
            raise disk_full_error(self.path, cause, kept) from error


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of ``path`` left by writers that were killed (their process is gone), logging
    one line each; returns them. Files of running processes are kept (:mod:`recon.atomic`)."""
    path = Path(path)
    removed = atomic.remove_stale_temporaries(path.parent, path.name)
    for temp in removed:
        log.warning("removed %s, left by a writer that is no longer running", temp)
    return removed
