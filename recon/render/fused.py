"""Fused window kernels: the per-chunk cell work of the silhouette compiled by ``torch.compile``, or eager.

The silhouette kernel (:mod:`recon.render.silhouette`) evaluates each chunk of culling's windows with a few dozen
elementwise tensor operations, each reading and writing every cell. Compiled by inductor (C++/OpenMP on CPU,
Triton on CUDA) they become a few loops that keep each cell in registers: the same arithmetic, fewer passes over
memory and far fewer dispatched operations. Shapes are compiled dynamic (the chunk's face count and window
size are symbols), so chunks of every size share a handful of compiled variants; σ and the culling threshold
are arguments, so a new σ does not recompile; a new dtype (float64) or device does.

Switch: ``RECON_FUSED=1`` uses the compiled kernels where compilation works; unset or ``RECON_FUSED=0`` (the
default) keeps the eager ones. Off by default because, measured on a 2-core CPU, the compiled kernels make a
whole silhouette call only 1.1–1.4× faster while the first call in every process compiles for ~25 s with an
empty cache and ~9 s with a warm one; they are exact either way (tests/test_fused.py). Inductor caches its
output under ``TORCHINDUCTOR_CACHE_DIR`` (left at torch's default, ``/tmp/torchinductor_<user>``). If compiling
or running the compiled code fails (no C++ compiler, no Triton, an inductor error) the process logs one warning
and uses the eager kernels from then on; nothing is raised.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import torch

from recon.render.cells import WindowSlice

log = logging.getLogger(__name__)

T = TypeVar("T")


class Kernels(NamedTuple):
    """The per-chunk functions of one rasterization path, eager or compiled; each takes a
    :class:`recon.render.culling.WindowSlice` first."""

    values: Callable[..., torch.Tensor]
    face_gradients: Callable[..., torch.Tensor]


_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}
_failed: list[str] = []  # the reason fused kernels were given up in this process, once set
compiled_calls: Counter[str] = Counter()  # per kernel name: chunks the compiled version evaluated (tests read it)


def compile_kernel(fn: Callable[..., T]) -> Callable[..., T]:
    """``torch.compile`` of one per-chunk function: dynamic shapes, one graph (a graph break is a failure).

    Sizes get one symbol each (no duck shaping): a chunk whose face count happens to equal its window width
    must not specialise, or every new coincidence of sizes would compile again.
    """
    compiled = torch.compile(fn, dynamic=True, fullgraph=True)

    def call(window: WindowSlice, *args: Any) -> T:
        # Size 0 and 1 always specialise in torch.compile: a chunk of one face, one row or one column would
        # compile its own variants (up to 8 per kernel, torch's recompile limit). They are rare and small: eager.
        if min(window.x0.shape[0], window.cols.shape[0], window.rows.shape[0]) < 2:
            return fn(window, *args)
        with torch.fx.experimental._config.patch(use_duck_shape=False):
            out = compiled(window, *args)
        compiled_calls[fn.__name__] += 1
        return out

    return call


def fused_enabled() -> bool:
    """Whether the next call tries the compiled kernels: only with ``RECON_FUSED=1``, not after a failure, and
    not while an outer ``torch.compile`` traces the caller (it compiles the eager kernels itself)."""
    if os.environ.get("RECON_FUSED", "0").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    return not _failed and not torch.compiler.is_compiling()


def run(work: Callable[..., T], eager: Kernels, *args: Any) -> T:
    """``work(*args, kernels=...)`` with the compiled kernels when :func:`fused_enabled`, else the eager ones.

    A failure of the compiled kernels (compilation or run) is logged once and the work is redone eagerly;
    ``work`` must therefore not mutate its arguments.
    """
    if not fused_enabled():
        return work(*args, kernels=eager)
    try:
        kernels = Kernels(*(_compiled.get(fn) or _compiled.setdefault(fn, compile_kernel(fn)) for fn in eager))
        return work(*args, kernels=kernels)
    except Exception as error:  # noqa: BLE001 (any failure of the compiler stack means: use the eager path)
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"
        _failed.append(reason)
        log.warning("fused rasterizer kernels unavailable, using the eager path (%s)", reason)
        return work(*args, kernels=eager)
