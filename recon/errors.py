"""Errors a user can cause and fix, as opposed to bugs.

The ``recon`` and ``recon-data`` commands print a :class:`UserError` (and a missing or misplaced file) as one
line, ``recon <subcommand>: error: <message>``, and exit with status 1; anything else is a bug and keeps
its traceback. ``RECON_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import os


class UserError(Exception):
    """Something the user can fix: a bad path, value or file. The message names it and what was expected."""


class ConfigError(UserError, ValueError):
    """A configuration value that recon refuses (the message names the value and the accepted range)."""


class DataFileError(UserError, ValueError):
    """A data file that cannot be read as expected (missing, truncated, corrupt, wrong layout)."""


class NonFiniteMeshError(UserError, FloatingPointError):
    """Predicted vertices that are NaN or infinite: training diverged (or the input was not finite)."""


#: Built-in exceptions that, reaching the command line, mean a user's path was wrong rather than a bug.
PATH_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
)


def debug() -> bool:
    """Whether ``RECON_DEBUG`` asks for full tracebacks of user errors."""
    return os.environ.get("RECON_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
