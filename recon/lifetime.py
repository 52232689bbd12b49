"""A ``recon`` command started by another recon process (a sweep's trial, a table's run) never outlives it.

The parent names itself in the child's environment (``RECON_PARENT_PID``, :func:`child_env`); the child, as it
starts (:func:`stop_with_parent`), watches it. Once the parent is gone, however it ended (``kill -9`` included),
the child stops as SIGTERM stops it (a fit saves ``last.ckpt`` first and exits with status 143), rather than go on
unseen beside the runs of the command run next, which may well resume the very same run folder.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from recon.atomic import pid_alive

PARENT_PID = "RECON_PARENT_PID"
# how a recon command that was told to stop ends: the exit status of its own handling (130, 143), or the signal
STOPPED = {130: "Ctrl-C", 143: "SIGTERM", -signal.SIGINT: "Ctrl-C", -signal.SIGTERM: "SIGTERM"}
WATCH_SECONDS = 0.5  # how often a child looks whether its parent is still there
_watching = False


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child recon process that should stop when this process is gone."""
    return {**env, PARENT_PID: str(os.getpid())}


def stop_with_parent() -> None:
    """Watch the process ``RECON_PARENT_PID`` names, if it is this process's parent (or already gone), and send
    this process SIGTERM once it is gone. Nothing when the variable is unset, or names a live process that is not
    the parent (a multi-process run's other ranks, whose own parent stops them)."""
    global _watching
    value = os.environ.get(PARENT_PID, "")
    if _watching or not value.isdigit():
        return
    parent = int(value)
    if os.getppid() != parent and pid_alive(parent):
        return

    def watch() -> None:
        while os.getppid() == parent:  # a process whose parent died is handed to another
            time.sleep(WATCH_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    _watching = True
