"""Soft rasterization (SoftRas, Liu et al. 2019) in pure PyTorch, evaluated only on the pairs culling keeps.

For every kept (pixel, face) pair: ``D = sigmoid(sign·d²/σ)`` with d the NDC distance from the pixel centre to
the closed triangle and sign = +1 strictly inside. Alpha aggregates D ('prod': ``1 − Π(1 − D)``), RGB aggregates
the face colours ('softmax': the D·softmax(z/γ) soft z-buffer, or 'hard': the nearest covering face). Formulas,
constants and quirks follow softras.md §1; gradients match SoftRas's CUDA backward (§1.6).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.render.pairs import PixelFacePairs, barycentric_inverse, culling_threshold, find_pairs
from recon.render.silhouette import SILHOUETTE_MODES, soft_silhouette

AlphaAggregation = Literal["prod", "sum", "hard"]
RGBAggregation = Literal["softmax", "hard"]


class _SignedSquaredDistance(torch.autograd.Function):
    """``sign·|q − p|²`` per pair, q the nearest point of the triangle to pixel p.

    The backward is SoftRas's: the foot-point parameter t is held constant, which is exact here because the
    distance is minimal in t (envelope theorem) and the pixel is fixed. Only the pairs are stored, never the
    dense pixel × face product, and the gradient is scattered straight onto the face corners.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, corner_a: Tensor, corner_b: Tensor, t: Tensor, px: Tensor,
                py: Tensor, sign: Tensor) -> Tensor:
        # x, y: (N·3,) corner coordinates; the rest (P,) per pair.
        dx = torch.lerp(x.index_select(0, corner_a), x.index_select(0, corner_b), t) - px
        dy = torch.lerp(y.index_select(0, corner_a), y.index_select(0, corner_b), t) - py
        ctx.save_for_backward(corner_a, corner_b, t, dx, dy, sign)
        ctx.num_corners = x.shape[0]
        return sign * torch.addcmul(dx * dx, dy, dy)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        corner_a, corner_b, t, dx, dy, sign = ctx.saved_tensors
        g = 2 * grad * sign
        g_b = g * t
        g_a = g - g_b
        grads = []
        for d in (dx, dy):
            out = d.new_zeros(ctx.num_corners)
            out.index_add_(0, corner_a, g_a * d)
            out.index_add_(0, corner_b, g_b * d)
            grads.append(out)
        return grads[0], grads[1], None, None, None, None, None, None


def signed_squared_distance(xy: Tensor, pairs: PixelFacePairs) -> Tensor:
    """(P,) ``sign·d²`` in NDC² for the pairs, differentiable w.r.t. the (N, 3, 2) face corners xy."""
    sign = torch.where(pairs.inside, 1.0, -1.0).to(xy.dtype)
    flat = xy.reshape(-1, 2)
    return _SignedSquaredDistance.apply(
        flat[:, 0].contiguous(), flat[:, 1].contiguous(), pairs.corner_a, pairs.corner_b,
        pairs.t.to(xy.dtype), pairs.x, pairs.y, sign,
    )


def soft_rasterize(
    face_vertices: Tensor,
    face_colors: Tensor | None = None,
    image_size: int = 64,
    sigma: float = 1e-4,
    gamma: float = 1e-4,
    dist_eps: float = 1e-10,
    near: float = 1.0,
    far: float = 100.0,
    eps: float = 1e-3,
    aggr_rgb: RGBAggregation = "softmax",
    aggr_alpha: AlphaAggregation = "prod",
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    double_sided: bool = True,
) -> Tensor:
    """Rasterize projected faces softly.

    Args:
        face_vertices: (B, F, 3, 3) corners as (x_ndc, y_ndc, z_view), after the camera transform.
        face_colors: (B, F, 3, 3) RGB per corner (interpolated with clipped barycentrics, SoftRas's 'vertex'
            texture; a constant per face is its 'surface' texture with R = 1), or None to compute alpha only.
        sigma: sharpness, in squared NDC units (one pixel at 64² is 2/64 NDC). gamma: softmax temperature of
            the soft z-buffer. dist_eps: culling tolerance; a culled pair would have had ``D ≤ dist_eps``.
        near, far: depth range for RGB (alpha ignores it, as SoftRas). eps: background logit of 'softmax'.
        double_sided: when False, faces whose screen winding is counter-clockwise (back faces) add no colour.

    Returns:
        (B, 4, S, S) RGBA when colours are given, else (B, 1, S, S) alpha; row 0 is the top of the image.
    """
    b, f = face_vertices.shape[:2]
    s = image_size
    if face_colors is None and aggr_alpha in SILHOUETTE_MODES:
        return soft_silhouette(face_vertices, s, sigma, dist_eps, aggr_alpha)
    xy = face_vertices[..., :2].reshape(b * f, 3, 2)
    pairs = find_pairs(xy, f, s, culling_threshold(sigma, dist_eps))
    logits = signed_squared_distance(xy, pairs) / sigma
    alpha = _aggregate_alpha(logits, pairs, b * s * s, f, aggr_alpha).view(b, 1, s, s)
    if face_colors is None:
        return alpha
    rgb = _aggregate_rgb(
        face_vertices, face_colors, pairs, logits, b * s * s, gamma, near, far, eps, aggr_rgb, background, double_sided
    )
    return torch.cat((rgb.view(b, s, s, 3).permute(0, 3, 1, 2), alpha), dim=1)


def _aggregate_alpha(
    logits: Tensor, pairs: PixelFacePairs, num_pixels: int, faces_per_image: int, mode: AlphaAggregation
) -> Tensor:
    """Per-pixel alpha (num_pixels,) from the pair logits ``sign·d²/σ``."""
    if mode == "prod":
        # log(1 − D) = logsigmoid(−x): no log(0), no NaN, even where D rounds to 1 in float32.
        log_transmittance = logits.new_zeros(num_pixels).index_add(0, pairs.pixel, F.logsigmoid(-logits))
        return -torch.expm1(log_transmittance)
    if mode == "sum":
        return logits.new_zeros(num_pixels).index_add(0, pairs.pixel, torch.sigmoid(logits)) / faces_per_image
    if mode == "hard":
        covered = logits.new_zeros(num_pixels).index_add(0, pairs.pixel, (logits > 0).to(logits.dtype))
        return (covered > 0).to(logits.dtype)
    raise ValueError(f"aggr_alpha must be 'prod', 'sum' or 'hard', got {mode!r}")


def _aggregate_rgb(
    face_vertices: Tensor,
    face_colors: Tensor,
    pairs: PixelFacePairs,
    logits: Tensor,
    num_pixels: int,
    gamma: float,
    near: float,
    far: float,
    eps: float,
    mode: RGBAggregation,
    background: tuple[float, float, float],
    double_sided: bool,
) -> Tensor:
    """Per-pixel RGB (num_pixels, 3)."""
    n = face_vertices.shape[0] * face_vertices.shape[1]
    xy = face_vertices[..., :2].reshape(n, 3, 2)
    with torch.no_grad():
        # Clipped, renormalised barycentrics; constant in the backward, as in SoftRas's kernel.
        inv = barycentric_inverse(xy.detach())[pairs.face]
        w = inv[:, :, 0] * pairs.x[:, None] + inv[:, :, 1] * pairs.y[:, None] + inv[:, :, 2]
        w_bar = w.clamp(0, 1)
        w_bar = w_bar / w_bar.sum(-1, keepdim=True).clamp(min=1e-5)
    corner_z = face_vertices[..., 2].reshape(n, 3)[pairs.face]
    corner_z = torch.where(corner_z >= 0, corner_z.clamp(min=1e-6), corner_z.clamp(max=-1e-6))
    inv_z = (w_bar / corner_z).sum(-1)
    z = 1 / torch.where(inv_z >= 0, inv_z.clamp(min=1e-12), inv_z.clamp(max=-1e-12))  # perspective-correct
    usable = (z >= near) & (z <= far)
    if not double_sided:
        x0, y0 = xy[:, 0, 0], xy[:, 0, 1]
        front = (xy[:, 2, 1] - y0) * (xy[:, 1, 0] - x0) < (xy[:, 1, 1] - y0) * (xy[:, 2, 0] - x0)
        usable &= front.detach()[pairs.face]
    if mode == "hard":
        usable &= ((w >= 0) & (w <= 1)).all(-1)
    idx = usable.nonzero().squeeze(1)
    pixel = pairs.pixel[idx]
    colors = (w_bar[idx, :, None] * face_colors.reshape(n, 3, 3)[pairs.face[idx]]).sum(1)
    bg = face_colors.new_tensor(background)

    if mode == "softmax":
        z_norm = (far - z[idx]) / (far - near)  # in [0, 1], nearer is larger
        # The running max M only shifts the exponents for stability; it cancels from the ratio, so it is detached.
        shift = z_norm.new_full((num_pixels,), eps).scatter_reduce(0, pixel, z_norm.detach(), "amax")
        weight = torch.sigmoid(logits[idx]) * torch.exp((z_norm - shift[pixel]) / gamma)
        # SoftRas starts the sum at exp(eps/γ) with M = eps: the background logit is effectively 2·eps/γ.
        weight_bg = torch.exp((2 * eps - shift) / gamma)
        numerator = (weight_bg[:, None] * bg).index_add(0, pixel, weight[:, None] * colors)
        denominator = weight_bg.index_add(0, pixel, weight)
        return numerator / denominator[:, None]
    if mode == "hard":
        depth = z[idx].detach()
        nearest = depth.new_full((num_pixels,), float("inf")).scatter_reduce(0, pixel, depth, "amin")
        at_min = depth == nearest[pixel]
        face = pairs.face[idx]
        # Ties keep the lowest face index, as the kernel's strict '<' over faces in order does.
        first = face.new_full((num_pixels,), n).scatter_reduce(0, pixel[at_min], face[at_min], "amin")
        winner = (at_min & (face == first[pixel])).nonzero().squeeze(1)
        rgb = bg.expand(num_pixels, 3).clone()
        return rgb.index_put((pixel[winner],), colors[winner])
    raise ValueError(f"aggr_rgb must be 'softmax' or 'hard', got {mode!r}")
