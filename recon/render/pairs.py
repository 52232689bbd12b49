"""Culling for the soft rasterizer: the (pixel, face) pairs that can contribute, found without the dense product.

SoftRas's kernel visits every face for every pixel and drops a pair when the pixel lies outside the triangle
and its squared NDC distance to it is at least ``T = σ·ln(1/dist_eps − 1)`` (then ``D ≤ dist_eps``). Here each
face only visits the pixels inside its bounding box grown by ``√T``: faces are grouped by box size into a few
buckets, and each bucket is evaluated as a dense (faces, rows, cols) window, which needs no gather and only
broadcasts per-face constants. The surviving pairs keep exactly the pairs the kernel keeps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# Window sizes (pixels) of the face buckets: a face whose grown box is h×w pixels is evaluated in the smallest
# window of these sizes that holds it. Fine steps keep the wasted window area small for the common tiny faces.
_WINDOW_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

# Cells evaluated at once: bounds the transient memory of culling (about 20 float tensors of this size).
_MAX_CELLS = 1 << 21

# SoftRas clamps |det| of the barycentric system at 1e-10 (sign kept) so degenerate faces stay finite.
_MIN_DET = 1e-10


class PixelFacePairs(NamedTuple):
    """The (pixel, face) pairs that survive culling; P pairs.

    face: (P,) int64 index into the flattened (B·F) faces. pixel: (P,) int64 index into the flattened (B·H·W)
    pixels. inside: (P,) bool, strictly inside the triangle (all barycentrics in (0, 1)). edge: (P,) int64,
    the edge k = (k, k+1 mod 3) nearest to the pixel. t: (P,) foot-point parameter in [0, 1] on that edge,
    ``q = (1 − t)·p_k + t·p_{k+1}``. pixel_xy: (P, 2) the pixel centre in NDC.
    """

    face: Tensor
    pixel: Tensor
    inside: Tensor
    edge: Tensor
    t: Tensor
    pixel_xy: Tensor


def culling_threshold(sigma: float, dist_eps: float) -> float:
    """``T = σ·ln(1/dist_eps − 1)``: the squared NDC distance at which ``D = sigmoid(−T/σ) = dist_eps``."""
    return sigma * math.log(1.0 / dist_eps - 1.0)


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


def find_pairs(xy: Tensor, faces_per_image: int, image_size: int, threshold: float) -> PixelFacePairs:
    """All (pixel, face) pairs SoftRas's Euclidean kernel does not cull.

    Args:
        xy: (N, 3, 2) NDC corners of the N = B·F faces (image b owns faces b·F … b·F + F − 1).
        faces_per_image: F. image_size: S (square images). threshold: T from :func:`culling_threshold`.

    Returns:
        :class:`PixelFacePairs` in a deterministic order. Computed without gradients: the differentiable distances are
        re-evaluated on these pairs by :func:`recon.render.rasterize.signed_squared_distance`.
    """
    with torch.no_grad():
        xy = xy.detach()
        s = image_size
        radius = math.sqrt(threshold)
        lo, hi = xy.amin(dim=1), xy.amax(dim=1)  # (N, 2)
        # Pixel centre c has x = (2c + 1 − S)/S; row r has y = (S − 1 − 2r)/S (row 0 at the top).
        c_lo = ((lo[:, 0] - radius) * s + s - 1) / 2
        c_hi = ((hi[:, 0] + radius) * s + s - 1) / 2
        r_lo = (s - 1 - (hi[:, 1] + radius) * s) / 2
        r_hi = (s - 1 - (lo[:, 1] - radius) * s) / 2
        # Clamp in floating point before converting: huge coordinates (faces at the eye) must not overflow.
        c_lo = c_lo.nan_to_num(s).clamp(0, s).ceil().long()
        c_hi = c_hi.nan_to_num(-1).clamp(-1, s - 1).floor().long()
        r_lo = r_lo.nan_to_num(s).clamp(0, s).ceil().long()
        r_hi = r_hi.nan_to_num(-1).clamp(-1, s - 1).floor().long()
        width, height = c_hi - c_lo + 1, r_hi - r_lo + 1

        sizes = torch.tensor(_WINDOW_SIZES, device=xy.device)
        bucket_w = torch.bucketize(width, sizes)
        bucket_h = torch.bucketize(height, sizes)
        visible = (width > 0) & (height > 0)
        key = (bucket_h * len(_WINDOW_SIZES) + bucket_w).masked_fill(~visible, -1)

        edges = xy.roll(-1, dims=1) - xy  # edge k runs from corner k to corner k+1
        len2 = (edges * edges).sum(-1)
        inv_len2 = torch.where(len2 > 0, 1 / len2.clamp(min=1e-30), torch.zeros_like(len2))
        lines = _edge_frames(xy, edges, len2)

        found: list[tuple[Tensor, ...]] = []
        for k in key.unique().tolist():
            if k < 0:
                continue
            members = (key == k).nonzero().squeeze(1)
            kh, kw = _WINDOW_SIZES[k // len(_WINDOW_SIZES)], _WINDOW_SIZES[k % len(_WINDOW_SIZES)]
            step = max(1, _MAX_CELLS // (kh * kw))
            for chunk in members.split(step):
                found.append(
                    _window_pairs(chunk, kh, kw, lines, c_lo, r_lo, width, height, s, threshold)
                )
        if not found:
            empty = xy.new_zeros(0, dtype=torch.long)
            return PixelFacePairs(empty, empty, empty.bool(), empty, xy.new_zeros(0), xy.new_zeros(0, 2))
        face, row, col, inside, edge = (torch.cat(parts) for parts in zip(*found, strict=True))

        pixel_xy = torch.stack(((2 * col + 1 - s).to(xy.dtype) / s, (s - 1 - 2 * row).to(xy.dtype) / s), -1)
        corner = face * 3 + edge
        a = xy.reshape(-1, 2).index_select(0, corner)
        e = edges.reshape(-1, 2).index_select(0, corner)
        t = (((pixel_xy - a) * e).sum(-1) * inv_len2.reshape(-1).index_select(0, corner)).clamp(0, 1)
        pixel = (face // faces_per_image) * (s * s) + row * s + col
        return PixelFacePairs(face, pixel, inside, edge, t, pixel_xy)


def _edge_frames(xy: Tensor, edges: Tensor, len2: Tensor) -> tuple[Tensor, ...]:
    """Per face and edge, the affine maps pixel → (signed distance to the edge line, position along the edge).

    Returns (normal, along, length, interior_threshold): normal and along (N, 3, 3) hold (a, b, c) with
    value = a·x + b·y + c; the normal points into the triangle, so a point is strictly inside when all three
    normal distances are > 0. A zero-length edge gets an arbitrary unit direction, which still measures the
    distance to its single point exactly. interior_threshold (N,) is 0, or +inf for a zero-area face, which
    has no inside (SoftRas's barycentrics never lie in (0, 1) there).
    """
    length = len2.sqrt()
    unit_x = torch.where(length > 0, edges[..., 0] / length.clamp(min=1e-30), torch.ones_like(length))
    unit_y = torch.where(length > 0, edges[..., 1] / length.clamp(min=1e-30), torch.zeros_like(length))
    det = (edges[:, 0, 0] * -edges[:, 2, 1]) - (edges[:, 0, 1] * -edges[:, 2, 0])  # (p1 − p0) × (p2 − p0)
    orient = torch.where(det < 0, -1.0, 1.0).to(xy.dtype)[:, None]
    normal_x, normal_y = -unit_y * orient, unit_x * orient
    px, py = xy[..., 0], xy[..., 1]
    normal = torch.stack((normal_x, normal_y, -(normal_x * px + normal_y * py)), -1)
    along = torch.stack((unit_x, unit_y, -(unit_x * px + unit_y * py)), -1)
    interior_threshold = torch.where(det == 0, float("inf"), 0.0).to(xy.dtype)
    return normal, along, length, interior_threshold


def _window_pairs(
    members: Tensor,
    kh: int,
    kw: int,
    lines: tuple[Tensor, ...],
    c_lo: Tensor,
    r_lo: Tensor,
    width: Tensor,
    height: Tensor,
    s: int,
    threshold: float,
) -> tuple[Tensor, ...]:
    """Evaluate one bucket of faces over their (kh, kw) pixel windows; return the surviving pairs.

    The distance to each edge segment is ``h² + excess²``: h the signed distance to the edge line and excess how
    far the foot point lies beyond the segment's ends. Both are affine in the pixel position, so each is one
    broadcast sum of a per-column and a per-row term; the minimum over the three edges is the distance to the
    closed triangle, and for an interior pixel it is the distance to the nearest edge line, as SoftRas computes.
    """
    normal, along, length, interior_threshold = (x[members] for x in lines)
    dtype = normal.dtype
    ar_w = torch.arange(kw, device=members.device)
    ar_h = torch.arange(kh, device=members.device)
    cols = c_lo[members, None] + ar_w  # (n, kw)
    rows = r_lo[members, None] + ar_h  # (n, kh)
    px = ((2 * cols + 1 - s).to(dtype) / s)[:, None, None, :]  # (n, 1, 1, kw)
    py = ((s - 1 - 2 * rows).to(dtype) / s)[:, None, :, None]  # (n, 1, kh, 1)
    valid = (ar_w < width[members, None])[:, None, :] & (ar_h < height[members, None])[:, :, None]

    # (n, 3, kh, kw): all three edges at once.
    h = (normal[..., 0, None, None] * px + normal[..., 2, None, None]) + normal[..., 1, None, None] * py
    u = (along[..., 0, None, None] * px + along[..., 2, None, None]) + along[..., 1, None, None] * py
    excess = u - torch.minimum(u.clamp(min=0), length[..., None, None])
    d2 = torch.addcmul(h * h, excess, excess)
    best, edge = d2.min(dim=1)
    inside = h.amin(dim=1) > interior_threshold[:, None, None]
    keep = valid & (inside | (best < threshold))
    idx_n, idx_h, idx_w = keep.nonzero(as_tuple=True)
    # Boolean masking is one pass; indexing with three index tensors would be several times slower.
    return (
        members.index_select(0, idx_n),
        r_lo.index_select(0, members).index_select(0, idx_n) + idx_h,
        c_lo.index_select(0, members).index_select(0, idx_n) + idx_w,
        inside[keep],
        edge[keep],
    )
