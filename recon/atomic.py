"""Atomic file writes, the one way recon writes a file that must never be seen half-written.

A write goes to a hidden temporary file in the target's own folder, ``.<name>.tmp-<pid>``, is flushed and
fsynced, and is then renamed over the target. ``os.replace`` within one filesystem is atomic, so a reader
(or a resumed run) sees the old file or the new one, never a mix; a temporary file elsewhere (``$TMPDIR``
is often a tmpfs) would make the final move a copy over the old file, which a kill can truncate.

A killed writer leaves its temporary file behind; the pid in its name tells whether that writer still
lives, so :func:`remove_stale_temporaries` can clean up after dead processes only. Files written together are
staged the same way in a hidden folder, ``.<name>.tmp-<pid>/``, and moved into place one after the other.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from recon.errors import disk_full_cause, disk_full_error, human_size

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def temporary_path(path: str | os.PathLike[str], pid: int | None = None) -> Path:
    """The hidden temporary file of ``path`` for process ``pid`` (default: this one), in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp-{os.getpid() if pid is None else pid}"


def file_above(path: str | os.PathLike[str]) -> Path | None:
    """The file standing where a folder above ``path`` should be (its nearest existing parent, when that is no
    folder), or None: nothing can be made at ``path`` then."""
    below = next((parent for parent in Path(path).parents if parent.exists()), None)
    return below if below is not None and not below.is_dir() else None


def file_path_problem(path: str | os.PathLike[str], what: str, example: str) -> str | None:
    """Why no file can be written at ``path`` (a folder stands there, or a file where a folder above it should
    be), or None: checked before a command does any work. ``what`` and ``example`` name the file in the message
    (``"output file"``, ``"data.h5"``)."""
    path = Path(path)
    if path.is_dir():
        return f"{path}: is a folder; give the {what}'s name, e.g. {path / example}"
    if (below := file_above(path)) is not None:
        return f"{path}: {below} is a file, not a folder, so nothing can be written below it"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_write(path) as file: ...`` writes ``path`` atomically (see the module docstring).

    The file gets the usual permissions (``0o666`` less the umask). On any exception, Ctrl-C included, the
    temporary file is removed and ``path`` is left as it was. The folder must exist. A write that runs out of
    room raises :class:`recon.errors.DiskFullError`, which names ``path``, the space left once the temporary
    file is gone, and that the previous file is kept.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write: mode {mode!r}; expected a write mode such as 'wb' or 'w'")
    path = Path(path)
    temporary = temporary_path(path)
    try:
        with open(temporary, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as error:
        reached = _size(temporary)
        temporary.unlink(missing_ok=True)
        cause = disk_full_cause(error)
        if cause is None:
            raise
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        if reached >= 2**20:
            kept += f" (the unfinished file had reached {human_size(reached)})"
        raise disk_full_error(path, cause, kept) from error


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w", encoding="utf-8") as file:
        file.write(text)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def stale_temporaries(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Temporary files in ``folder`` (of ``name`` only, if given) whose writing process no longer exists."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for path in sorted(folder.iterdir()):
        match = _TEMPORARY.match(path.name)
        if match and (name is None or match["name"] == name) and not pid_alive(int(match["pid"])):
            stale.append(path)
    return stale


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove :func:`stale_temporaries` of ``folder`` and return them (those of live processes stay)."""
    removed = []
    for path in stale_temporaries(folder, name):
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():  # files written together (a prediction's outputs)
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
