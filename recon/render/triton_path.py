"""The silhouette and the 'softmax' RGBA soft rasterizer as Triton kernels, for CUDA: ``RECON_FUSED=triton``.

On a GPU the eager window kernels dispatch ~1,500 tensor operations for one training-size call (batch 64, 64²,
1280 faces), each a kernel launch. Here a call is three kernels (:mod:`recon.render.triton_kernels`) and a few
tensor operations around them:

- the per-face tables (:func:`face_frames`: the same columns as :func:`recon.render.cpu_kernels.face_frames`,
  in the input's dtype), one program per ``BLOCK`` faces;
- the forward, one program per (image, tile of ``BLOCK`` pixels): it walks the image's faces in order, skips a
  face whose box (grown by √T) misses the tile's rows, and multiplies ('prod') or adds ('sum') each kept cell's
  term into the tile's pixels in registers; the RGBA render keeps the soft z-buffer as an online softmax (a
  running maximum, its denominator and numerators). Every pixel is written by one program, in a fixed face
  order;
- the backward, one program per face: it walks the face's box ``BACKWARD_BLOCK`` cells at a time, evaluates each cell
  again and reduces SoftRas's gradient over the box into the face's window sums (4 per edge, as
  :func:`recon.render.cpu_kernels._write_gradients`; for RGBA also 9 colour and 3 depth sums), then writes the
  face's gradients: no atomics, the same bits on every run.

The arithmetic is the input's dtype, as on the eager path. Triton compiles each kernel on first use per dtype
and caches it (``~/.triton/cache``, or ``TRITON_CACHE_DIR``). With ``TRITON_INTERPRET=1`` the same kernels run
on CPU tensors in Triton's interpreter: that is how they are tested without a GPU. They have not run on a GPU
yet, so the eager kernels stay CUDA's default.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recon.render.settings import RasterSettings

# frames[i]: per edge k (corner k → k + 1) inward normal (NX, NY), h's constant (HC), unit direction (UX, UY), u's
# constant (UC), length (LEN), 1/length or 0 (INV); then the interior bound (INTERIOR: inf for a zero-area face);
# for the RGBA render also the barycentric inverse (BARY, 3×3, row k gives w_k), the clamped corner depths
# (DEPTH), the front-facing flag (FRONT) and the inverse clamped depths (INV_DEPTH).
NX, NY, HC, UX, UY, UC, LEN, INV, INTERIOR = 0, 3, 6, 9, 12, 15, 18, 21, 24
FRAME_SIZE = 25
BARY, DEPTH, FRONT, INV_DEPTH = 25, 34, 37, 38
SURFACE_FRAME_SIZE = 41
BLOCK = 256  # pixels of a forward tile, faces of a per-face-table program
# Cells of a backward step, one per thread of 4 warps. A training-size face's box is ~50 cells (64², 1280 faces);
# at 256 the float64 RGBA backward needs more than the 255 registers a thread has and spills some to memory
# (``python -m recon.render.triton_compile`` reports each kernel's registers).
BACKWARD_BLOCK = 128
# a·b + c may be one fused multiply-add, as in the numba kernels. Said at every launch: Triton 3.9 warns when it
# is left to its default, which it means to change.
FMA = {"enable_fp_fusion": True}


def interpreted() -> bool:
    """Whether Triton runs its interpreter (``TRITON_INTERPRET=1``): kernels on CPU tensors, for tests."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def params(settings: RasterSettings, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The settings' numbers the kernels read, in the input's dtype (a Python float argument would be float32 in
    a kernel): 1/σ, T, √T, 1/γ, near, far, eps, background (3)."""
    values = [1 / settings.sigma, settings.culling_threshold, math.sqrt(settings.culling_threshold),
              1 / settings.gamma, settings.near, settings.far, settings.eps, *map(float, settings.background)]
    return torch.tensor(values, dtype=dtype, device=device)


def face_frames(fv: Tensor, size: int, numbers: Tensor, surface: bool = False) -> tuple[Tensor, Tensor]:
    """frames (N, FRAME_SIZE, or SURFACE_FRAME_SIZE with ``surface``) and boxes (N, 4) int32 = (first col, last
    col, first row, last row) of the cells within √T of each face's box, for fv (N, 3, ≥2) corners (x_ndc, y_ndc[,
    z_view]), by one kernel; numbers from :func:`params`. An empty box has last < first; a face with a non-finite
    corner gets one, and a frame of zeros."""
    fv = fv.contiguous()
    n, _, dims = fv.shape
    frames = torch.empty(n, SURFACE_FRAME_SIZE if surface else FRAME_SIZE, dtype=fv.dtype, device=fv.device)
    boxes = torch.empty(n, 4, dtype=torch.int32, device=fv.device)
    _kernels().face_frames[(-(-n // BLOCK),)](fv, frames, boxes, numbers, n, dims, size, SURFACE=surface,
                                              HAS_DEPTH=dims > 2, BLOCK=BLOCK, **FMA)
    return frames, boxes


def _kernels():  # noqa: ANN202 (a module)
    """:mod:`recon.render.triton_kernels`, imported on first use (it imports Triton)."""
    from recon.render import triton_kernels

    return triton_kernels


class TritonSilhouette(torch.autograd.Function):
    """(B, F, 3, ≥2) face corners → (B, 1, S, S) alpha, 'prod' or 'sum', on the Triton kernels."""

    @staticmethod
    def forward(ctx, face_vertices: Tensor, settings: RasterSettings) -> Tensor:
        b, f, _, dims = face_vertices.shape
        s, prod = settings.image_size, settings.aggr_alpha == "prod"
        numbers = params(settings, face_vertices.dtype, face_vertices.device)
        frames, boxes = face_frames(face_vertices.detach().reshape(b * f, 3, dims), s, numbers)
        acc = torch.empty(b * s * s, dtype=face_vertices.dtype, device=face_vertices.device)
        _kernels().forward[(b, -(-s * s // BLOCK))](frames, boxes, acc, numbers, f, s, PROD=prod, BLOCK=BLOCK, **FMA)
        ctx.save_for_backward(frames, boxes, acc, numbers)
        ctx.settings, ctx.shape = settings, face_vertices.shape
        acc_image = acc.view(b, 1, s, s)
        return 1 - acc_image if prod else acc_image / f  # a new tensor, not a view: the caller may change it in place

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_alpha: Tensor) -> tuple[Tensor | None, None]:
        frames, boxes, acc, numbers = ctx.saved_tensors
        settings, (b, f, _, dims) = ctx.settings, ctx.shape
        prod = settings.aggr_alpha == "prod"
        g = grad_alpha.reshape(-1).to(acc.dtype)
        per_pixel = (g * acc if prod else g / f).contiguous()  # ∂loss/∂alpha·(1 − alpha), or ∂loss/∂alpha / F
        grad = torch.zeros(b * f, 3, dims, dtype=acc.dtype, device=acc.device)
        _kernels().backward[(b * f,)](frames, boxes, per_pixel, grad, numbers, f, settings.image_size, dims,
                                      PROD=prod, BLOCK=BACKWARD_BLOCK, **FMA)
        return grad.view(b, f, 3, dims).to(grad_alpha.dtype), None


class TritonRGBA(torch.autograd.Function):
    """(B, F, 3, 3) corners and (B, F, 3, 3) corner colours, or (B, F, 1, 3) face colours, → (B, 4, S, S) RGBA,
    'softmax' RGB, on the Triton kernels."""

    @staticmethod
    def forward(ctx, face_vertices: Tensor, face_colors: Tensor, settings: RasterSettings) -> Tensor:
        b, f = face_vertices.shape[:2]
        s, prod = settings.image_size, settings.aggr_alpha == "prod"
        dtype, device = face_vertices.dtype, face_vertices.device
        numbers = params(settings, dtype, device)
        frames, boxes = face_frames(face_vertices.detach().reshape(b * f, 3, 3), s, numbers, surface=True)
        colors = face_colors.detach().to(dtype).reshape(b * f, -1, 3).contiguous()
        corners = colors.shape[1]
        out = torch.empty(b, 4, s, s, dtype=dtype, device=device)  # returned as it is, not as a view
        acc, shift, den = (torch.empty(b * s * s, dtype=dtype, device=device) for _ in range(3))
        _kernels().rgba_forward[(b, -(-s * s // BLOCK))](
            frames, boxes, colors, out, acc, shift, den, numbers, f, s, 3 * corners, 3 if corners == 3 else 0,
            int(settings.double_sided), PROD=prod, BLOCK=BLOCK, **FMA)
        # The backward reads the RGB from a copy: the caller may change the returned image in place.
        ctx.save_for_backward(frames, boxes, colors, out[:, :3].reshape(b, 3, s * s).clone(), acc, shift, den,
                              numbers)
        ctx.settings, ctx.shape = settings, (b, f)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        frames, boxes, colors, rgb, acc, shift, den, numbers = ctx.saved_tensors
        settings, (b, f) = ctx.settings, ctx.shape
        s, prod = settings.image_size, settings.aggr_alpha == "prod"
        g = grad_out.reshape(b, 4, s * s).to(acc.dtype)
        # Per pixel: per_pixel (∂loss/∂alpha·Π(1 − D) or ∂loss/∂alpha/F), the shift, ∂loss/∂rgb / den and
        # h = Σ ∂loss/∂rgb·rgb / den.
        g_rgb = g[:, :3] / den.view(b, 1, -1)
        per_pixel = g[:, 3].reshape(-1) * acc if prod else g[:, 3].reshape(-1) / f
        pixels = torch.cat((per_pixel[None], shift[None], g_rgb.transpose(0, 1).reshape(3, -1),
                            (g_rgb * rgb).sum(1).reshape(1, -1))).contiguous()
        grad_fv = torch.zeros(b * f, 3, 3, dtype=acc.dtype, device=acc.device)
        grad_colors = torch.zeros(b * f, 3, 3, dtype=acc.dtype, device=acc.device)
        corners = colors.shape[1]
        _kernels().rgba_backward[(b * f,)](
            frames, boxes, colors, pixels, grad_fv, grad_colors, numbers, f, s, 3 * corners,
            3 if corners == 3 else 0, int(settings.double_sided), PROD=prod, BLOCK=BACKWARD_BLOCK, **FMA)
        if corners == 1:  # one colour per face: its gradient is the corners' together
            grad_colors = grad_colors.sum(1, keepdim=True)
        dtype = grad_out.dtype
        return grad_fv.view(b, f, 3, 3).to(dtype), grad_colors.view(b, f, corners, 3).to(dtype), None


def warm_up(path: str, dtype: torch.dtype, device: torch.device) -> None:
    """Compile (or load from Triton's cache) and run ``path``'s kernels ('silhouette' or 'rgba') for ``dtype`` on
    one small face, forward and backward: a failure surfaces here, where the caller can still choose another
    path."""
    with torch.inference_mode(False), torch.enable_grad():
        fv = torch.tensor([[[[-0.5, -0.5, 2.0], [0.5, -0.4, 2.5], [0.0, 0.6, 3.0]]]], dtype=dtype, device=device,
                          requires_grad=True)
        settings = RasterSettings(image_size=8, sigma=1e-2)
        if path == "silhouette":
            out = TritonSilhouette.apply(fv, settings)
            (grad,) = torch.autograd.grad(out.sum(), fv)
        else:
            colors = torch.full_like(fv, 0.5).requires_grad_()
            out = TritonRGBA.apply(fv, colors, settings)
            grad = torch.cat(torch.autograd.grad(out.sum(), (fv, colors)))
    if not (out.isfinite().all() and grad.isfinite().all() and out.detach()[:, -1].sum() > 0
            and grad.abs().sum() > 0):
        raise RuntimeError(f"the Triton {path} kernels gave a wrong result on a test face")
