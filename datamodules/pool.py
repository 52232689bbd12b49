"""Worker processes that never outlive their parent, for the dataset renderers.

``map_jobs`` spreads jobs over spawned processes (``concurrent.futures.ProcessPoolExecutor``) with a bounded
number in flight. A killed parent (SIGKILL included) must not leave workers behind: they would sit forever
on their task pipe, whose write end they themselves hold, each with hundreds of MB of torch. So every
worker, before anything else:

- asks Linux to send it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, via ctypes), and
- runs a watchdog thread that exits the process once its parent process id changes (re-parenting),
  the portable fallback where prctl is missing.

Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the parent alone decides (it stops the
pool). When the consumer of ``map_jobs`` stops early — an error, Ctrl-C, a SIGTERM handled as an
exception — the workers are killed at once instead of finishing their current objects.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 0.5  # how often the watchdog looks at the parent id: the exit delay of the fallback


def default_workers() -> int:
    """The CPU cores this process may use (at most 8)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, usable))


def die_with_parent(parent: int) -> None:
    """Make this process exit when process ``parent`` (its parent) dies, however it dies."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still covers it
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _start_worker(parent: int, initializer: Callable[..., None] | None, initargs: Sequence[Any]) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def map_jobs(function: Callable[[Job], Result], jobs: Iterable[Job], workers: int,
             initializer: Callable[..., None] | None = None, initargs: Sequence[Any] = (),
             ordered: bool = True, in_flight: int | None = None) -> Iterator[Result]:
    """``function(job)`` for every job, as a generator.

    ``workers`` ≤ 1 runs in this process (after ``initializer(*initargs)``); otherwise in ``workers`` spawned
    processes, each started with ``initializer``, with at most ``in_flight`` (default 4 per worker) jobs
    submitted and not yet consumed, so results wait in memory only until the consumer takes them.
    ``ordered``: results in job order; else in completion order. Closing the generator (or an exception in
    the consumer) kills the workers.
    """
    queue = iter(jobs)
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(function, queue)
        return
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools exist
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(os.getpid(), initializer, tuple(initargs)))
    pending: deque[Future[Result]] = deque()
    finished = False
    try:
        pending.extend(pool.submit(function, job) for job in itertools.islice(queue, in_flight or 4 * workers))
        while pending:
            if ordered:
                future = pending.popleft()
            else:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                future = next(f for f in pending if f in done)
                pending.remove(future)
            result = future.result()
            pending.extend(pool.submit(function, job) for job in itertools.islice(queue, 1))
            yield result
        finished = True
    finally:
        for future in pending:
            future.cancel()
        if not finished:
            _kill_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the workers now: their current objects are of no use once the consumer has stopped."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
