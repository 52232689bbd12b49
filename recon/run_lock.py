"""One ``recon fit`` at a time per run folder.

Two fits writing one folder (``make train`` started twice, a rerun while the first still runs in the background)
overwrite each other's ``last.ckpt`` and ``best.ckpt``, so the folder's checkpoints belong to neither run. A fit
holds an exclusive ``flock`` on ``<run folder>/.fit.lock`` while it runs; a second fit there is refused in one
line naming the first one's process. The kernel drops the lock when the process ends, however it ends
(``kill -9`` included), so a lock is never stale. Evaluating a folder a fit is writing (``recon test`` of its
``best.ckpt`` so far) is allowed. Where ``flock`` is unavailable (not POSIX) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from recon.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".fit.lock"


@contextlib.contextmanager
def run_folder_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``folder``'s fit lock for the block; ``ConfigError`` when another process holds it."""
    if fcntl is None:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise ConfigError(f"{folder}: another recon fit (process {holder}) is training in this run folder; wait "
                              "for it or stop it, or give this run a folder of its own (--trainer.default_root_dir)"
                              ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
