"""Stopping ``recon-data`` cleanly: SIGINT and SIGTERM raise ``KeyboardInterrupt``, and one that Python
dropped is raised again at the writer's next step.

Python runs a signal handler between two bytecodes of whatever runs then, and after an HDF5 call that is
usually a finalizer (the weakref callback of h5py's object registry). An exception raised in a finalizer is
printed as "Exception ignored in ..." and dropped, so without this the work went on, finished and exited 0.
Re-raising from ``sys.unraisablehook`` does not help (the new exception lands in the hook, another
finalizer), so a dropped interrupt is remembered and ``raise_if_interrupted`` raises it where that is safe:
``ViewsWriter`` calls it before every append and before it renames its temporary file into place.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_dropped: list[int] = []  # signals whose KeyboardInterrupt a finalizer swallowed, not yet raised again


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` when a stop signal's interrupt was dropped by a finalizer."""
    if _dropped:
        _dropped.clear()
        raise KeyboardInterrupt


@contextmanager
def stop_signals_interrupt() -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread (a no-op in other
    threads, where handlers cannot be set); yields the list the received signal numbers are appended to."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    def remember_dropped(unraisable: sys.UnraisableHookArgs) -> None:
        if received and unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            _dropped.append(received[-1])  # silently: it is raised again by raise_if_interrupted
            return
        previous_hook(unraisable)

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    previous_hook, sys.unraisablehook = sys.unraisablehook, remember_dropped
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _dropped.clear()
