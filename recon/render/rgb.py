"""RGB of the soft rasterizer: face colours interpolated per (pixel, face) pair and aggregated per pixel.

'softmax' is SoftRas's soft z-buffer, ``Σ D·exp(z_norm/γ)·colour`` over the pairs plus the background, divided
by the same sum of weights; 'hard' takes the nearest face covering the pixel. Barycentrics are clipped and
renormalised and held constant in the backward, as in SoftRas's kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon.render.constants import constant
from recon.render.pairs import PixelFacePairs
from recon.render.settings import RasterSettings

# SoftRas clamps |det| of the barycentric system at 1e-10 (sign kept) so degenerate faces stay finite.
_MIN_DET = 1e-10


def barycentric_inverse(xy: Tensor) -> Tensor:
    """Per-face inverse of the barycentric system, as SoftRas's preprocessing kernel builds it.

    Args:
        xy: (N, 3, 2) screen coordinates of the face corners.

    Returns:
        (N, 3, 3) ``inv`` with ``w_k(x, y) = inv[k]·(x, y, 1)``; det is clamped away from 0 with its sign kept,
        so degenerate faces give huge (never inside) barycentrics instead of inf/NaN.
    """
    x0, x1, x2 = xy[:, 0, 0], xy[:, 1, 0], xy[:, 2, 0]
    y0, y1, y2 = xy[:, 0, 1], xy[:, 1, 1], xy[:, 2, 1]
    det = x2 * (y0 - y1) + x0 * (y1 - y2) + x1 * (y2 - y0)
    det = torch.where(det > 0, det.clamp(min=_MIN_DET), det.clamp(max=-_MIN_DET))
    adj = torch.stack(
        (
            torch.stack((y1 - y2, x2 - x1, x1 * y2 - x2 * y1), -1),
            torch.stack((y2 - y0, x0 - x2, x2 * y0 - x0 * y2), -1),
            torch.stack((y0 - y1, x1 - x0, x0 * y1 - x1 * y0), -1),
        ),
        dim=1,
    )
    return adj / det[:, None, None]


def aggregate_rgb(
    face_vertices: Tensor, face_colors: Tensor, pairs: PixelFacePairs, logits: Tensor, settings: RasterSettings
) -> Tensor:
    """Per-pixel RGB, (B·S·S, 3).

    Args:
        face_vertices: (B, F, 3, 3) projected corners (x_ndc, y_ndc, z_view). face_colors: (B, F, 3, 3) RGB per
        corner. pairs: the kept pairs. logits: (P,) ``sign·d²/σ`` of the pairs.
    """
    b, f = face_vertices.shape[:2]
    n, num_pixels = b * f, b * settings.image_size**2
    near, far, eps, gamma = settings.near, settings.far, settings.eps, settings.gamma
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
    if not settings.double_sided:
        x0, y0 = xy[:, 0, 0], xy[:, 0, 1]
        front = (xy[:, 2, 1] - y0) * (xy[:, 1, 0] - x0) < (xy[:, 1, 1] - y0) * (xy[:, 2, 0] - x0)
        usable &= front.detach()[pairs.face]
    if settings.aggr_rgb == "hard":
        usable &= ((w >= 0) & (w <= 1)).all(-1)
    idx = usable.nonzero().squeeze(1)
    pixel = pairs.pixel[idx]
    colors = (w_bar[idx, :, None] * face_colors.reshape(n, 3, 3)[pairs.face[idx]]).sum(1)
    bg = constant(settings.background, face_colors.device, face_colors.dtype)

    if settings.aggr_rgb == "softmax":
        z_norm = (far - z[idx]) / (far - near)  # in [0, 1], nearer is larger
        # The running max M only shifts the exponents for stability; it cancels from the ratio, so it is detached.
        shift = z_norm.new_full((num_pixels,), eps).scatter_reduce(0, pixel, z_norm.detach(), "amax")
        weight = torch.sigmoid(logits[idx]) * torch.exp((z_norm - shift[pixel]) / gamma)
        # SoftRas starts the sum at exp(eps/γ) with M = eps: the background logit is effectively 2·eps/γ.
        weight_bg = torch.exp((2 * eps - shift) / gamma)
        numerator = (weight_bg[:, None] * bg).index_add(0, pixel, weight[:, None] * colors)
        denominator = weight_bg.index_add(0, pixel, weight)
        return numerator / denominator[:, None]
    # 'hard' (the settings allow nothing else)
    depth = z[idx].detach()
    nearest = depth.new_full((num_pixels,), float("inf")).scatter_reduce(0, pixel, depth, "amin")
    at_min = depth == nearest[pixel]
    face = pairs.face[idx]
    # Ties keep the lowest face index, as the kernel's strict '<' over faces in order does.
    first = face.new_full((num_pixels,), n).scatter_reduce(0, pixel[at_min], face[at_min], "amin")
    winner = (at_min & (face == first[pixel])).nonzero().squeeze(1)
    rgb = bg.expand(num_pixels, 3).clone()
    return rgb.index_put((pixel[winner],), colors[winner])
