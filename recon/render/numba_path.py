"""The silhouette and the RGBA soft rasterizer on CPU through the numba kernels (:mod:`recon.render.cpu_kernels`).

Each call is one autograd function: a forward that plans nothing in PyTorch (per-face tables and culling
happen inside the kernels) and a backward that writes each face's gradients, evaluating the cells again: nothing
is saved per cell, only a few numbers per pixel.
Same values and gradients as the eager path, which stays the reference and the fallback
(:func:`recon.render.fused.numba_kernels` decides which runs). The renderer's lighting has its own autograd
function here (:class:`LitIntensity`) over :mod:`recon.render.cpu_lighting`.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recon.render.lighting import check_face_indices
from recon.render.settings import RasterSettings

_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool): a forked child makes its own


class _Buffers:
    """Reusable memory for the big per-call arrays (per-face tables: tens of MB at batch 64).

    Fresh arrays that large are fresh ``mmap`` pages on every call (glibc serves blocks above 32 MiB that way
    whatever ``recon.allocator`` sets), and each page faults in on first touch: measured ~15 ms a call on a
    2-core VM. A call takes its buffers here, and they come back when its plan is dropped: with the autograd graph
    that holds it (after the backward, unless the graph is retained), or at once for a call without gradients.
    """

    KEEP = 6

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        with self._lock:
            fits = [b for b in self._free if nbytes <= b.nbytes <= 2 * nbytes + (1 << 20)]
            raw = min(fits, key=lambda b: b.nbytes) if fits else None
            if raw is not None:
                self._free = [b for b in self._free if b is not raw]
        if raw is None:
            raw = np.empty(nbytes, dtype=np.uint8)
        return raw[:nbytes].view(dtype).reshape(shape)

    def give(self, *arrays: np.ndarray | None) -> None:
        with self._lock:
            for array in arrays:
                if array is not None:
                    self._free.append(array.base if array.base is not None else array)
            self._free = sorted(self._free, key=lambda b: b.nbytes)[-self.KEEP :]


_buffers = _Buffers()


def _kernels():
    from recon.render import cpu_kernels  # numba compiles on first use (cached on disk), so import it late

    return cpu_kernels


def _parallel(fn, bounds: list[int], *args, scratch: tuple[np.ndarray, ...] = ()) -> None:
    """``fn(*args, lo, hi)`` for the consecutive pieces of ``bounds``, on torch's number of threads (the kernels
    release the GIL). More pieces than threads: a thread that finishes early takes the next piece. ``scratch``:
    arrays of one row per piece of ``bounds``, piece j's rows passed after ``args`` (memory of its own)."""
    global _pool
    pieces = [(j, lo, hi) for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)) if hi > lo]
    threads = min(torch.get_num_threads(), len(pieces))
    if threads <= 1:
        for j, lo, hi in pieces:
            fn(*args, *(a[j] for a in scratch), lo, hi)
        return
    if _pool is None or _pool[0] != os.getpid() or _pool[1] < threads:
        if _pool is not None and _pool[0] == os.getpid():
            _pool[2].shutdown(wait=False)  # torch's thread count grew: a bigger pool replaces this one
        _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="recon-raster"))
    for future in [_pool[2].submit(fn, *args, *(a[j] for a in scratch), lo, hi) for j, lo, hi in pieces]:
        future.result()


def _split(cells: np.ndarray, parts: int) -> list[int]:
    """Bounds of ``parts`` consecutive pieces of about equal work, given each item's work."""
    if parts <= 1 or cells.shape[0] <= 1:
        return [0, cells.shape[0]]
    total = np.cumsum(cells)
    inner = np.searchsorted(total, total[-1] * np.arange(1, parts) / parts).tolist()
    return [0, *inner, cells.shape[0]]


def _even(n: int, parts: int) -> list[int]:
    return [n * i // parts for i in range(parts + 1)]


PIECES_PER_THREAD = 4

def _bands(images: int, size: int, threads: int) -> int:
    """Row bands per image in the forward: enough (image, band) tasks to keep every thread busy."""
    return 1 if images >= 4 * threads else max(1, min(size, math.ceil(4 * threads / max(images, 1))))


class _Plan:
    """Per-face tables of one call, shared by its forward and backward."""

    def __init__(self, fv: np.ndarray, settings: RasterSettings, threads: int, surface: bool = False) -> None:
        k = _kernels()
        n = fv.shape[0]
        self.threads = threads
        self.frames = _buffers.take((n, k.FRAME_SIZE), np.float64)
        self.boxes = _buffers.take((n, 4), np.int64)
        self.keep(self.frames, self.boxes)
        radius = math.sqrt(settings.culling_threshold)
        _parallel(k.face_frames, _even(n, threads), fv, settings.image_size, radius, surface, self.frames,
                  self.boxes)
        boxes = self.boxes
        area = np.maximum(boxes[:, 1] - boxes[:, 0] + 1, 0) * np.maximum(boxes[:, 3] - boxes[:, 2] + 1, 0)
        # Window cells of every face, plus its fixed cost (in cells): the work the pieces are balanced on.
        self.cells = area + 4
        self.face_bounds = _split(self.cells, PIECES_PER_THREAD * threads)

    def keep(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """``arrays`` (from the pool) go back to the pool with the plan's tables when the plan is dropped."""
        weakref.finalize(self, _buffers.give, *arrays)
        return arrays

    def unit_bounds(self, images: int, faces: int, bands: int) -> list[int]:
        """Pieces of the forward's (image, band) units; whole images balanced on their cells when unbanded."""
        if bands > 1:
            return _even(images * bands, PIECES_PER_THREAD * self.threads)
        return _split(self.cells.reshape(images, faces).sum(1), PIECES_PER_THREAD * self.threads)


def _flat(face_vertices: Tensor) -> np.ndarray:
    """(B, F, …) → (B·F, …) float64 numpy view or copy: the kernels compute in float64 whatever the input dtype
    (and are compiled once, for float64)."""
    b, f = face_vertices.shape[:2]
    flat = face_vertices.detach().reshape(b * f, *face_vertices.shape[2:])
    return flat.to(torch.float64).contiguous().numpy()


class SoftSilhouette(torch.autograd.Function):
    """(B, F, 3, ≥2) face corners → (B, 1, S, S) alpha, 'prod' or 'sum'."""

    @staticmethod
    def forward(ctx, face_vertices: Tensor, settings: RasterSettings) -> Tensor:
        b, f = face_vertices.shape[:2]
        s, prod = settings.image_size, settings.aggr_alpha == "prod"
        k, threads = _kernels(), torch.get_num_threads()
        plan = _Plan(_flat(face_vertices), settings, threads)
        bands = _bands(b, s, threads)
        # Per-pixel state in rows padded by LANES: the vector kernels' lanes beyond the last column land there.
        stride = s + k.LANES
        acc = np.empty(b * s * stride)  # the kernel sets each unit's start values
        # Written in the output's dtype, into the tensor returned (not a view of one: the caller may change it in
        # place).
        alpha = torch.empty((b, 1, s, s), dtype=face_vertices.dtype)
        _parallel(k.silhouette_forward, plan.unit_bounds(b, f, bands), plan.frames, plan.boxes, f, s, stride,
                  k.LANES, settings.sigma, settings.culling_threshold, prod, bands, acc, alpha.view(b, -1).numpy())
        ctx.plan, ctx.settings, ctx.shape, ctx.acc = plan, settings, face_vertices.shape, acc
        return alpha

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_alpha: Tensor) -> tuple[Tensor | None, None]:
        settings, (b, f, _, dims) = ctx.settings, ctx.shape
        s, prod = settings.image_size, settings.aggr_alpha == "prod"
        plan, k = ctx.plan, _kernels()
        g = grad_alpha.detach().reshape(b, s * s).contiguous().numpy()  # the output's dtype
        stride = s + k.LANES
        grad = np.zeros((b * f, 3, dims))
        # Each piece's per-pixel factor of one image at a time, which the kernel computes.
        per_pixel = np.empty((len(plan.face_bounds) - 1, s * stride))
        _parallel(k.silhouette_backward, plan.face_bounds, plan.frames, plan.boxes, f, s, stride, k.LANES,
                  settings.sigma, settings.culling_threshold, prod, g, ctx.acc, grad, scratch=(per_pixel,))
        return torch.from_numpy(grad).to(grad_alpha.dtype).view(b, f, 3, dims), None


class SoftRGBA(torch.autograd.Function):
    """(B, F, 3, 3) corners and (B, F, 3, 3) corner colours, or (B, F, 1, 3) face colours, → (B, 4, S, S) RGBA,
    'softmax' RGB."""

    @staticmethod
    def forward(ctx, face_vertices: Tensor, face_colors: Tensor, settings: RasterSettings) -> Tensor:
        b, f = face_vertices.shape[:2]
        s, prod = settings.image_size, settings.aggr_alpha == "prod"
        k, threads = _kernels(), torch.get_num_threads()
        colors = _flat(face_colors)
        if colors.shape[1] == 1:
            colors = colors.reshape(-1, 3)  # one colour per face: the kernels compiled for (N, 3) use it as it is
        plan = _Plan(_flat(face_vertices), settings, threads, surface=True)
        # Per-pixel state in rows padded by LANES: the vector kernels' lanes beyond the last column land there.
        stride = s + k.LANES
        pixels = b * s * stride
        bands = _bands(b, s, threads)
        acc, shift, den = np.empty(pixels), np.empty(pixels), np.empty(pixels)  # the kernel sets the start values
        num = np.empty((3, pixels))
        background = np.asarray(settings.background, dtype=np.float64)
        image = torch.empty((b, 4, s, s), dtype=face_vertices.dtype)  # written in the output's dtype, as alpha
        _parallel(k.rgba_forward, plan.unit_bounds(b, f, bands), plan.frames, plan.boxes, colors, f, s, stride,
                  k.LANES, settings.sigma, settings.culling_threshold, prod, settings.gamma, settings.near,
                  settings.far, settings.double_sided, settings.eps, background, bands, acc, shift, den, *num,
                  image.view(b, 4, -1).numpy())
        ctx.plan, ctx.settings, ctx.shape, ctx.colors = plan, settings, (b, f), colors
        ctx.state = (acc, shift, den, num, stride)  # not the image: the caller may change it in place
        return image

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        settings, (b, f) = ctx.settings, ctx.shape
        s, prod = settings.image_size, settings.aggr_alpha == "prod"
        acc, shift, den, num, stride = ctx.state
        g = grad_out.detach().reshape(b, 4, -1).contiguous().numpy()  # the output's dtype
        grad_fv = np.zeros((b * f, 3, 3))
        grad_colors = np.zeros(ctx.colors.shape)
        plan, k = ctx.plan, _kernels()
        # Each piece's per-pixel terms of one image at a time (the kernel fills them): five arrays, so that each is
        # an argument of its own (declared apart, see cpu_kernels._DistinctArrays).
        pieces = len(plan.face_bounds) - 1
        scratch = tuple(np.empty((pieces, s * stride)) for _ in range(5))
        _parallel(k.rgba_backward, plan.face_bounds, plan.frames, plan.boxes, ctx.colors, f, s, stride, k.LANES,
                  settings.sigma, settings.culling_threshold, prod, settings.gamma, settings.near, settings.far,
                  settings.double_sided, g, acc, den, *num, shift, grad_fv, grad_colors, scratch=scratch)
        dtype = grad_out.dtype
        return (torch.from_numpy(grad_fv).to(dtype).view(b, f, 3, 3),
                torch.from_numpy(grad_colors).to(dtype).view(b, f, -1, 3), None)


def _lighting_kernels():
    from recon.render import cpu_lighting  # compiled on first use, as the rasterizer's kernels

    return cpu_lighting


def _light_args(vertices: Tensor, faces: Tensor, lighting) -> tuple:
    """float64 numpy (verts, faces, light) and the scalars of :mod:`recon.render.cpu_lighting`'s kernels, for
    vertices (B, V, 3) and faces (B, F, 3), or (1, F, 3) where every image has the same faces. The kernels read
    memory at the indices unchecked: they are checked here."""
    b, v = vertices.shape[:2]
    if faces.dim() != 3 or faces.shape[0] != b or faces.shape[2] != 3:
        raise ValueError(f"faces must be (B, F, 3) with B={b}, got {tuple(faces.shape)}")
    if faces.stride(0) == 0:
        faces = faces[:1]  # one set of faces for the batch (expanded): checked and copied once, read by every image
    check_face_indices(faces, v)
    verts = vertices.detach().to(torch.float64).contiguous().numpy()
    fc = faces.detach().to(torch.int64).contiguous().numpy()
    light = np.asarray(lighting.direction, dtype=np.float64)
    return verts, fc, light, float(lighting.ambient), float(lighting.directional)


class LitIntensity(torch.autograd.Function):
    """(B, V, 3) vertices, (B, F, 3) int64 faces → light intensity per face (B, F, 1) on face normals (flat
    shading), or with ``per_vertex`` per vertex (B, V, 1) on area-weighted vertex normals (smooth shading)."""

    @staticmethod
    def forward(ctx, vertices: Tensor, faces: Tensor, lighting, eps: float, per_vertex: bool) -> Tensor:
        verts, fc, light, ambient, directional = _light_args(vertices, faces, lighting)
        k, bounds = _lighting_kernels(), _even(verts.shape[0], torch.get_num_threads())
        if per_vertex:
            out, normals = np.empty(verts.shape[:2]), np.empty(verts.shape)
            _parallel(k.vertex_light, bounds, verts, fc, light, ambient, directional, eps, normals, out)
        else:
            out, normals = np.empty((verts.shape[0], fc.shape[1])), None
            _parallel(k.face_light, bounds, verts, fc, light, ambient, directional, eps, out)
        ctx.args = (verts, fc, light, directional, eps, normals)
        return torch.from_numpy(out).to(vertices.dtype)[..., None]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None, None, None]:
        verts, fc, light, directional, eps, normals = ctx.args
        k, bounds = _lighting_kernels(), _even(verts.shape[0], torch.get_num_threads())
        grad = np.zeros(verts.shape)
        g = grad_out.detach().to(torch.float64)[..., 0].contiguous().numpy()
        if normals is not None:
            _parallel(k.vertex_light_backward, bounds, verts, fc, light, directional, eps, normals, g,
                      np.empty(verts.shape), grad)
        else:
            _parallel(k.face_light_backward, bounds, verts, fc, light, directional, eps, g, grad)
        return torch.from_numpy(grad).to(grad_out.dtype), None, None, None, None


def warm_up(path: str, dtype: torch.dtype) -> None:
    """Compile (or load from the disk cache) and run ``path``'s kernels for ``dtype`` on one small face, forward
    and backward: a failure surfaces here, where the caller can still choose the eager path."""
    from recon.render.settings import RasterSettings

    # Callers may be under no_grad or inference mode (validation): the check needs a graph of its own.
    with torch.inference_mode(False), torch.enable_grad():
        fv = torch.tensor([[[[-0.5, -0.5, 2.0], [0.5, -0.4, 2.5], [0.0, 0.6, 3.0]]]], dtype=dtype, requires_grad=True)
        settings = RasterSettings(image_size=8, sigma=1e-2)
        if path == "silhouette":
            out = SoftSilhouette.apply(fv, settings)
            (grad,) = torch.autograd.grad(out.sum(), fv)
        elif path == "lighting":
            from recon.render.lighting import Lighting

            # The face turned up (0, 2, 1) is lit beyond the ambient 0.5, its reverse is not.
            vertices, faces = fv[:, 0].detach().clone().requires_grad_(), torch.tensor([[[0, 2, 1], [0, 1, 2]]])
            out = torch.cat((LitIntensity.apply(vertices, faces, Lighting(), 1e-6, False),
                             LitIntensity.apply(vertices, faces[:, :1], Lighting(), 1e-6, True)), 1)
            (grad,) = torch.autograd.grad(out.sum(), vertices)
            out = (out - 0.5)[:, None, [0, 2]]  # the lit face and a vertex of it
        else:  # 'rgba' (a colour per corner) or 'rgba-face' (one per face): each layout has kernels of its own
            colors = torch.full_like(fv if path == "rgba" else fv[:, :, :1], 0.5).requires_grad_()
            out = SoftRGBA.apply(fv, colors, settings)
            grad = torch.cat([g.flatten() for g in torch.autograd.grad(out.sum(), (fv, colors))])
    if not (out.detach().isfinite().all() and grad.isfinite().all() and out.detach()[:, -1].sum() > 0):
        raise RuntimeError(f"the numba {path} kernels gave a wrong result on a test face")
