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
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from recon.errors import UserError

Job = TypeVar("Job")
Result = TypeVar("Result")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATHS_IN_A_ROW = 3  # jobs that each kill their own worker process, one after the other, before map_jobs gives up
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


class WorkerDied(UserError, RuntimeError):
    """A worker process died (killed: the out-of-memory killer, a crash in native code) and ``map_jobs`` was
    given no ``died`` to turn its job into a result: one line, with how it died."""


def map_jobs(function: Callable[[Job], Result], jobs: Iterable[Job], workers: int,
             initializer: Callable[..., None] | None = None, initargs: Sequence[Any] = (),
             ordered: bool = True, in_flight: int | None = None,
             died: Callable[[Job, str], Result] | None = None) -> Iterator[Result]:
    """``function(job)`` for every job, as a generator.

    ``workers`` ≤ 1 runs in this process (after ``initializer(*initargs)``); otherwise in ``workers`` spawned
    processes, each started with ``initializer``, with at most ``in_flight`` (default 4 per worker) jobs
    submitted and not yet consumed, so results wait in memory only until the consumer takes them.
    ``ordered``: results in job order; else in completion order. Closing the generator (or an exception in
    the consumer) kills the workers.

    A worker that dies takes the pool with it, and which of the jobs in flight killed it is unknown: each of
    them is run again alone, in a process of its own (``workers`` such processes at a time), and one that kills
    that process too is the cause:
    ``died(job, why)`` is its result (``WorkerDied`` without ``died``). Then a new pool takes the other jobs.
    ``DEATHS_IN_A_ROW`` such jobs one after the other end it with ``WorkerDied``: workers that cannot live.
    """
    queue = iter(jobs)
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(function, queue)
        return
    deaths = 0  # in a row: a worker that cannot live at all (it fails to start) is not one object's doing
    while True:
        lost: list[Job] = []
        yield from _pooled(function, queue, workers, initializer, initargs, ordered, in_flight, lost)
        if not lost:
            return
        # each in a process of its own, `workers` at a time; taken in job order: an ordered map stays ordered
        outcomes = (outcome for start in range(0, len(lost), workers)
                    for outcome in _alone(function, lost[start:start + workers], initializer, initargs))
        for job, (result, why) in zip(lost, outcomes, strict=True):
            if why is None:
                deaths = 0
                yield result
                continue
            deaths += 1
            if died is None or deaths >= DEATHS_IN_A_ROW:
                several = f"{deaths} jobs in a row each killed" if deaths > 1 else "a job killed"
                raise WorkerDied(f"{several} its worker process ({why}); rerun with fewer --workers, or on a "
                                 "machine with more memory")
            yield died(job, why)


def _pooled(function: Callable[[Job], Result], queue: Iterator[Job], workers: int,
            initializer: Callable[..., None] | None, initargs: Sequence[Any], ordered: bool,
            in_flight: int | None, lost: list[Job]) -> Iterator[Result]:
    """``map_jobs`` on one pool, until ``queue`` is done or a worker dies: then the jobs in flight, in order, are
    put in ``lost`` and the generator ends."""
    pool = _pool(workers, initializer, initargs)
    pending: deque[Future[Result]] = deque()
    job_of: dict[Future[Result], Job] = {}
    unsent: list[Job] = []  # a job the broken pool refused

    def submit(count: int) -> None:
        for job in itertools.islice(queue, count):
            try:
                future = pool.submit(function, job)
            except BrokenProcessPool:
                unsent.append(job)
                raise
            job_of[future] = job
            pending.append(future)

    finished = False
    try:
        try:
            submit(in_flight or 4 * workers)
            while pending:
                if ordered:
                    future = pending[0]
                else:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    future = next(f for f in pending if f in done)
                result = future.result()
                pending.remove(future)
                del job_of[future]
                yield result
                submit(1)
        except BrokenProcessPool:  # (a finished job among those in flight is simply run again)
            lost.extend([*(job_of[f] for f in pending), *unsent])
        finished = True
    finally:
        for future in pending:
            future.cancel()
        if not finished:
            _kill_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _alone(function: Callable[[Job], Result], jobs: list[Job], initializer: Callable[..., None] | None,
           initargs: Sequence[Any]) -> list[tuple[Result | None, str | None]]:
    """For each job, ``(function(job), None)`` run in a process of its own (all at once), or ``(None, how it
    died)`` when it kills that process."""
    pools = [_pool(1, initializer, initargs) for _ in jobs]
    finished = False
    try:
        futures = [pool.submit(function, job) for pool, job in zip(pools, jobs, strict=True)]
        outcomes: list[tuple[Result | None, str | None]] = []
        for pool, future in zip(pools, futures, strict=True):
            try:
                outcomes.append((future.result(), None))
            except BrokenProcessPool:
                outcomes.append((None, _death(pool)))
        finished = True
        return outcomes
    finally:
        for pool in pools:
            if not finished:
                _kill_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)


def _pool(workers: int, initializer: Callable[..., None] | None, initargs: Sequence[Any]) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools exist
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(os.getpid(), initializer, tuple(initargs)))


def _death(pool: ProcessPoolExecutor) -> str:
    """How a broken pool's worker died, in words: ``killed by SIGKILL (out of memory?)``, ``exit status 3``."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    deadline = time.monotonic() + 5.0
    # The pool's own thread reaps them too, and of two waits for one process one may return before the other has
    # stored its exit status: look again until it is known
    while any(process.exitcode is None for process in processes) and time.monotonic() < deadline:
        time.sleep(0.02)
    codes = [process.exitcode for process in processes if process.exitcode not in (None, 0)]
    if not codes:
        return "it ended without a word"
    code = codes[0]
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"exit status {code}"


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the workers now: their current objects are of no use once the consumer has stopped."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
