"""The per-cell arithmetic of culling's windows: distances of pixel centres to a chunk's face edges, and which
cells SoftRas's kernel keeps. Pure tensor functions of their arguments, shared by the eager kernels and the
compiled ones (:mod:`recon.render.fused`); the planning that produces their arguments is :mod:`recon.render.culling`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from recon.render.edges import EdgeTable


class EdgeDistances(NamedTuple):
    """One chunk's windows against the three edges, (edge, row, col, face) with faces innermost."""

    table: EdgeTable  # the chunk's faces
    px: Tensor  # (kw, n) pixel-centre x of each column (x_far beyond the face's box)
    py: Tensor  # (kh, n) pixel-centre y of each row (y_far beyond the face's box)
    h: Tensor  # (3, kh, kw, n) signed distance to each edge line, positive inwards
    foot: Tensor  # (3, kh, kw, n) foot point's position along each edge, in [0, length]
    excess: Tensor  # (3, kh, kw, n) how far the pixel lies beyond the edge's ends, along it
    d2: Tensor  # (3, kh, kw, n) squared distance to each edge segment
    h_excess: Tensor  # (2, 3, kh, kw, n): h and excess stacked (they are its two halves)


class Cells(NamedTuple):
    """The culling decision of every cell of one chunk's windows, (row, col, face) with faces innermost.

    Masks are 0/1 floats: on CPU a comparison, ``where`` or ``masked_fill`` on bool tensors costs 5–20× a float
    multiply, so they are built as ``relu(sign(·))`` and applied by multiplication.
    """

    edges: EdgeDistances
    best: Tensor  # (kh, kw, n) squared distance to the closed triangle
    inside: Tensor  # (kh, kw, n) 1 strictly inside the triangle, else 0
    keep: Tensor  # (kh, kw, n) 1 for a pair SoftRas's kernel keeps, 0 for a culled or out-of-box cell


class WindowSlice(NamedTuple):
    """One chunk's slices of :class:`Window`'s per-face tables, the arguments of :func:`window_distances`."""

    table: EdgeTable  # (25, n)
    x0: Tensor  # (n,)
    y0: Tensor
    width: Tensor
    height: Tensor
    x_far: Tensor
    y_far: Tensor
    cols: Tensor  # (kw, 1) 0 … kw − 1
    rows: Tensor  # (kh, 1) 0 … kh − 1
    s: int


def window_distances(
    table: EdgeTable, x0: Tensor, y0: Tensor, width: Tensor, height: Tensor, x_far: Tensor, y_far: Tensor,
    cols: Tensor, rows: Tensor, s: int,
) -> EdgeDistances:
    """Evaluate n faces over their (kh, kw) pixel windows: the distances to every edge.

    Args: the n faces' slices of :class:`Window`'s per-face tables; cols (kw, 1) and rows (kh, 1) the ramps
    0 … k − 1 as floats; s the image side. Pure tensor arithmetic on these arguments (no Python state), so the
    fused kernels of :mod:`recon.render.fused` compile it as it is.

    The distance to each edge segment is ``h² + excess²``: h the signed distance to the edge line and
    excess how far the foot point lies beyond the segment's ends. Both are affine in the pixel position,
    so each is one broadcast sum of a per-column and a per-row term. Tensors are laid out (edge, row, col,
    face) with faces innermost, so every elementwise pass is long and contiguous however small the window is.
    """
    px = torch.where(cols < width, cols * (2 / s) + x0, x_far)  # (kw, n)
    py = torch.where(rows < height, rows * (-2 / s) + y0, y_far)

    # h and u of the three edges at once: (2, 3, kh, kw, n), the normal's map first.
    coef = table.coefficients[..., None, None, :]  # (x/y/c, normal/along, edge, 1, 1, n)
    hu = (coef[0] * px + coef[2]) + coef[1] * py[:, None]
    h, u = hu[0], hu[1]
    foot = torch.minimum(u.relu(), table.length[:, None, None])  # (3, kh, kw, n)
    excess = u.sub_(foot)
    d2 = torch.addcmul(h * h, excess, excess)
    return EdgeDistances(table, px, py, h, foot, excess, d2, hu)


def cull_cells(e: EdgeDistances, threshold: float) -> Cells:
    """The culling decision of every window cell of :func:`window_distances`' result.

    The minimum over the three edges is the distance to the closed triangle, and for an interior pixel the
    distance to the nearest edge line, as SoftRas computes. A cell is kept when it is strictly inside (all
    three h above the face's interior bound) or nearer than √T; cells beyond the face's box lie farther.
    """
    best = e.d2.amin(0)
    inside = (e.h.amin(0) - e.table.interior).sign_().relu_()
    keep = (threshold - best).sign_().relu_()
    keep = torch.maximum(keep, inside, out=keep)
    return Cells(e, best, inside, keep)
