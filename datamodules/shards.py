"""The resumable half of ``recon-data render``: one small file per finished object in ``OUT.h5.partial/``.

Rendering a large collection takes hours, so every object's result (or the reason it was skipped) is kept
as soon as it is made, in its own ``NNNNNNN.npz`` written to a temporary name and renamed: a kill at any
moment leaves only whole shards. ``run.json`` records what the shards were made from (settings and the
list of objects); a resumed run must match it, so shards of different runs never mix. When every object
has a shard, the final file is assembled from them in object order, so a resumed run writes the same file
as an uninterrupted one. A shard that cannot be read back (cut short by a full disk, a copy, a flipped bit) is
removed, so that its object is rendered again: by a resumed run at once, or by the next ``--resume`` when the
damage shows only while assembling.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from recon.atomic import atomic_write, remove_stale_temporaries

RUN_RECORD = "run.json"
# What numpy and zipfile raise for a shard that is cut short or damaged (a .npy where an .npz belongs: TypeError)
SHARD_DAMAGE: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, TypeError)


def plural(count: int, noun: str) -> str:
    """``1 object``, ``3 objects``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


class DamagedShard(ValueError):
    """A shard file that cannot be read back; the message names it and says what failed."""


class Shard(NamedTuple):
    """One object's result: images/voxels and colour kind, or ``reason`` (why it was skipped) and no arrays;
    ``clipped``: its vertices were clamped into the voxel cube (``--normalize none --clip``)."""

    object_id: str
    images: np.ndarray | None
    voxels: np.ndarray | None
    colors: str
    reason: str
    clipped: bool = False


def partial_folder(out: str | os.PathLike[str]) -> Path:
    """``OUT.h5`` → ``OUT.h5.partial``, the shard folder next to the output."""
    out = Path(out)
    return out.parent / f"{out.name}.partial"


# what a run record's keys stand for, in the message of a --resume that does not match
CHANGES = {"objects_sha256": "the objects (their ids, files, categories or splits)", "objects": "the object count",
           "root": "the source", "collection": "the kind of source"}


class ShardStore:
    """The shard folder of one run; ``open`` starts it, or resumes it when its ``run.json`` matches ``record``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def open(self, record: dict, resume: bool, overwrite: bool, notice: Callable[[str], None] | None = None) -> int:
        """Create or reuse the folder; returns the number of finished shards. Raises ``FileExistsError``
        when shards exist and neither ``resume`` nor ``overwrite`` is given, ``ValueError`` when ``resume``
        finds shards of another run. Resuming removes the shards that cannot be read, so that their objects
        are rendered again, and says so in one line to ``notice``."""
        if self.folder.exists() and overwrite and not resume:  # --resume --overwrite: continue, then replace OUT
            shutil.rmtree(self.folder)
        if self.folder.exists():
            if not resume:
                raise FileExistsError(f"{self.folder}: an interrupted run's {plural(self.count(), 'finished object')}"
                                      "; pass --resume to continue it or --overwrite to start over")
            try:
                previous = json.loads((self.folder / RUN_RECORD).read_text())
            except (OSError, ValueError):
                previous = None
            if previous != json.loads(json.dumps(record)):
                changed = [CHANGES.get(k, k) for k in sorted(record) if not previous or previous.get(k) != record[k]]
                raise ValueError(f"{self.folder}: made by a run with other settings or objects (differs in "
                                 f"{', '.join(changed)}); rerun with the same options, or pass --overwrite to start "
                                 "over")
            remove_stale_temporaries(self.folder)  # left by workers killed mid-write
            damaged = [path for path in sorted(self.folder.glob("*.npz")) if not self._readable(path)]
            for path in damaged:
                path.unlink(missing_ok=True)
            if damaged and notice is not None:
                names = ", ".join(path.name for path in damaged[:3]) + (" ..." if len(damaged) > 3 else "")
                notice(f"--resume: removed {plural(len(damaged), 'damaged shard')} ({names}) in {self.folder}; "
                       f"{'its object is' if len(damaged) == 1 else 'their objects are'} rendered again")
            return self.count()
        self.folder.mkdir(parents=True)
        self._write_bytes(self.folder / RUN_RECORD, json.dumps(record, indent=1, sort_keys=True).encode())
        return 0

    def count(self) -> int:
        return sum(1 for _ in self.folder.glob("*.npz"))

    def path(self, index: int) -> Path:
        return self.folder / f"{index:07d}.npz"

    def done(self, index: int) -> bool:
        return self.path(index).is_file()

    def write(self, index: int, shard: Shard) -> None:
        """Keep object ``index``'s shard (atomically: temporary file, then rename)."""
        arrays = {"object_id": np.array(shard.object_id), "colors": np.array(shard.colors),
                  "reason": np.array(shard.reason), "clipped": np.array(shard.clipped)}
        if shard.images is not None and shard.voxels is not None:
            arrays |= {"images": shard.images, "voxels": shard.voxels}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        self._write_bytes(self.path(index), buffer.getvalue())

    def read(self, index: int) -> Shard:
        """Object ``index``'s shard; raises ``DamagedShard`` when its file cannot be read back."""
        try:
            with np.load(self.path(index)) as data:
                images = data["images"] if "images" in data else None
                voxels = data["voxels"] if "voxels" in data else None
                return Shard(str(data["object_id"]), images, voxels, str(data["colors"]), str(data["reason"]),
                             bool(data["clipped"]))
        except SHARD_DAMAGE as error:
            raise _damaged(self.path(index), error) from error

    def outcome(self, index: int) -> tuple[str, str, bool]:
        """(colour kind, skip reason, clipped) of object ``index``, without inflating its arrays; raises
        ``DamagedShard`` when its file cannot be read back."""
        try:
            return self._outcome(self.path(index))
        except SHARD_DAMAGE as error:
            raise _damaged(self.path(index), error) from error

    def discard(self, index: int) -> None:
        """Remove object ``index``'s shard (a damaged one), so that ``--resume`` renders the object again."""
        self.path(index).unlink(missing_ok=True)

    @staticmethod
    def _outcome(path: Path) -> tuple[str, str, bool]:
        with np.load(path) as data:
            return str(data["colors"]), str(data["reason"]), bool(data["clipped"])

    @classmethod
    def _readable(cls, path: Path) -> bool:
        """Whether the shard's outcome can be read (damage inside its arrays shows only when they are inflated)."""
        try:
            cls._outcome(path)
        except SHARD_DAMAGE:
            return False
        return True

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def _write_bytes(path: Path, data: bytes) -> None:
        with atomic_write(path, "wb") as file:
            file.write(data)


def _damaged(path: Path, error: Exception) -> DamagedShard:
    return DamagedShard(f"{path}: damaged shard, cannot be read back ({error or type(error).__name__})")
