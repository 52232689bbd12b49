"""The (pixel, face) pairs that survive culling, as flat lists: what the RGB path of the rasterizer works on.

The pairs are read off culling's window cells (:meth:`recon.render.culling.Window.cells`): every kept cell is a
pair, with the nearest edge and the foot point on it that SoftRas's backward needs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from recon.render.culling import Chunk, Window, plan_windows


class PixelFacePairs(NamedTuple):
    """The (pixel, face) pairs that survive culling; P pairs, as flat (P,) tensors.

    face: int64 index into the flattened (B·F) faces. pixel: int64 index into the flattened (B·H·W) pixels.
    inside: bool, strictly inside the triangle. corner_a, corner_b: int64 indices into the flattened (B·F·3)
    face corners of the edge nearest to the pixel (corners k and k+1 mod 3 of the face). t: foot-point parameter
    in [0, 1] on that edge, ``q = (1 − t)·p_a + t·p_b``. x, y: the pixel centre in NDC.
    """

    face: Tensor
    pixel: Tensor
    inside: Tensor
    corner_a: Tensor
    corner_b: Tensor
    t: Tensor
    x: Tensor
    y: Tensor


def find_pairs(xy: Tensor, faces_per_image: int, image_size: int, threshold: float) -> PixelFacePairs:
    """All (pixel, face) pairs SoftRas's Euclidean kernel does not cull.

    Args:
        xy: (N, 3, 2) NDC corners of the N = B·F faces (image b owns faces b·F … b·F + F − 1).
        faces_per_image: F. image_size: S (square images).
        threshold: T, :attr:`recon.render.RasterSettings.culling_threshold`.

    Returns:
        :class:`PixelFacePairs` in a deterministic order. Computed without gradients: the differentiable
        distances are re-evaluated on these pairs by :func:`recon.render.rasterize.signed_squared_distance`.
    """
    with torch.no_grad():
        plan = plan_windows(xy, faces_per_image, image_size, threshold)
        found = [chunk_pairs(plan.window, chunk) for chunk in plan.chunks]
        if not found:
            empty = xy.new_zeros(0, dtype=torch.long)
            nothing = xy.new_zeros(0)
            return PixelFacePairs(empty, empty, empty.bool(), empty, empty, nothing, nothing, nothing)
        return PixelFacePairs(*(torch.cat(parts) for parts in zip(*found, strict=True)))


def chunk_pairs(window: Window, chunk: Chunk) -> PixelFacePairs:
    """The kept (pixel, face) pairs of one chunk of culling's plan."""
    kw = chunk.kw
    c = window.cells(chunk)
    e = c.edges
    n = chunk.hi - chunk.lo
    idx_h, idx_w, idx_n = c.keep.nonzero(as_tuple=True)
    # One nonzero, then flat index_select: boolean masking would search the mask again for every output.
    flat = (idx_h * kw + idx_w) * n + idx_n
    # The nearest edge, lowest index on ties, only where a pair was kept: explicit selects on the P pairs.
    cells = c.keep.numel()
    d2 = e.d2.view(-1)
    d2_0, d2_1, d2_2 = (d2.index_select(0, flat + k * cells) for k in range(3))
    closer = d2_1 < d2_0
    edge = closer.long()
    edge.masked_fill_(d2_2 < torch.where(closer, d2_1, d2_0), 2)
    on_edge = edge * n + idx_n
    t = e.foot.view(-1).index_select(0, edge * cells + flat)
    t = (t * e.table.inv_length.reshape(-1).index_select(0, on_edge)).clamp_(0, 1)
    face = chunk.faces.index_select(0, idx_n)
    corner_a = face * 3 + edge
    return PixelFacePairs(
        face,
        window.origin[chunk.lo : chunk.hi].index_select(0, idx_n) + idx_h * window.s + idx_w,
        c.inside.view(-1).index_select(0, flat) > 0,
        corner_a,
        corner_a + torch.where(edge == 2, -2, 1),
        t,
        e.px.view(-1).index_select(0, idx_w * n + idx_n),
        e.py.view(-1).index_select(0, idx_h * n + idx_n),
    )
