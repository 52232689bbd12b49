"""Where a study lives: Optuna's journal file (the default, in the sweep folder) or an RDB such as PostgreSQL.

A journal file (``runs/sweeps/<name>/study.journal``, or any path given as ``--sweep.storage``) is an
append-only log guarded by a lock file: several processes on one machine, or on machines that share a
filesystem, can write one study. A URL with a scheme (``postgresql://user:pass@host/db``,
``mysql://...``, ``sqlite:///file.db``) is an RDB; there Optuna's heartbeat also fails the running trials
of a machine that died and queues each once more.
"""

from __future__ import annotations

import json
from pathlib import Path

from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from recon.atomic import file_path_problem

JOURNAL = "study.journal"
HEARTBEAT_SECONDS = 60  # an RDB trial whose process has sent nothing for GRACE_SECONDS is failed and retried
GRACE_SECONDS = 180


def storage_url(storage: str | None, folder: Path) -> str:
    """The storage as every process of the sweep names it: an RDB URL as given, a journal file as an absolute path."""
    if storage is None:
        return str((folder / JOURNAL).resolve())
    return storage if is_rdb(storage) else str(Path(storage).expanduser().resolve())


def journal_problem(path: Path) -> str | None:
    """Why a journal file cannot be at ``path`` (a folder there, or no folder to hold it), or None."""
    if problem := file_path_problem(path, "journal file", JOURNAL):
        return problem
    if not path.parent.is_dir():
        return f"{path}: the journal file's folder {path.parent} does not exist; create it, or name another file"
    if problem := not_a_journal(path):
        return f"{problem}; name a new file, or a sweep's {JOURNAL}"
    return None


def not_a_journal(path: Path) -> str | None:
    """Why the file at ``path`` is not an Optuna journal (its first line is no journal record), or None (a
    journal, or no file or an empty one yet)."""
    try:
        with open(path, "rb") as file:
            first = file.readline(1 << 20)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as error:
        return f"{path}: cannot be read ({error.strerror})"
    if not first or (not first.endswith(b"\n") and first.startswith(b'{"op_code"')):
        return None  # empty, or its first record still being written by another process
    try:
        record = json.loads(first)
    except ValueError:  # not UTF-8 (an HDF5 file, a checkpoint) or not JSON
        record = None
    if not (isinstance(record, dict) and "op_code" in record):
        return f"{path}: not an Optuna journal file (its first line is not a journal record)"
    return None


def rdb_error(url: str, error: Exception) -> str:
    """One line for an RDB the sweep cannot open (``error``: an ImportError or SQLAlchemy's): a driver that is not
    installed, a mistyped scheme, a server that does not answer. The URL's password is not shown."""
    try:
        from sqlalchemy.engine import make_url

        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 — a URL SQLAlchemy cannot even parse is shown without its credentials
        shown = url.split("://", 1)[0] + "://…"
    reason = (str(error).strip().splitlines() or [""])[0]
    if isinstance(error, ImportError) or "Can't load plugin" in reason:
        hint = ("its driver is not installed (PostgreSQL: pip install psycopg2-binary; MySQL: pip install pymysql) "
                "or the scheme is mistyped")
    else:
        hint = "check the server (for SQLite, the file's folder), the database name and the credentials"
    return f"--sweep.storage {shown}: cannot open it ({type(error).__name__}: {reason}); {hint}"


def is_rdb(url: str) -> bool:
    return "://" in url


def open_storage(url: str, heartbeat: bool = False) -> BaseStorage:
    """Open the study's storage. ``heartbeat`` (the sweep's own process): an RDB gets Optuna's heartbeat, so
    a trial left running by a dead machine is failed and retried once."""
    if is_rdb(url):
        if not heartbeat:
            return RDBStorage(url)
        return RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    problem = journal_problem(Path(url))
    if problem:
        raise FileNotFoundError(problem)
    return JournalStorage(JournalFileBackend(url))
