"""Jobs for ``map_jobs`` tests, in a module of their own: a spawned worker imports the module of the function it
runs, and this one imports nothing heavy."""

from __future__ import annotations

import os
import signal


def dies_on_three(job: int) -> int:
    """``10 * job``, except that job 3 kills its process (as the out-of-memory killer would)."""
    if job == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return 10 * job


def always_dies(job: int) -> int:
    """A worker that cannot live: every job kills its process."""
    os.kill(os.getpid(), signal.SIGKILL)
    return job
