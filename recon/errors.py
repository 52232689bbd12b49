"""Errors a user can cause and fix, as opposed to bugs.

The ``recon`` and ``recon-data`` commands print a :class:`UserError` (and a missing or misplaced file) as one
line, ``recon <subcommand>: error: <message>``, and exit with status 1; anything else is a bug and keeps
its traceback. ``RECON_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class UserError(Exception):
    """Something the user can fix: a bad path, value or file. The message names it and what was expected."""


class ConfigError(UserError, ValueError):
    """A configuration value that recon refuses (the message names the value and the accepted range)."""


class DataFileError(UserError, ValueError):
    """A data file that cannot be read as expected (missing, truncated, corrupt, wrong layout)."""


class NonFiniteMeshError(UserError, FloatingPointError):
    """Predicted vertices that are NaN or infinite: training diverged (or the input was not finite)."""


class DiskFullError(UserError, OSError):
    """A write that ran out of room (no space left on the device, or the user's quota): the message names the
    file, the space left and what became of the file; nothing already written is lost."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def disk_full_cause(error: BaseException | None) -> OSError | None:
    """The "no space left" (or quota) ``OSError`` that ``error`` is, or was raised from or while handling (torch's
    zip writer reports a failed ``write`` as ``RuntimeError: … unexpected pos …``, the ``OSError`` its context).
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def disk_full_error(path: str | os.PathLike[str], cause: OSError, outcome: str) -> DiskFullError:
    """``PATH: no space left on device (N MiB free in FOLDER); OUTCOME``, to raise from ``cause``."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{human_size(shutil.disk_usage(folder).free)} free in {folder}"
    except OSError:
        free = f"free space in {folder} unknown"
    reason = "over the disk quota" if cause.errno == errno.EDQUOT else "no space left on device"
    error = DiskFullError(f"{path}: {reason} ({free}); {outcome}")
    error.errno = cause.errno
    return error


def human_size(size: int) -> str:
    """``311 MiB``, ``2.5 MiB``, ``12 KiB``: a size in bytes for a message."""
    mib = size / 2**20
    if mib >= 10:
        return f"{mib:,.0f} MiB"
    return f"{mib:.1f} MiB" if mib >= 0.1 else f"{size / 2**10:.0f} KiB"


def full_disk_message(cause: OSError) -> str:
    """One line for a full disk met outside recon's own writes: the file, if the error names one, and the space
    left there."""
    if cause.filename is None:
        reason = "over the disk quota" if cause.errno == errno.EDQUOT else "no space left on device"
        return f"{reason}; free some space and run the command again"
    return str(disk_full_error(cause.filename, cause, "free some space and run the command again"))


#: Built-in exceptions that, reaching the command line, mean a user's path was wrong rather than a bug.
PATH_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
)


def debug() -> bool:
    """Whether ``RECON_DEBUG`` asks for full tracebacks of user errors."""
    return os.environ.get("RECON_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
