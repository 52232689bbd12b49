"""Culling for the soft rasterizer: which (pixel, face) cells can contribute, found without the dense product.

SoftRas's kernel visits every face for every pixel and drops a pair when the pixel lies outside the triangle
and its squared NDC distance to it is at least ``T = σ·ln(1/dist_eps − 1)`` (then ``D ≤ dist_eps``). Here each
face only visits the pixels inside its bounding box grown by ``√T``: faces are grouped by box size into a few
buckets, and each bucket is evaluated as a dense (faces, rows, cols) window, which needs no gather and only
broadcasts per-face constants. :meth:`Window.cells` is the one culling decision per cell
(:mod:`recon.render.cells`); the pair lists (:mod:`recon.render.pairs`) and the silhouette kernel
(:mod:`recon.render.silhouette`) both read it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from recon.render.cells import Cells, EdgeDistances, WindowSlice, cull_cells, window_distances
from recon.render.constants import constant
from recon.render.edges import EdgeTable, edge_table

# Window sizes (pixels) of the face buckets: a face whose grown box is h×w pixels is evaluated in the smallest
# window of these sizes that holds it. Fine steps keep the wasted window area small for the common tiny faces.
WINDOW_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

# Cells evaluated at once. Small enough that the (3, cells) temporaries stay in cache and are recycled by the
# allocator instead of being mapped fresh (page faults): on a 2-core machine each pass then costs ~1 ns per cell
# instead of ~8.
MAX_CELLS = 1 << 16

# The fixed cost of one chunk (a few dozen tensor operations, each ~5–10 µs of dispatch and thread start-up),
# in window cells of evaluation work (~5 ns each on one CPU core): buckets smaller than this are merged.
CHUNK_COST = 1 << 13

# The same two on a GPU, where each of a chunk's tensor operations is a kernel launch (~5 µs) and a cell costs a
# small fraction of a nanosecond: chunks of up to 4M cells (~0.5 GB of float32 temporaries at the peak), and
# buckets merged while the extra cells cost less than 1M. A training-size call (batch 64, 64², 1280 faces)
# then dispatches ~10× fewer operations than with the CPU's limits, in 3 chunks instead of 45.
GPU_MAX_CELLS = 1 << 22
GPU_CHUNK_COST = 1 << 20


def chunk_limits(device: torch.device) -> tuple[int, int]:
    """(cells per chunk, a chunk's fixed cost in cells) for tensors on ``device``: the CPU's, or the GPU's."""
    return (MAX_CELLS, CHUNK_COST) if device.type == "cpu" else (GPU_MAX_CELLS, GPU_CHUNK_COST)


def culling_threshold(sigma: float, dist_eps: float) -> float:
    """``T = σ·ln(1/dist_eps − 1)``: the squared NDC distance at which ``D = sigmoid(−T/σ) = dist_eps``."""
    return sigma * math.log(1.0 / dist_eps - 1.0)


class Chunk(NamedTuple):
    """Faces evaluated together: positions lo … hi − 1 of the sorted per-face tables, all in (kh, kw) windows."""

    faces: Tensor  # (hi − lo,) their indices into the N = B·F faces
    lo: int
    hi: int
    kh: int
    kw: int


class Window(NamedTuple):
    """Per-face tables of one :func:`plan_windows` call, in its sorted order (see :class:`WindowPlan`)."""

    table: EdgeTable  # (N faces) edge frames, see recon.render.edges
    origin: Tensor  # (N,) flat pixel index of the window's top-left pixel
    x0: Tensor  # (N,) x of the window's first column (pixel centres, NDC)
    y0: Tensor  # (N,) y of the window's first row
    width: Tensor  # (N,) columns the face may touch, as a float
    height: Tensor  # (N,) rows the face may touch, as a float
    x_far: Tensor  # (N,) x of window columns beyond the box: farther than √T right of the face
    y_far: Tensor  # (N,) y of window rows beyond the box: farther than √T below the face
    s: int
    threshold: float
    ramps: dict[int, Tensor]  # 2k (+1 rows) → (k, 1) floats 0 … k − 1; −key → (kh, kw, 1) pixel offsets

    def ramp(self, k: int, rows: bool = False) -> Tensor:
        """(k, 1) float 0 … k − 1. Rows and columns get distinct tensors: a compiled kernel given the same
        tensor twice guards on that aliasing and would recompile for every square/non-square switch."""
        key = 2 * k + rows
        if key not in self.ramps:
            self.ramps[key] = torch.arange(k, device=self.x0.device, dtype=self.x0.dtype)[:, None]
        return self.ramps[key]

    def distances(self, chunk: Chunk) -> EdgeDistances:
        """:func:`window_distances` of one chunk of faces over their (kh, kw) pixel windows."""
        return window_distances(*window_slice(self, chunk))

    def cells(self, chunk: Chunk) -> Cells:
        """:func:`cull_cells` of one chunk: its distances and the culling decision of every window cell."""
        return cull_cells(self.distances(chunk), self.threshold)

    def pixels(self, chunk: Chunk) -> Tensor:
        """(kh, kw, n) flat pixel index of every window cell; cells beyond the face's box may point anywhere
        inside ``[0, B·S² + pad)`` with ``pad = kh·S + kw`` (give them zero weight)."""
        key = -(chunk.kh * 4096 + chunk.kw)  # negative keys: pixel offsets, beside the ramps
        if key not in self.ramps:
            ar_h = torch.arange(chunk.kh, device=self.origin.device)
            self.ramps[key] = (ar_h[:, None] * self.s + torch.arange(chunk.kw, device=self.origin.device))[..., None]
        return self.origin[chunk.lo : chunk.hi] + self.ramps[key]


def window_slice(window: Window, chunk: Chunk) -> WindowSlice:
    """The faces lo … hi − 1 of the window's tables, and the chunk's ramps."""
    lo, hi = chunk.lo, chunk.hi
    return WindowSlice(
        window.table.faces(lo, hi), window.x0[lo:hi], window.y0[lo:hi], window.width[lo:hi], window.height[lo:hi],
        window.x_far[lo:hi], window.y_far[lo:hi], window.ramp(chunk.kw), window.ramp(chunk.kh, rows=True), window.s,
    )


class WindowPlan(NamedTuple):
    """Culling's work list: the faces sorted by window size and cut into chunks.

    Every face with a non-empty box is in exactly one chunk; a chunk holds at most :data:`MAX_CELLS` cells
    (window pixels × faces) on CPU, so the per-cell temporaries of one chunk stay in cache, and
    :data:`GPU_MAX_CELLS` on a GPU, where fewer, larger chunks mean fewer kernel launches (:func:`chunk_limits`).
    """

    window: Window  # per-face tables in sorted order
    order: Tensor  # (N,) face index at each sorted position
    chunks: list[Chunk]

    def padded_pixels(self, images: int) -> int:
        """Length of a per-pixel buffer every window cell can index: B·S² plus the largest window's reach."""
        s = self.window.s
        reach = max((chunk.kh * s + chunk.kw for chunk in self.chunks), default=0)
        return images * s * s + reach


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
        # tables (no gathers per chunk). Window size index of every box side by table lookup: bucketize costs
        # ~25 ns a face on CPU.
        fits = torch.bucketize(torch.arange(s + 1, device=xy.device), constant(WINDOW_SIZES, xy.device, torch.int64))
        key = fits[height.clamp(0, s)] * len(WINDOW_SIZES) + fits[width.clamp(0, s)]
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
        window = Window(
            table=edge_table(cx, cy),
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
        max_cells, chunk_cost = chunk_limits(xy.device)
        bucket_keys, bucket_counts = torch.stack([keys, counts]).tolist()  # one copy to the host: one GPU sync
        for start, end, kh, kw in merge_buckets(bucket_keys, bucket_counts, chunk_cost):
            # Equal chunks of at most max_cells cells: no small remainder chunk.
            parts = -(-(end - start) * kh * kw // max_cells)
            bounds = [start + (end - start) * i // parts for i in range(parts + 1)]
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                chunks.append(Chunk(order[lo:hi], lo, hi, kh, kw))
        return WindowPlan(window, order, chunks)


def merge_buckets(keys: list[int], counts: list[int], chunk_cost: int) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive window-size buckets evaluated together: (start, end, kh, kw) in sorted positions.

    A bucket joins the run before it, in the run's largest window, when the extra window cells cost less than
    evaluating it on its own (``chunk_cost`` cells, :func:`chunk_limits`). Small batches have many nearly empty
    buckets; each would otherwise pay a chunk's few dozen tensor operations for a handful of faces.
    """
    runs: list[tuple[int, int, int, int]] = []
    end = 0
    for k, count in zip(keys, counts, strict=True):
        start, end = end, end + count
        if k < 0:  # faces with an empty box (off screen)
            continue
        kh, kw = WINDOW_SIZES[k // len(WINDOW_SIZES)], WINDOW_SIZES[k % len(WINDOW_SIZES)]
        if runs and runs[-1][1] == start:
            r_start, _, r_h, r_w = runs[-1]
            h, w = max(r_h, kh), max(r_w, kw)
            merged = (end - r_start) * h * w
            apart = (start - r_start) * r_h * r_w + count * kh * kw + chunk_cost
            if merged <= apart:
                runs[-1] = (r_start, end, h, w)
                continue
        runs.append((start, end, kh, kw))
    return runs
