"""The soft silhouette alone, straight from culling's windows: no pair lists, no gathers of pair attributes.

Alpha needs one number per (pixel, face) pair, ``log(1 − D)`` ('prod') or ``D`` ('sum'), summed per pixel. Here
it is computed on the dense window cells of :mod:`recon.render.culling` and scattered onto the pixels at once,
chunk by chunk; culled and out-of-box cells add 0. The backward reuses the forward's culling plan (per-face
tables), recomputes the cells (nothing of size pixels × faces or pairs is kept between the passes) and reduces
SoftRas's gradient — ``∂d²/∂p_a = 2(1 − t)(q − p)``, ``∂d²/∂p_b = 2t(q − p)`` for the nearest edge (a, b), foot point q,
t held constant — over each face's window, so the corner gradients come out of sums rather than scatters.

The per-chunk cell work is two pure functions, :func:`chunk_values` and :func:`chunk_face_gradients`, which
``RECON_FUSED=inductor`` compiles. On CPU the default is neither: the numba kernels of
:mod:`recon.render.numba_path` serve the whole call (:mod:`recon.render.fused` decides); this eager path is
their reference and fallback.

This is what training uses; :func:`recon.render.soft_rasterize` with colours still goes through the pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from recon.render import fused
from recon.render.cells import Cells, WindowSlice, cull_cells, window_distances
from recon.render.culling import WindowPlan, plan_windows, window_slice
from recon.render.settings import RasterSettings

SILHOUETTE_MODES = ("prod", "sum")


def soft_silhouette(face_vertices: Tensor, settings: RasterSettings) -> Tensor:
    """SoftRas's alpha, (B, 1, S, S), for (B, F, 3, ≥2) projected face corners; same values as
    :func:`recon.render.soft_rasterize` without colours, for 'prod' and 'sum' aggregation."""
    if settings.aggr_alpha not in SILHOUETTE_MODES:
        raise ValueError(f"soft_silhouette aggregates alpha by {SILHOUETTE_MODES}, got {settings.aggr_alpha!r}")
    if fused.triton_kernels("silhouette", face_vertices):
        from recon.render.triton_path import TritonSilhouette

        return TritonSilhouette.apply(face_vertices, settings)
    if fused.numba_kernels("silhouette", face_vertices):
        from recon.render.numba_path import SoftSilhouette

        return SoftSilhouette.apply(face_vertices, settings)
    b, f = face_vertices.shape[:2]
    s = settings.image_size
    xy = face_vertices[..., :2].reshape(b * f, 3, 2)
    return _SoftSilhouette.apply(xy, b, f, settings).view(b, 1, s, s)


def _neg_logit(cells: Cells, sigma: float) -> Tensor:
    """(kh, kw, n) ``−sign·d²/σ`` of every cell (sign +1 strictly inside)."""
    return cells.best * (cells.inside * (-2 / sigma) + 1 / sigma)


def chunk_values(window: WindowSlice, threshold: float, sigma: float, prod: bool) -> Tensor:
    """(kh, kw, n) each cell's term of the per-pixel sum: ``log(1 − D)`` ('prod') or ``D`` ('sum'), 0 if culled."""
    c = cull_cells(window_distances(*window), threshold)
    neg_logit = _neg_logit(c, sigma)
    # 'prod': Σ log(1 − D) with log(1 − D) = logsigmoid(−x), never log(0); 'sum': Σ D.
    value = F.logsigmoid(neg_logit) if prod else torch.sigmoid(neg_logit.neg_())
    return value.mul_(c.keep)


def chunk_face_gradients(
    window: WindowSlice, per_pixel: Tensor, threshold: float, sigma: float, prod: bool
) -> Tensor:
    """(2, 3, n) ∂loss/∂(x, y) of each corner of the chunk's n faces (sorted order), given per_pixel (kh, kw, n):
    ∂loss/∂alpha·∂alpha/∂(Σ of the pixel) at each cell's pixel."""
    c = cull_cells(window_distances(*window), threshold)
    e = c.edges
    d_logit = torch.sigmoid(_neg_logit(c, sigma).neg_())
    if not prod:
        d_logit = d_logit * (1 - d_logit)
    d_logit *= per_pixel
    # ∂logit/∂d² = sign/σ, then SoftRas's 2(1 − t)(q − p) and 2t(q − p) onto the nearest edge's corners,
    # with q − p = −(excess·û + h·n̂) in the edge's frame and t = foot/length.
    coef = d_logit.mul_(c.keep).mul_(c.inside * (4 / sigma) - 2 / sigma)
    # One-hot nearest edge (d² equal to the minimum), the lowest index on ties.
    weight = (c.best - e.d2).sign_().add_(1)  # (3, kh, kw, n)
    rest = 1 - weight[0]
    weight[1] *= rest
    rest -= weight[1]
    weight[2] *= rest
    weight *= coef
    # Σ over each face's window of weight·(h, excess) and weight·foot·(h, excess): (2, 2, 3, n).
    sums = torch.stack([(w * e.h_excess).sum((2, 3)) for w in (weight, weight * e.foot)])
    t_sums = sums[1] * e.table.inv_length  # weight t
    # q − p = −(h·n̂ + excess·û): per axis, the normal's and the direction's components.
    directions = e.table.directions  # (axis, normal/along, edge, n)
    to_a = ((sums[0] - t_sums) * directions).sum(1)  # weight 1 − t, onto corner k of edge k
    to_b = (t_sums * directions).sum(1)  # weight t, onto corner k + 1
    return -(to_a + to_b.roll(1, dims=1))


# The per-chunk work, eager; recon.render.fused runs compiled versions of these where it can.
EAGER = fused.Kernels(chunk_values, chunk_face_gradients)


class _SoftSilhouette(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xy: Tensor, b: int, f: int, settings: RasterSettings) -> Tensor:
        s, sigma, prod = settings.image_size, settings.sigma, settings.aggr_alpha == "prod"
        plan = plan_windows(xy, f, s, settings.culling_threshold)
        acc = fused.run(_accumulate_values, EAGER, plan, plan.padded_pixels(b), sigma, prod)[: b * s * s]
        ctx.save_for_backward(xy, acc)
        # The plan is O(faces) (≈ 130 bytes a face) and costs as much to rebuild as half the cells: keep it.
        ctx.plan = plan
        ctx.shape, ctx.settings = (b, f), settings
        return -torch.expm1(acc) if prod else acc / f

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_alpha: Tensor) -> tuple[Tensor | None, ...]:
        xy, acc = ctx.saved_tensors
        (b, f), settings = ctx.shape, ctx.settings
        s, sigma, prod = settings.image_size, settings.sigma, settings.aggr_alpha == "prod"
        # ∂alpha/∂x per pair: (1 − alpha)·sigmoid(x) for 'prod', with 1 − alpha = exp(Σ log(1 − D)) exactly;
        # sigmoid'(x)/F for 'sum'.
        per_pixel = grad_alpha * torch.exp(acc) if prod else grad_alpha / f
        plan = ctx.plan
        per_pixel = torch.cat((per_pixel, per_pixel.new_zeros(plan.padded_pixels(b) - b * s * s)))
        grad_sorted = fused.run(_face_gradients, EAGER, plan, per_pixel, sigma, prod)
        grad_xy = torch.zeros_like(xy).index_copy_(0, plan.order, grad_sorted.permute(2, 1, 0))
        return grad_xy, None, None, None


def _accumulate_values(plan: WindowPlan, pixels: int, sigma: float, prod: bool, kernels: fused.Kernels) -> Tensor:
    """(pixels,) Σ over the cells of each pixel of :func:`chunk_values`, chunk by chunk."""
    acc = plan.window.x0.new_zeros(pixels)
    for chunk in plan.chunks:
        value = kernels.values(window_slice(plan.window, chunk), plan.window.threshold, sigma, prod)
        acc.index_add_(0, plan.window.pixels(chunk).view(-1), value.view(-1))
    return acc


def _face_gradients(plan: WindowPlan, per_pixel: Tensor, sigma: float, prod: bool, kernels: fused.Kernels) -> Tensor:
    """(2, 3, N) :func:`chunk_face_gradients` of every chunk, in sorted face order."""
    grad_sorted = per_pixel.new_zeros(2, 3, plan.order.shape[0])  # per axis, corner and sorted face position
    for chunk in plan.chunks:
        cells = per_pixel.index_select(0, plan.window.pixels(chunk).view(-1)).view(chunk.kh, chunk.kw, -1)
        grad_sorted[:, :, chunk.lo : chunk.hi] = kernels.face_gradients(
            window_slice(plan.window, chunk), cells, plan.window.threshold, sigma, prod
        )
    return grad_sorted
