"""A slow, literal soft rasterizer: every pixel against every face, SoftRas's formulas written out directly.

It exists to check :func:`recon.render.soft_rasterize` (tests) and to measure what culling buys (benchmarks).
Memory is B·S²·F per tensor: keep it to small images or few faces.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recon.render.settings import RasterSettings, resolve_settings


def dense_soft_rasterize(
    face_vertices: Tensor,
    face_colors: Tensor | None = None,
    settings: RasterSettings | None = None,
    cull: bool = True,
    **overrides: Any,
) -> Tensor:
    """Same contract as :func:`recon.render.soft_rasterize`; ``cull=False`` keeps every pair (D unclamped)."""
    settings = resolve_settings(settings, overrides)
    sigma, gamma, dist_eps, near, far, eps = (
        settings.sigma, settings.gamma, settings.dist_eps, settings.near, settings.far, settings.eps
    )
    b, f = face_vertices.shape[:2]
    s = settings.image_size
    dtype = face_vertices.dtype
    idx = torch.arange(s, dtype=dtype, device=face_vertices.device)
    py, px = torch.meshgrid((s - 1 - 2 * idx) / s, (2 * idx + 1 - s) / s, indexing="ij")
    p = torch.stack((px, py), -1).reshape(1, s * s, 1, 2)  # (1, P, 1, 2)
    corners = face_vertices[:, None, :, :, :2]  # (B, 1, F, 3, 2)

    # Barycentrics from the clamped-determinant inverse, exactly as the preprocessing kernel.
    x0, x1, x2 = (corners[..., k, 0] for k in range(3))
    y0, y1, y2 = (corners[..., k, 1] for k in range(3))
    det = x2 * (y0 - y1) + x0 * (y1 - y2) + x1 * (y2 - y0)
    det = torch.where(det > 0, det.clamp(min=1e-10), det.clamp(max=-1e-10))
    x, y = p[..., 0], p[..., 1]
    w = torch.stack(
        (
            ((y1 - y2) * x + (x2 - x1) * y + (x1 * y2 - x2 * y1)) / det,
            ((y2 - y0) * x + (x0 - x2) * y + (x2 * y0 - x0 * y2)) / det,
            ((y0 - y1) * x + (x1 - x0) * y + (x0 * y1 - x1 * y0)) / det,
        ),
        -1,
    )  # (B, P, F, 3)
    inside = ((w > 0) & (w < 1)).all(-1)

    # Squared distance to the closed triangle: the nearest of the three segments.
    d2 = None
    for k in range(3):
        a, c = corners[..., k, :], corners[..., (k + 1) % 3, :]
        e = c - a
        len2 = (e * e).sum(-1)
        t = torch.where(len2 > 0, ((p - a) * e).sum(-1) / len2.clamp(min=1e-30), torch.zeros_like(len2))
        q = a + t.clamp(0, 1)[..., None] * e
        dk = ((q - p) ** 2).sum(-1)
        d2 = dk if d2 is None else torch.minimum(d2, dk)
    sign = torch.where(inside, 1.0, -1.0).to(dtype)
    threshold = sigma * torch.log(torch.tensor(1.0 / dist_eps - 1.0, dtype=torch.float64)).item()
    alive = inside | (d2 < threshold) if cull else torch.ones_like(inside)
    prob = torch.where(alive, torch.sigmoid(sign * d2 / sigma), torch.zeros_like(d2))  # (B, P, F)

    if settings.aggr_alpha == "prod":
        alpha = 1 - torch.prod(1 - prob, dim=-1)
    elif settings.aggr_alpha == "sum":
        alpha = prob.sum(-1) / f
    else:
        alpha = (prob > 0.5).any(-1).to(dtype)
    alpha = alpha.reshape(b, 1, s, s)
    if face_colors is None:
        return alpha
    face_colors = face_colors.expand(b, f, 3, 3)  # one colour per face (B, F, 1, 3) is that colour at each corner

    w_bar = w.detach().clamp(0, 1)
    w_bar = w_bar / w_bar.sum(-1, keepdim=True).clamp(min=1e-5)
    zk = face_vertices[:, None, :, :, 2]
    zk = torch.where(zk >= 0, zk.clamp(min=1e-6), zk.clamp(max=-1e-6))
    inv_z = (w_bar / zk).sum(-1)
    z = 1 / torch.where(inv_z >= 0, inv_z.clamp(min=1e-12), inv_z.clamp(max=-1e-12))
    usable = alive & (z >= near) & (z <= far)
    if not settings.double_sided:
        front = (y2 - y0) * (x1 - x0) < (y1 - y0) * (x2 - x0)
        usable = usable & front
    colors = (w_bar[..., None] * face_colors[:, None]).sum(-2)  # (B, P, F, 3)
    bg = face_vertices.new_tensor(settings.background)
    if settings.aggr_rgb == "softmax":
        z_norm = (far - z) / (far - near)
        shift = torch.where(usable, z_norm, torch.full_like(z_norm, -1.0)).amax(-1, keepdim=True).clamp(min=eps)
        weight = torch.where(usable, prob * torch.exp((z_norm - shift.detach()) / gamma), torch.zeros_like(z))
        weight_bg = torch.exp((2 * eps - shift.detach()) / gamma)
        rgb = ((weight[..., None] * colors).sum(-2) + weight_bg * bg) / (weight.sum(-1, keepdim=True) + weight_bg)
    else:
        covering = usable & ((w >= 0) & (w <= 1)).all(-1)
        depth = torch.where(covering, z.detach(), torch.full_like(z, float("inf")))
        first = depth.argmin(-1)  # argmin returns the lowest index among ties, as the kernel's strict '<'
        chosen = colors.gather(2, first[..., None, None].expand(-1, -1, 1, 3)).squeeze(2)
        rgb = torch.where(covering.any(-1, keepdim=True), chosen, bg.expand_as(chosen))
    return torch.cat((rgb.reshape(b, s, s, 3).permute(0, 3, 1, 2), alpha), dim=1)
