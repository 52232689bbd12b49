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

# Cells evaluated at once. Small enough that the (3, cells) temporaries stay in cache and are recycled by the
# allocator instead of being mapped fresh (page faults): on a 2-core machine each pass then costs ~1 ns per cell
# instead of ~8.
_MAX_CELLS = 1 << 16

# The fixed cost of one chunk (a few dozen tensor operations, each ~5–10 µs of dispatch and thread start-up),
# in window cells of evaluation work (~5 ns each on one CPU core): buckets smaller than this are merged.
_CHUNK_COST = 1 << 13

# SoftRas clamps |det| of the barycentric system at 1e-10 (sign kept) so degenerate faces stay finite.
_MIN_DET = 1e-10


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


def plan_windows(xy: Tensor, faces_per_image: int, image_size: int, threshold: float) -> WindowPlan:
    """Group the faces into buckets of equal window size; see :class:`WindowPlan`.

    Args:
        xy: (N, 3, 2) NDC corners of the N = B·F faces (image b owns faces b·F … b·F + F − 1).
        faces_per_image: F. image_size: S (square images). threshold: T from :func:`culling_threshold`.
    """
    with torch.no_grad():
        # Corners as (3, N) rows: every per-face computation below runs along long contiguous rows.
        cx = xy[..., 0].detach().t().contiguous()
        cy = xy[..., 1].detach().t().contiguous()
        s = image_size
        radius = math.sqrt(threshold)
        # Pixel centre c has x = (2c + 1 − S)/S; row r has y = (S − 1 − 2r)/S (row 0 at the top).
        c_lo = ((cx.amin(0) - radius) * s + s - 1) / 2
        c_hi = ((cx.amax(0) + radius) * s + s - 1) / 2
        r_lo = (s - 1 - (cy.amax(0) + radius) * s) / 2
        r_hi = (s - 1 - (cy.amin(0) - radius) * s) / 2
        # Clamp in floating point before converting: huge coordinates (faces at the eye) must not overflow.
        c_lo = c_lo.nan_to_num(s).clamp(0, s).ceil().long()
        c_hi = c_hi.nan_to_num(-1).clamp(-1, s - 1).floor().long()
        r_lo = r_lo.nan_to_num(s).clamp(0, s).ceil().long()
        r_hi = r_hi.nan_to_num(-1).clamp(-1, s - 1).floor().long()
        width, height = c_hi - c_lo + 1, r_hi - r_lo + 1

        # Sort the faces by window size once, so that every chunk below is a contiguous slice of the per-face
        # tables (no gathers per chunk).
        # Window size index of every box side, by table lookup: bucketize costs ~25 ns a face on CPU.
        fits = torch.bucketize(torch.arange(s + 1, device=xy.device), torch.tensor(_WINDOW_SIZES, device=xy.device))
        key = fits[height.clamp(0, s)] * len(_WINDOW_SIZES) + fits[width.clamp(0, s)]
        key = key.masked_fill((width <= 0) | (height <= 0), -1)
        key, order = torch.sort(key, stable=True)
        keys, counts = torch.unique_consecutive(key, return_counts=True)
        image = torch.div(order, faces_per_image, rounding_mode="floor")
        c_lo, r_lo = c_lo.index_select(0, order), r_lo.index_select(0, order)
        cx, cy = cx.index_select(1, order), cy.index_select(1, order)
        # Window cells beyond a face's box get a pixel centre this far out: farther than √T from the face and
        # outside it, so they are culled by the same test as every other cell (and never index a wrong pixel).
        x_far = cx.amax(0).nan_to_num(0, 0, 0).abs() * 2 + 2 * radius + 2
        y_far = -cy.amin(0).nan_to_num(0, 0, 0).abs() * 2 - 2 * radius - 2
        dtype = cx.dtype
        window = _Window(
            frames=_edge_frames(cx, cy),
            origin=image * (s * s) + r_lo * s + c_lo,  # the first pixel of each window, flat in (B·S·S)
            x0=(2 * c_lo + 1 - s).to(dtype) / s,
            y0=(s - 1 - 2 * r_lo).to(dtype) / s,
            width=width.index_select(0, order).to(dtype),
            height=height.index_select(0, order).to(dtype),
            x_far=x_far,
            y_far=y_far,
            s=s,
            threshold=threshold,
            ramps={},
        )
        chunks: list[Chunk] = []
        for start, end, kh, kw in _merge_buckets(keys.tolist(), counts.tolist()):
            # Equal chunks of at most _MAX_CELLS cells: no small remainder chunk.
            parts = -(-(end - start) * kh * kw // _MAX_CELLS)
            bounds = [start + (end - start) * i // parts for i in range(parts + 1)]
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                chunks.append(Chunk(order[lo:hi], lo, hi, kh, kw))
        return WindowPlan(window, order, chunks)


def _merge_buckets(keys: list[int], counts: list[int]) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive window-size buckets evaluated together: (start, end, kh, kw) in sorted positions.

    A bucket joins the run before it, in the run's largest window, when the extra window cells cost less than
    evaluating it on its own (:data:`_CHUNK_COST` cells). Small batches have many nearly empty buckets; each
    would otherwise pay a chunk's few dozen tensor operations for a handful of faces.
    """
    runs: list[tuple[int, int, int, int]] = []
    end = 0
    for k, count in zip(keys, counts, strict=True):
        start, end = end, end + count
        if k < 0:  # faces with an empty box (off screen)
            continue
        kh, kw = _WINDOW_SIZES[k // len(_WINDOW_SIZES)], _WINDOW_SIZES[k % len(_WINDOW_SIZES)]
        if runs and runs[-1][1] == start:
            r_start, _, r_h, r_w = runs[-1]
            h, w = max(r_h, kh), max(r_w, kw)
            merged = (end - r_start) * h * w
            apart = (start - r_start) * r_h * r_w + count * kh * kw + _CHUNK_COST
            if merged <= apart:
                runs[-1] = (r_start, end, h, w)
                continue
        runs.append((start, end, kh, kw))
    return runs


class Chunk(NamedTuple):
    """Faces evaluated together: positions lo … hi − 1 of the sorted per-face tables, all in (kh, kw) windows."""

    faces: Tensor  # (hi − lo,) their indices into the N = B·F faces
    lo: int
    hi: int
    kh: int
    kw: int


class WindowPlan(NamedTuple):
    """Culling's work list: the faces sorted by window size and cut into chunks.

    Every face with a non-empty box is in exactly one chunk; a chunk holds at most ``_MAX_CELLS`` cells
    (window pixels × faces), so the per-cell temporaries of one chunk stay in cache.
    """

    window: _Window  # per-face tables in sorted order
    order: Tensor  # (N,) face index at each sorted position
    chunks: list[Chunk]


def find_pairs(xy: Tensor, faces_per_image: int, image_size: int, threshold: float) -> PixelFacePairs:
    """All (pixel, face) pairs SoftRas's Euclidean kernel does not cull.

    Args:
        xy: (N, 3, 2) NDC corners of the N = B·F faces (image b owns faces b·F … b·F + F − 1).
        faces_per_image: F. image_size: S (square images). threshold: T from :func:`culling_threshold`.

    Returns:
        :class:`PixelFacePairs` in a deterministic order. Computed without gradients: the differentiable
        distances are re-evaluated on these pairs by :func:`recon.render.rasterize.signed_squared_distance`.
    """
    with torch.no_grad():
        plan = plan_windows(xy, faces_per_image, image_size, threshold)
        found = [plan.window.pairs(chunk) for chunk in plan.chunks]
        if not found:
            empty = xy.new_zeros(0, dtype=torch.long)
            nothing = xy.new_zeros(0)
            return PixelFacePairs(empty, empty, empty.bool(), empty, empty, nothing, nothing, nothing)
        return PixelFacePairs(*(torch.cat(parts) for parts in zip(*found, strict=True)))


# Rows of the per-face table built by _edge_frames; each block holds the 3 edges.
# The x, y and constant coefficients each hold the normal's 3 rows then the direction's 3 rows, so that one
# broadcast evaluates both maps for all three edges.
# Rows 0–5: x coefficients, 6–11: y coefficients (the directions, as (axis, normal/along, edge) = _DIRECTIONS),
# 12–17: constants (all coefficients, as (x/y/c, normal/along, edge) = _COEFFICIENTS), then lengths.
_DIRECTIONS, _COEFFICIENTS = 12, 18
_LENGTH, _INV_LENGTH, _INTERIOR = 18, 21, 24


def _edge_frames(cx: Tensor, cy: Tensor) -> Tensor:
    """Per face and edge, the affine maps pixel → (signed distance to the edge line, position along the edge).

    Args: cx, cy: (3, N) corner coordinates.

    Returns a (25, N) table, faces last so window arithmetic runs along contiguous memory: for each quantity a
    block of 3 rows (edges k = corner k → corner k+1): the inward unit normal (x, y, offset) and the unit
    direction (x, y, offset), so that ``value = a·x + b·y + c``; the edge length and its inverse (0 for a
    zero-length edge). A zero-length edge gets an arbitrary unit direction, which still measures the distance to
    its single point exactly. The last row is 0, or +inf for a zero-area face, which has no inside (SoftRas's
    barycentrics never lie in (0, 1) there): a pixel is inside when all normal distances exceed it.
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
    return torch.cat(
        (
            normal_x, unit_x, normal_y, unit_y, -(normal_x * cx + normal_y * cy), -(unit_x * cx + unit_y * cy),
            length, inv_length, interior,
        )
    )


class _Window(NamedTuple):
    """Per-face tables of one :func:`plan_windows` call, in its sorted order (see :class:`WindowPlan`)."""

    frames: Tensor  # (25, N), see _edge_frames
    origin: Tensor  # (N,) flat pixel index of the window's top-left pixel
    x0: Tensor  # (N,) x of the window's first column (pixel centres, NDC)
    y0: Tensor  # (N,) y of the window's first row
    width: Tensor  # (N,) columns the face may touch, as a float
    height: Tensor  # (N,) rows the face may touch, as a float
    x_far: Tensor  # (N,) x of window columns beyond the box: farther than √T right of the face
    y_far: Tensor  # (N,) y of window rows beyond the box: farther than √T below the face
    s: int
    threshold: float
    ramps: dict[int, Tensor]  # k → (k, 1) float 0 … k − 1, shared by the chunks

    def ramp(self, k: int) -> Tensor:
        if k not in self.ramps:
            self.ramps[k] = torch.arange(k, device=self.x0.device, dtype=self.x0.dtype)[:, None]
        return self.ramps[k]

    def distances(self, chunk: Chunk) -> EdgeDistances:
        """Evaluate one chunk of faces over their (kh, kw) pixel windows: the distances to every edge.

        The distance to each edge segment is ``h² + excess²``: h the signed distance to the edge line and
        excess how far the foot point lies beyond the segment's ends. Both are affine in the pixel position,
        so each is one broadcast sum of a per-column and a per-row term; the minimum over the three edges is
        the distance to the closed triangle, and for an interior pixel the distance to the nearest edge line,
        as SoftRas computes. Tensors are laid out (edge, row, col, face) with faces innermost, so every
        elementwise pass is long and contiguous however small the window is.
        """
        lo, hi, n = chunk.lo, chunk.hi, chunk.hi - chunk.lo
        f = self.frames[:, lo:hi]  # (25, n)
        cols, rows = self.ramp(chunk.kw), self.ramp(chunk.kh)
        px = torch.where(cols < self.width[lo:hi], cols * (2 / self.s) + self.x0[lo:hi], self.x_far[lo:hi])  # (kw, n)
        py = torch.where(rows < self.height[lo:hi], rows * (-2 / self.s) + self.y0[lo:hi], self.y_far[lo:hi])

        # h and u of the three edges at once: (2, 3, kh, kw, n), the normal's map first.
        coef = f[:_COEFFICIENTS].view(3, 2, 3, 1, 1, n)
        hu = (coef[0] * px + coef[2]) + coef[1] * py[:, None]
        h, u = hu[0], hu[1]
        foot = torch.minimum(u.relu(), f[_LENGTH : _LENGTH + 3, None, None])  # (3, kh, kw, n)
        excess = u.sub_(foot)
        d2 = torch.addcmul(h * h, excess, excess)
        return EdgeDistances(f, px, py, h, foot, excess, d2, hu)

    def cells(self, chunk: Chunk) -> Cells:
        """:meth:`distances` plus the nearest edge, inside and the culling decision for every window cell."""
        e = self.distances(chunk)
        h, d2 = e.h, e.d2
        inside = h.amin(0) > e.frames[_INTERIOR]
        # The nearest edge, lowest index on ties; explicit selects are ~15× cheaper than min(dim=0) with indices.
        closer = d2[1] < d2[0]
        best = torch.where(closer, d2[1], d2[0])  # (kh, kw, n)
        edge = closer.to(torch.uint8)
        closer = d2[2] < best
        best = torch.where(closer, d2[2], best)
        edge.masked_fill_(closer, 2)
        keep = inside | (best < self.threshold)
        return Cells(e.frames, e.px, e.py, h, e.foot, e.excess, best, edge, inside, keep)

    def pixels(self, chunk: Chunk) -> Tensor:
        """(kh, kw, n) flat pixel index of every window cell; cells beyond the face's box may point anywhere
        inside ``[0, B·S² + pad)`` with ``pad = kh·S + kw`` (give them zero weight)."""
        key = -(chunk.kh * 4096 + chunk.kw)  # negative keys: pixel offsets, beside the ramps
        if key not in self.ramps:
            ar_h = torch.arange(chunk.kh, device=self.origin.device)
            self.ramps[key] = (ar_h[:, None] * self.s + torch.arange(chunk.kw, device=self.origin.device))[..., None]
        return self.origin[chunk.lo : chunk.hi] + self.ramps[key]

    def pairs(self, chunk: Chunk) -> tuple[Tensor, ...]:
        """The surviving (pixel, face) pairs of one chunk, as the fields of :class:`PixelFacePairs`."""
        s, kw = self.s, chunk.kw
        c = self.cells(chunk)
        n = chunk.hi - chunk.lo
        idx_h, idx_w, idx_n = c.keep.nonzero(as_tuple=True)
        # One nonzero, then flat index_select: boolean masking would search the mask again for every output.
        flat = (idx_h * kw + idx_w) * n + idx_n
        edge = c.edge.view(-1).index_select(0, flat).long()
        on_edge = edge * n + idx_n
        t = c.foot.view(-1).index_select(0, edge * c.keep.numel() + flat)
        t = (t * c.frames[_INV_LENGTH : _INV_LENGTH + 3].reshape(-1).index_select(0, on_edge)).clamp_(0, 1)
        face = chunk.faces.index_select(0, idx_n)
        corner_a = face * 3 + edge
        return (
            face,
            self.origin[chunk.lo : chunk.hi].index_select(0, idx_n) + idx_h * s + idx_w,
            c.inside.view(-1).index_select(0, flat),
            corner_a,
            corner_a + torch.where(edge == 2, -2, 1),
            t,
            c.px.view(-1).index_select(0, idx_w * n + idx_n),
            c.py.view(-1).index_select(0, idx_h * n + idx_n),
        )


class EdgeDistances(NamedTuple):
    """One chunk's windows against the three edges, (edge, row, col, face) with faces innermost."""

    frames: Tensor  # (25, n) the chunk's rows of _edge_frames
    px: Tensor  # (kw, n) pixel-centre x of each column (x_far beyond the face's box)
    py: Tensor  # (kh, n) pixel-centre y of each row (y_far beyond the face's box)
    h: Tensor  # (3, kh, kw, n) signed distance to each edge line, positive inwards
    foot: Tensor  # (3, kh, kw, n) foot point's position along each edge, in [0, length]
    excess: Tensor  # (3, kh, kw, n) how far the pixel lies beyond the edge's ends, along it
    d2: Tensor  # (3, kh, kw, n) squared distance to each edge segment
    h_excess: Tensor  # (2, 3, kh, kw, n): h and excess stacked (they are its two halves)


class Cells(NamedTuple):
    """Every cell of one chunk's windows, (edge, row, col, face) or (row, col, face) with faces innermost."""

    frames: Tensor  # (25, n)
    px: Tensor  # (kw, n)
    py: Tensor  # (kh, n)
    h: Tensor  # (3, kh, kw, n)
    foot: Tensor  # (3, kh, kw, n)
    excess: Tensor  # (3, kh, kw, n)
    best: Tensor  # (kh, kw, n) squared distance to the closed triangle
    edge: Tensor  # (kh, kw, n) uint8 index of the nearest edge
    inside: Tensor  # (kh, kw, n) strictly inside the triangle
    keep: Tensor  # (kh, kw, n) a pair SoftRas's kernel does not cull
