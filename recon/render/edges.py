"""Per-face edge frames: the affine maps pixel → (signed distance to each edge line, position along the edge).

Culling and the silhouette kernel evaluate these maps over every cell of a face's pixel window. The values of
all faces live in one (25, N) table, faces last, so that sorting the faces is one ``index_select``, a chunk of
faces is one slice, and window arithmetic runs along contiguous memory; :class:`EdgeTable` names its parts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

# Row layout of the table. Coefficient rows come first as (x/y/constant, normal/along, edge): one broadcast
# then evaluates both maps of all three edges, and the x and y rows together are the frame's unit vectors.
_COEFFICIENT_ROWS = 18  # 3 coefficients × (normal, along) × 3 edges
_LENGTH = slice(18, 21)
_INV_LENGTH = slice(21, 24)
_INTERIOR = 24


class EdgeTable(NamedTuple):
    """Edge frames of n faces; edge k runs from corner k to corner k + 1 (mod 3). Every view shares ``data``.

    ``value = a·x + b·y + c`` gives, per edge, the signed distance h to the edge line (positive inwards, via the
    inward unit normal) and the position u along it (via the unit direction).
    """

    data: Tensor  # (25, n)

    @property
    def coefficients(self) -> Tensor:
        """(3, 2, 3, n): (a, b, c) × (normal, along) × edge."""
        return self.data[:_COEFFICIENT_ROWS].view(3, 2, 3, -1)

    @property
    def directions(self) -> Tensor:
        """(2, 2, 3, n): axis (x, y) × (inward normal, unit direction) × edge: the frame's unit vectors."""
        return self.data[:12].view(2, 2, 3, -1)

    @property
    def length(self) -> Tensor:
        """(3, n) edge lengths."""
        return self.data[_LENGTH]

    @property
    def inv_length(self) -> Tensor:
        """(3, n) 1/length, 0 for a zero-length edge."""
        return self.data[_INV_LENGTH]

    @property
    def interior(self) -> Tensor:
        """(n,) 0, or +inf for a zero-area face: a pixel is strictly inside when all three h exceed it."""
        return self.data[_INTERIOR]

    def faces(self, lo: int, hi: int) -> EdgeTable:
        """The frames of faces lo … hi − 1."""
        return EdgeTable(self.data[:, lo:hi])


def edge_table(cx: Tensor, cy: Tensor) -> EdgeTable:
    """Edge frames of the faces with corners (cx, cy), each (3, N).

    A zero-length edge gets an arbitrary unit direction, which still measures the distance to its single point
    exactly, and inverse length 0. A zero-area face gets interior +inf: it has no inside (SoftRas's barycentrics
    never lie in (0, 1) there).
    """
    ex, ey = cx.roll(-1, dims=0) - cx, cy.roll(-1, dims=0) - cy  # (3, N)
    length = torch.hypot(ex, ey)
    safe = length.clamp(min=1e-30)
    unit_x = torch.where(length > 0, ex / safe, torch.ones_like(length))
    unit_y = torch.where(length > 0, ey / safe, torch.zeros_like(length))
    det = ex[0] * -ey[2] - ey[0] * -ex[2]  # (p1 − p0) × (p2 − p0)
    orient = torch.where(det < 0, -1.0, 1.0).to(cx.dtype)
    normal_x, normal_y = -unit_y * orient, unit_x * orient
    inv_length = torch.where(length > 0, 1 / safe, torch.zeros_like(length))
    interior = torch.where(det == 0, float("inf"), 0.0).to(cx.dtype)[None]
    data = torch.cat(
        (
            normal_x, unit_x, normal_y, unit_y, -(normal_x * cx + normal_y * cy), -(unit_x * cx + unit_y * cy),
            length, inv_length, interior,
        )
    )
    return EdgeTable(data)

