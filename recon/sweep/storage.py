"""Where a study lives: Optuna's journal file (the default, in the sweep folder) or an RDB such as PostgreSQL.

A journal file (``runs/sweeps/<name>/study.journal``, or any path given as ``--sweep.storage``) is an
append-only log guarded by a lock file: several processes on one machine, or on machines that share a
filesystem, can write one study. A URL with a scheme (``postgresql://user:pass@host/db``,
``mysql://...``, ``sqlite:///file.db``) is an RDB; there Optuna's heartbeat also fails the running trials
of a machine that died and queues each once more.
"""

from __future__ import annotations

from pathlib import Path

from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

JOURNAL = "study.journal"
HEARTBEAT_SECONDS = 60  # an RDB trial whose process has sent nothing for GRACE_SECONDS is failed and retried
GRACE_SECONDS = 180


def storage_url(storage: str | None, folder: Path) -> str:
    """The storage as every process of the sweep names it: an RDB URL as given, a journal file as an absolute path."""
    if storage is None:
        return str((folder / JOURNAL).resolve())
    return storage if is_rdb(storage) else str(Path(storage).expanduser().resolve())


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
    path = Path(url)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the journal file's folder does not exist")
    return JournalStorage(JournalFileBackend(str(path)))
