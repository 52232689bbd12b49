"""recon.allocator: glibc keeps freed memory, so the renderer's temporaries stop page-faulting afresh."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import re
import subprocess
import sys

import pytest

from recon.allocator import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# What glibc does with one 24 MiB tensor: mapped afresh (and unmapped when freed) by default; kept in the heap,
# and still there once freed, when recon.allocator has raised the thresholds. mallinfo2 reads glibc's counters.
_CHILD = r"""
import ctypes, ctypes.util, json, sys, torch
from recon.allocator import keep_freed_memory, keeps_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2()
x = torch.empty(6 << 20).fill_(1)
held = libc.mallinfo2()
del x
after = libc.mallinfo2()
print(json.dumps({"mapped_while_held": held.hblkhd - before.hblkhd, "heap_free_after": after.fordblks - before.fordblks,
                  "kept": keeps_freed_memory()}))
"""
MIB = 1 << 20


def _child(mode: str, **env: str) -> dict:
    base = {key: value for key, value in os.environ.items() if key != "RECON_KEEP_FREED_MEMORY"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, env={**base, **env}, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_mallinfo2() -> bool:
    try:
        return GLIBC and hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2")
    except OSError:
        return False


needs_glibc = pytest.mark.skipif(not _has_mallinfo2(), reason="mallopt and mallinfo2 are glibc's (2.33+)")


@needs_glibc
def test_freed_tensors_stay_in_the_heap() -> None:
    default, kept = _child("default"), _child("keep")
    assert not default["kept"] and kept["kept"]
    # By default a 24 MiB tensor is a fresh mapping, handed back when freed: its pages fault in again next time.
    assert default["mapped_while_held"] >= 24 * MIB and default["heap_free_after"] < MIB, default
    # Kept: it comes from the heap, and its memory stays there, free for the next tensor.
    assert kept["mapped_while_held"] == 0 and kept["heap_free_after"] >= 24 * MIB, kept


@needs_glibc
def test_environment_turns_it_off() -> None:
    off = _child("keep", RECON_KEEP_FREED_MEMORY="0")
    assert not off["kept"] and off["mapped_while_held"] >= 24 * MIB


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mmap_threshold": 64 << 20}, "mmap_threshold must be in (0, 33554432] bytes, got 67108864"),
        ({"mmap_threshold": 1 << 20, "trim_threshold": 1 << 10}, "trim_threshold (1024) must be at least"),
    ],
)
def test_thresholds_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        keep_freed_memory(**kwargs)


def test_second_call_returns_the_first_answer() -> None:
    assert keep_freed_memory() == keep_freed_memory()
