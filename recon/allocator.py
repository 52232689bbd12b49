"""Keep freed memory in the process instead of handing it back to the kernel after every tensor.

PyTorch's CPU tensors come straight from the C library's ``malloc``. glibc serves blocks above a threshold
(128 KB at first, adapting upwards) with fresh ``mmap`` pages and returns free space at the top of the heap to
the kernel, so a loop that allocates and frees the same megabyte-sized temporaries touches new pages every time.
Each touch is a page fault; on virtual machines it costs microseconds. Measured on a 2-core VM for the soft
rasterizer's culling at batch 64: 6,400 page faults and 12.5 ms of kernel time per call against 7 ms of actual
work; with the thresholds below, 150 faults and 0.5 ms.

:func:`keep_freed_memory` raises both thresholds once per process (``mallopt``, glibc only). Freed blocks up to
``mmap_threshold`` then stay in the heap for reuse, at the cost of the process keeping up to ``trim_threshold`` of
free memory it no longer uses. The ``recon`` and ``recon-data synth`` commands and the benchmarks call it;
library users may call it themselves, or preload jemalloc/tcmalloc, which solve the same problem.
``RECON_KEEP_FREED_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2, 32 MiB on 64-bit systems.
_MAX_MMAP_THRESHOLD = 32 << 20

_done: bool | None = None


def keep_freed_memory(mmap_threshold: int = _MAX_MMAP_THRESHOLD, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds (bytes); True when the process now keeps freed memory.

    Both must be set together: fixing the trim threshold alone also fixes the mmap threshold at its initial
    128 KB, which makes every larger tensor a fresh mapping (measured: 5× slower culling). Does nothing, and
    returns False, on other C libraries or when ``RECON_KEEP_FREED_MEMORY=0``; a second call returns the first
    one's answer.
    """
    global _done
    if not 0 < mmap_threshold <= _MAX_MMAP_THRESHOLD:
        raise ValueError(f"mmap_threshold must be in (0, {_MAX_MMAP_THRESHOLD}] bytes, got {mmap_threshold}")
    if trim_threshold < mmap_threshold:
        raise ValueError(f"trim_threshold ({trim_threshold}) must be at least mmap_threshold ({mmap_threshold})")
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("RECON_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1)
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process."""
    return bool(_done)
