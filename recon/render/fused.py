"""Which rasterization kernels run: numba's compiled CPU kernels, inductor's compiled window kernels, or eager.

``RECON_FUSED`` chooses, read at every call:

- unset, ``auto`` or ``1`` (the default): on CPU, the numba kernels of :mod:`recon.render.numba_path` for the
  silhouette and the 'softmax' RGBA path (the whole call in two compiled loops, a few dozen dispatched
  operations instead of thousands) and for the renderer's lighting (:mod:`recon.render.cpu_lighting`);
  elsewhere (CUDA) and for 'hard' aggregation, the eager kernels.
- ``0`` (or ``eager``, ``off``): the eager kernels everywhere. They are the reference the compiled ones are
  tested against.
- ``triton``: on CUDA, the silhouette and the 'softmax' RGBA render on the Triton kernels of
  :mod:`recon.render.triton_path` (a call is a few dozen launches instead of ~1,500; with ``TRITON_INTERPRET=1``
  they also serve CPU tensors, interpreted, which is how they are tested); everything else as ``auto``. Opt-in:
  they have not run on a GPU yet.
- ``inductor``: the silhouette's per-chunk window work compiled by ``torch.compile`` (C++/OpenMP on CPU, Triton on
  CUDA), dynamic shapes so chunks of every size share a few variants. Opt-in: on a 2-core CPU it made a call only
  1.1–1.4× faster and compiles for 25–36 s with an empty cache (8–9 s warm), under ``TORCHINDUCTOR_CACHE_DIR``.

numba needs no compiler (LLVM comes in its wheel); it compiles each kernel on first use for each dtype and caches
the machine code on disk (``__pycache__`` beside :mod:`recon.render.cpu_kernels`, or ``NUMBA_CACHE_DIR``), so the
first call in a fresh environment takes 4–10 s and later processes load it in 0.5–0.9 s. When
numba is missing or a kernel fails to compile (or Triton or inductor fails, when chosen), the process logs one
warning and uses the eager kernels from then on; nothing is raised.
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


def mode() -> str:
    """``RECON_FUSED`` read now: 'auto', 'eager', 'triton' or 'inductor'. An unknown value means 'auto', with a
    warning."""
    value = os.environ.get("RECON_FUSED", "").strip().lower()
    if value in ("0", "eager", "off", "false", "no"):
        return "eager"
    if value in ("inductor", "triton"):
        return value
    if value not in ("", "auto", "1", "on", "true", "yes", "numba") and value not in _warned_values:
        _warned_values.add(value)
        log.warning("RECON_FUSED=%s is not one of auto, 0, triton, inductor: using auto", value)
    return "auto"


_warned_values: set[str] = set()


def fused_enabled() -> bool:
    """Whether the silhouette's eager window kernels are swapped for inductor's: only with
    ``RECON_FUSED=inductor``, not after a failure, and not while an outer ``torch.compile`` traces the caller
    (it compiles the eager kernels itself)."""
    return mode() == "inductor" and not _failed and not torch.compiler.is_compiling()


_numba_ready: dict[tuple[str, str], bool] = {}  # (path, dtype) → the numba kernels compiled and ran
_numba_failed: list[str] = []  # the reason numba kernels were given up in this process, once set
numba_calls: Counter[str] = Counter()  # per path: calls the numba kernels served (tests read it)


def numba_kernels(path: str, face_vertices: torch.Tensor) -> bool:
    """Whether this call of ``path`` ('silhouette', 'rgba', 'rgba-face' for one colour per face, or 'lighting') runs
    on the numba CPU kernels: CPU tensors of float32/float64, not empty, ``RECON_FUSED`` auto (or triton, whose
    kernels leave CPU tensors to numba's unless interpreted), numba usable. The first time for a path and dtype, the
    kernels compile (or load from the disk cache) and run on a tiny mesh, forward and backward; any failure is
    logged once and the eager path serves every later call."""
    if face_vertices.device.type != "cpu" or face_vertices.dtype not in (torch.float32, torch.float64):
        return False
    if not face_vertices.numel():  # no image or no face: the eager path serves, with nothing to compile
        return False
    if _numba_failed or mode() not in ("auto", "triton") or torch.compiler.is_compiling():
        return False
    def warm_up() -> None:
        from recon.render.numba_path import warm_up

        warm_up(path, face_vertices.dtype)

    key = (path, str(face_vertices.dtype))
    return _usable(key, _numba_ready, _numba_failed, numba_calls, path, warm_up, "numba", "the eager path")


_triton_ready: dict[tuple[str, ...], bool] = {}  # (path, device type, dtype) → the Triton kernels compiled and ran
_triton_failed: list[str] = []  # the reason the Triton kernels were given up in this process, once set
triton_calls: Counter[str] = Counter()  # per path: calls the Triton kernels served (tests read it)


def triton_kernels(path: str, face_vertices: torch.Tensor) -> bool:
    """Whether this call of ``path`` ('silhouette' or 'rgba') runs on the Triton kernels: ``RECON_FUSED=triton``,
    float32/float64 CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``), not empty, Triton usable. The first
    time for a path, device type and dtype, the kernels compile and run on one face, forward and backward; any
    failure is logged once and the other paths serve every later call."""
    if mode() != "triton" or _triton_failed or torch.compiler.is_compiling():
        return False
    if face_vertices.dtype not in (torch.float32, torch.float64) or not face_vertices.numel():
        return False
    from recon.render.triton_path import interpreted

    device = face_vertices.device
    if not (device.type == "cuda" or (device.type == "cpu" and interpreted())):
        return False
    def warm_up() -> None:
        from recon.render.triton_path import warm_up

        warm_up(path, face_vertices.dtype, device)

    key = (path, device.type, str(face_vertices.dtype))
    return _usable(key, _triton_ready, _triton_failed, triton_calls, path, warm_up, "Triton", "the other paths")


def _usable(key: tuple[str, ...], ready: dict[tuple[str, ...], bool], failed: list[str], calls: Counter[str],
            path: str, warm_up: Callable[[], None], name: str, instead: str) -> bool:
    """True, counting the call, once ``warm_up`` has run for ``key`` (it runs the first time); a failure is kept in
    ``failed`` (which turns the kernels off for the process), logged once, and answers False. Any exception counts:
    a missing package, no compiler or cache directory, a compile error, a wrong result."""
    if key not in ready:
        try:
            warm_up()
            ready[key] = True
        except Exception as error:  # noqa: BLE001 (whatever failed, another path serves)
            failed.append(_reason(error))
            log.warning("%s rasterizer kernels unavailable, using %s (%s)", name, instead, failed[0])
            return False
    calls[path] += 1
    return True


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"


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
        reason = _reason(error)
        _failed.append(reason)
        log.warning("inductor rasterizer kernels unavailable, using the eager path (%s)", reason)
        return work(*args, kernels=eager)
