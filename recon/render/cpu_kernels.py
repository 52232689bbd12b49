"""The soft rasterizer's CPU kernels, compiled by numba: every face's pixel window evaluated cell by cell.

The same arithmetic as the eager window kernels (:mod:`recon.render.cells`, :mod:`recon.render.silhouette`,
:mod:`recon.render.rgb`), written as loops: each cell's edge distances, culling decision, soft coverage and
colour stay in registers. Each face visits the cells of its box grown by √T, row by row within the span that
can lie within √T of all three edge lines. The kernels are vector code (see the comment above ``LANES``) and
save nothing: each backward evaluates its cells again. Nothing of size pixels × faces is stored, only a few numbers
per pixel. Arithmetic is float64 whatever the input dtype; ``exp`` is inlined (:func:`_vexp`).

Parallel work (the callers in :mod:`recon.render.numba_path` run pieces on threads; the kernels release the GIL):
the forward splits each image into bands of rows, one (image, band) per unit, so that every pixel is written by
one thread in a fixed face order (the sums are deterministic), and writes the unit's rows of the image at its end;
the backward gives each piece whole faces, which own their gradients, and arrays of its own for the per-pixel
factors of the image it is in. Faces whose corners are not all finite add nothing.

Per-face tables (:func:`face_frames`): columns of ``frames`` and ``boxes`` below.
"""

from __future__ import annotations

import math

import llvmlite.ir
import numpy as np
from numba import njit, types
from numba.core.compiler import Compiler
from numba.extending import intrinsic, overload

# frames[i]: per edge k (corner k → k + 1): inward normal (NX, NY), h's constant (HC), unit direction (UX, UY),
# u's constant (UC), length (LEN), 1/length or 0 (INV); then the interior bound, 1/NX per edge (0 where NX = 0), the
# barycentric inverse (3×3, row k gives w_k), the clamped corner depths, the front-facing flag and the inverse
# clamped depths. The columns from BARY on are filled only for the RGBA path.
NX, NY, HC, UX, UY, UC, LEN, INV = 0, 3, 6, 9, 12, 15, 18, 21
INTERIOR, INV_NX, BARY, DEPTH, FRONT, INV_DEPTH = 24, 25, 28, 37, 40, 41
FRAME_SIZE = 44
MIN_DET, MIN_DEPTH, MIN_INV_Z, MIN_WEIGHT_SUM = 1e-10, 1e-6, 1e-12, 1e-5
_CONTRACT = {"contract"}  # a·b + c may be one fused multiply-add (one rounding instead of two)


class _DistinctArrays(Compiler):
    """numba's compiler, declaring to LLVM that no array argument overlaps another (``noalias``), so that a loop
    that writes several per-pixel arrays needs no run-time overlap checks. Every caller passes distinct buffers (rows
    of one array are distinct where they do not overlap): measured, the RGBA forward at batch 64 takes 37 ms with
    this against 44 without, to the same bits."""

    def __init__(self, typingctx, targetctx, library, args, return_type, flags, locals):
        flags.noalias = True  # numba makes fresh flags for each compilation
        super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)


_KERNEL = {"cache": True, "nogil": True, "fastmath": _CONTRACT, "error_model": "numpy",
           "pipeline_class": _DistinctArrays}


@intrinsic
def _as_float(typingctx, bits):  # pragma: no cover (compiled)
    """The float64 whose bits are the int64 ``bits``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _bits(typingctx, x):  # pragma: no cover (compiled)
    """The int64 whose bits are the float64 ``x``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.IntType(64))

    return types.int64(types.float64), codegen


# exp for loops that LLVM turns into vector code: no table (a table lookup is a gather, which the vectoriser
# scalarises) and no float → int conversion (AVX2 has none for int64). n = round(x/ln 2) by adding 1.5·2^52, whose
# low bits then hold n; exp(r), |r| ≤ ln 2/2, by a degree-13 Taylor polynomial (truncation < 5e-18).
_LOG2E, _SHIFTER = 1.4426950408889634, 6755399441055744.0
_LN2_HI, _LN2_LO = 0.6931471803691238, 1.9082149292705877e-10  # n·hi is exact for |n| < 2^21


@njit(inline="always")
def _vexp(x):  # pragma: no cover
    """exp(x) within 2 ulp (0 below −745.5, inf above 709.9), in operations that vectorise. Inlined: a call into
    libm costs more (~9 ns against ~5 on the machine measured, every vector register the caller holds saved around
    it) and does not vectorise."""
    x = min(max(x, -745.5), 709.9)
    shifted = x * _LOG2E + _SHIFTER
    n = shifted - _SHIFTER
    r = (x - n * _LN2_HI) - n * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    p = ((1.0 + r) + r2 * (0.5 + r * (1 / 6)) + r4 * ((1 / 24 + r * (1 / 120)) + r2 * (1 / 720 + r * (1 / 5040)))
         + (r4 * r4) * ((1 / 40320 + r * (1 / 362880)) + r2 * (1 / 3628800 + r * (1 / 39916800))
                        + r4 * (1 / 479001600 + r * (1 / 6227020800))))
    k = _bits(shifted) - _bits(_SHIFTER)
    half = k >> 1  # 2^k in two factors: results down to the subnormals
    return p * _as_float((half + 1023) << 52) * _as_float((k - half + 1023) << 52)


@njit(**{**_KERNEL, "error_model": "python"})
def face_frames(fv, s, radius, surface, frames, boxes, lo, hi):  # pragma: no cover (compiled; tested vs eager)
    """Fill frames (N, FRAME_SIZE) and boxes (N, 4) = (first col, last col, first row, last row) for fv
    (N, 3, ≥2) corners (x_ndc, y_ndc[, z_view]); the surface columns (barycentrics, depths) only with surface.
    An empty box has last < first."""
    has_depth = fv.shape[2] > 2
    for i in range(lo, hi):
        x0, x1, x2 = float(fv[i, 0, 0]), float(fv[i, 1, 0]), float(fv[i, 2, 0])
        y0, y1, y2 = float(fv[i, 0, 1]), float(fv[i, 1, 1]), float(fv[i, 2, 1])
        finite = True
        for v in (x0, x1, x2, y0, y1, y2):
            if not math.isfinite(v):
                finite = False
        if not finite:
            boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3] = 0, -1, 0, -1
            continue
        # Pixel centre c has x = (2c + 1 − S)/S; row r has y = (S − 1 − 2r)/S (row 0 at the top).
        c_lo = ((min(x0, x1, x2) - radius) * s + s - 1) / 2
        c_hi = ((max(x0, x1, x2) + radius) * s + s - 1) / 2
        r_lo = (s - 1 - (max(y0, y1, y2) + radius) * s) / 2
        r_hi = (s - 1 - (min(y0, y1, y2) - radius) * s) / 2
        boxes[i, 0] = int(math.ceil(min(max(c_lo, 0.0), float(s))))
        boxes[i, 1] = int(math.floor(min(max(c_hi, -1.0), float(s - 1))))
        boxes[i, 2] = int(math.ceil(min(max(r_lo, 0.0), float(s))))
        boxes[i, 3] = int(math.floor(min(max(r_hi, -1.0), float(s - 1))))

        xs, ys = (x0, x1, x2), (y0, y1, y2)
        det = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        orient = -1.0 if det < 0 else 1.0
        for k in range(3):
            xa, ya = xs[k], ys[k]
            xb, yb = xs[(k + 1) % 3], ys[(k + 1) % 3]
            ex, ey = xb - xa, yb - ya
            length = math.sqrt(ex * ex + ey * ey)
            ux, uy = (ex / length, ey / length) if length > 0 else (1.0, 0.0)
            nx, ny = -uy * orient, ux * orient
            frames[i, NX + k], frames[i, NY + k], frames[i, HC + k] = nx, ny, -(nx * xa + ny * ya)
            frames[i, UX + k], frames[i, UY + k], frames[i, UC + k] = ux, uy, -(ux * xa + uy * ya)
            frames[i, LEN + k] = length
            frames[i, INV + k] = 1 / length if length > 0 else 0.0
            frames[i, INV_NX + k] = 1 / nx if nx != 0 else 0.0
        frames[i, INTERIOR] = math.inf if det == 0 else 0.0
        if not surface:
            continue

        # Barycentrics from the clamped-determinant inverse (|det| ≥ 1e-10, sign kept), as SoftRas.
        bdet = x2 * (y0 - y1) + x0 * (y1 - y2) + x1 * (y2 - y0)
        bdet = max(bdet, MIN_DET) if bdet > 0 else min(bdet, -MIN_DET)
        adj = (
            y1 - y2, x2 - x1, x1 * y2 - x2 * y1,
            y2 - y0, x0 - x2, x2 * y0 - x0 * y2,
            y0 - y1, x1 - x0, x0 * y1 - x1 * y0,
        )
        inv_det = 1 / bdet
        for j in range(9):
            frames[i, BARY + j] = adj[j] * inv_det
        for k in range(3):
            z = float(fv[i, k, 2]) if has_depth else 1.0
            z = max(z, MIN_DEPTH) if z >= 0 else min(z, -MIN_DEPTH)
            frames[i, DEPTH + k], frames[i, INV_DEPTH + k] = z, 1 / z
        frames[i, FRONT] = 1.0 if (y2 - y0) * (x1 - x0) < (y1 - y0) * (x2 - x0) else 0.0


@njit(inline="always")
def _face(fr, i):  # pragma: no cover
    """Face i's edge frame (columns 0 … INV_NX + 2) as a tuple: read once per face, kept in registers."""
    return (
        fr[i, 0], fr[i, 1], fr[i, 2], fr[i, 3], fr[i, 4], fr[i, 5], fr[i, 6], fr[i, 7], fr[i, 8],
        fr[i, 9], fr[i, 10], fr[i, 11], fr[i, 12], fr[i, 13], fr[i, 14], fr[i, 15], fr[i, 16], fr[i, 17],
        fr[i, 18], fr[i, 19], fr[i, 20], fr[i, 21], fr[i, 22], fr[i, 23], fr[i, 24], fr[i, 25], fr[i, 26],
        fr[i, 27],
    )


@njit(inline="always")
def _edge(nx, ny, hc, ux, uy, uc, length, px, py):  # pragma: no cover
    """(d², h, excess, foot) of pixel (px, py) against one edge segment."""
    h = nx * px + ny * py + hc
    u = ux * px + uy * py + uc
    foot = min(max(u, 0.0), length)
    excess = u - foot
    return h * h + excess * excess, h, excess, foot


@njit(inline="always")
def _edges(t, px, py):  # pragma: no cover
    """(d², h, excess, foot) of pixel (px, py) against the three edges of the face of frame t, 12 values."""
    d0, h0, e0, f0 = _edge(t[NX], t[NY], t[HC], t[UX], t[UY], t[UC], t[LEN], px, py)
    d1, h1, e1, f1 = _edge(t[NX + 1], t[NY + 1], t[HC + 1], t[UX + 1], t[UY + 1], t[UC + 1], t[LEN + 1], px, py)
    d2, h2, e2, f2 = _edge(t[NX + 2], t[NY + 2], t[HC + 2], t[UX + 2], t[UY + 2], t[UC + 2], t[LEN + 2], px, py)
    return d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2


@njit(inline="always")
def _row_span(t, py, c_lo, c_hi, s, radius):  # pragma: no cover
    """The columns of row y = py, within c_lo … c_hi, that can be kept: a pixel more than √T outside any edge
    line of a (non-degenerate) face is farther than √T from it. Conservative by a hair against rounding."""
    if t[INTERIOR] != 0:  # zero area: its "inward" normals bound nothing
        return c_lo, c_hi
    lo, hi = -math.inf, math.inf
    for k in range(3):
        nx = t[NX + k]
        rest = t[NY + k] * py + t[HC + k] + radius + 1e-9  # h + √T ≥ 0  ⇔  nx·px ≥ −rest
        if nx > 0:
            lo = max(lo, -rest * t[INV_NX + k])
        elif nx < 0:
            hi = min(hi, -rest * t[INV_NX + k])
        elif rest < 0:
            return 0, -1
    # Pixel centre c has x = (2c + 1 − S)/S.
    c0 = c_lo if lo == -math.inf else max(c_lo, int(math.ceil(max((lo * s + s - 1) / 2, -1.0))))
    c1 = c_hi if hi == math.inf else min(c_hi, int(math.floor(min((hi * s + s - 1) / 2, float(s)))))
    return c0, c1


@njit(inline="always")
def _write_gradients(grad, t, i, sums):  # pragma: no cover
    """grad[i] (3, ≥2) −= from a face's window sums: per edge k, Σw·h, Σw·excess, Σw·foot·h, Σw·foot·excess with
    w = 2·∂loss/∂d² on the cells where k is nearest. SoftRas's gradient ∂d²/∂p_a = 2(1 − t)(q − p),
    ∂d²/∂p_b = 2t(q − p) onto edge k = (a, b), with q − p = −(h·n̂ + excess·û) and t = foot/length held constant."""
    for k in range(3):
        sh, se = sums[4 * k], sums[4 * k + 1]
        th, te = sums[4 * k + 2] * t[INV + k], sums[4 * k + 3] * t[INV + k]  # the t-weighted sums
        nx, ny, ux, uy = t[NX + k], t[NY + k], t[UX + k], t[UY + k]
        kb = (k + 1) % 3
        grad[i, k, 0] -= (sh - th) * nx + (se - te) * ux
        grad[i, k, 1] -= (sh - th) * ny + (se - te) * uy
        grad[i, kb, 0] -= th * nx + te * ux
        grad[i, kb, 1] -= th * ny + te * uy


@njit(inline="always")
def _unit(unit, bands, s):  # pragma: no cover
    """(image, first row, last row) of a forward's (image, row band) unit."""
    img = unit // bands
    band = unit - img * bands
    return img, band * s // bands, (band + 1) * s // bands - 1


@njit(inline="always")
def _nearest_factors(d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2, q):  # pragma: no cover
    """(k, q·h, q·excess, q·foot·h, q·foot·excess) of the nearest edge k (the lowest index on ties): a cell's
    terms of :func:`_write_gradients`'s sums."""
    k = 0 if (d0 <= d1) & (d0 <= d2) else (1 if d1 <= d2 else 2)
    h = h0 if k == 0 else (h1 if k == 1 else h2)
    ex = e0 if k == 0 else (e1 if k == 1 else e2)
    fo = f0 if k == 0 else (f1 if k == 1 else f2)
    return k, q * h, q * ex, q * fo * h, q * fo * ex


# The rasterizer's kernels are vector code: LLVM turns their loop over a row's cells, LANES at a time, into SIMD
# instructions (4 float64 lanes of AVX2). What that takes, found by trial: a loop whose trip count LLVM does not
# know (``lanes``, always LANES: one it knows to be small it will not vectorise); every lane computed and its
# results selected, not branched on; :func:`_vexp` (a table lookup is a gather, which is scalarised); unsigned
# pixel indices (the wraparound of a negative index does not vectorise); values, not arrays, passed to inlined
# helpers (an array may cost a reference count, a call); per-pixel arrays in rows padded by LANES (an index
# clamped to the row is not affine); arrays declared not to overlap (:class:`_DistinctArrays`: otherwise each pair
# written in the loop is checked at run time, on every row), each per-pixel array its own argument (rows taken
# from one argument inside a kernel are not known to be apart); and ``error_model="numpy"`` (a division checked
# for zero does not vectorise). Nothing is saved per cell: a forward that saved its cells' backward factors (scalar
# code, as the silhouette's once did) took longer than this forward and backward together (measured, batch 64:
# silhouette 60 + 12 ms against 21 + 29 ms), and saving from vector code writes more arrays (the RGBA render's
# eleven more: their overlap checks per row and AMD's slow masked stores made it slower still).
# What bounds these loops is the cells' arithmetic, not memory or the row structure. Measured at batch 64, one
# thread, on a 2-core AVX-512 Xeon, none of these made them faster by more than a few percent: each face's cells
# as one flat list (every lane used, no per-row loop exit, the per-pixel factor gathered, a list filled per row
# as the price), silhouette backward 28.0 → 27.5 ms; 8 lanes of 512-bit vectors (LLVM's preference for 256 bits
# turned off; rows hold ~4 cells), silhouette 20 + 26 → 20 + 29 ms, RGBA 35 + 40.5 → 42.5 + 46.5 ms; each
# image's faces visited by their top row (the RGBA forward's six per-pixel arrays are then read a few rows at a
# time): unchanged. The polynomial of :func:`_vexp` is ~3 of the RGBA forward's 35 ms (both its exps).
# Nor these (2026-12-07, RGBA forward + backward against 33 + 38 ms, silhouette 18.5 + 25): one division per RGBA
# cell for D, 1/total and z, 1/((1 + e)·total·raw) (2 and 3 vdivpd per vector step down to 1), 38 + 49 ms, as the
# quotients then wait on the exp; the exp's constants hidden from LLVM (an empty inline asm), so that it stops
# rebuilding them in the loop (movabs + broadcast: 9% fewer instructions per step), 33 + 41 ms; 8 lanes in
# 256-bit vectors, 46 + 52 ms; row bands of 8 rows (per-pixel state in L1), no faster; the backward's z and depth
# terms from one 1/raw instead of total/raw and 1/total (one colour per face), unchanged.
LANES = 4


@njit(inline="always")
def _add_lanes(part, sums):  # pragma: no cover
    """sums[n] = Σ over lanes of part[n·LANES + lane], in a fixed order: a backward's per-lane sums of one face
    (kept per lane so that the loop over lanes vectorises; the sums are written out there, term by term, since an
    array passed to an inlined helper inside that loop stops it from vectorising)."""
    for n in range(sums.size):
        total = 0.0
        for lane in range(LANES):
            total += part[n * LANES + lane]
        sums[n] = total


@njit(inline="always")
def _silhouette_cell(t, c, c1, px, py, inv_sigma, threshold):  # pragma: no cover
    """One lane of the kernels, cell (c, py): (kept, sign, e = exp(−sign·d²/σ), D = 1/(1 + e), the edges of
    :func:`_edges` (12)). Kept: strictly inside, or d² below the threshold, and not beyond column c1."""
    edges = _edges(t, px, py)
    d0, h0, _, _, d1, h1, _, _, d2, h2, _, _ = edges
    best, inside = min(d0, d1, d2), min(h0, h1, h2) > t[INTERIOR]
    keep = (inside | (best < threshold)) & (c <= c1)
    sign = 1.0 if inside else -1.0
    e = _vexp(-sign * best * inv_sigma)
    return keep, sign, e, 1 / (1 + e), edges


@njit(**_KERNEL)
def silhouette_forward(fr, boxes, f, s, stride, lanes, sigma, threshold, prod, bands, acc, alpha, lo,
                        hi):  # pragma: no cover
    """acc (B·S·stride, written): Π(1 − D) over each pixel's kept cells ('prod', from 1) or Σ D ('sum', from 0),
    for the (image, row band) units lo … hi − 1, in rows of ``stride`` ≥ S + lanes − 1 pixels; and alpha (B, S·S),
    in the output's dtype: 1 − acc ('prod') or acc/F ('sum'). Each unit sets its rows' start values first (padding
    included) and writes its alpha last: the rows are then in cache for its faces and for its alpha.

    Vector code (see the comment above LANES): each row's span is walked ``lanes`` cells at a time, every lane
    computed, and a lane that is culled or beyond the span leaves its pixel as it was; the padding takes the lanes
    beyond the image's last column."""
    step, x_first, radius = 2 / s, (1 - s) / s, math.sqrt(threshold)
    inv_sigma = 1 / sigma
    for unit in range(lo, hi):
        img, band_lo, band_hi = _unit(unit, bands, s)
        for p in range(np.uint64((img * s + band_lo) * stride), np.uint64((img * s + band_hi + 1) * stride)):
            acc[p] = 1.0 if prod else 0.0
        for i in range(img * f, img * f + f):
            r0, r1 = max(boxes[i, 2], band_lo), min(boxes[i, 3], band_hi)
            if r0 > r1:
                continue
            t = _face(fr, i)
            for r in range(r0, r1 + 1):
                py = (s - 1 - 2 * r) / s
                row = (img * s + r) * stride
                c0, c1 = _row_span(t, py, boxes[i, 0], boxes[i, 1], s, radius)
                for first in range(c0, c1 + 1, lanes):
                    for lane in range(lanes):
                        c = first + lane
                        p = np.uint64(row + c)
                        keep, _, e, d, _ = _silhouette_cell(t, c, c1, c * step + x_first, py, inv_sigma, threshold)
                        a = acc[p]
                        acc[p] = (a * (e * d) if prod else a + d) if keep else a  # 1 − D = sigmoid(−x), or D
        for r in range(band_lo, band_hi + 1):
            row, q0 = np.uint64((img * s + r) * stride), np.uint64(r * s)
            for c in range(s):
                a = acc[row + np.uint64(c)]
                alpha[img, q0 + np.uint64(c)] = 1 - a if prod else a / f


@njit(inline="always")
def _alpha_factor(grad_alpha, acc, prod, f, s, stride, per_pixel, img):  # pragma: no cover
    """:func:`silhouette_backward`'s per-pixel factor for image img, into per_pixel (S·stride, in rows of ``stride``
    pixels, the padding set to 0): ∂loss/∂alpha·(1 − alpha) ('prod') or ∂loss/∂alpha/F ('sum'), from grad_alpha
    (B, S·S) and the forward's acc. Vector code, one row at a time."""
    for r in range(s):
        row, local, q0 = np.uint64((img * s + r) * stride), np.uint64(r * stride), np.uint64(r * s)
        for c in range(s):
            g = grad_alpha[img, q0 + np.uint64(c)]
            per_pixel[local + np.uint64(c)] = g * acc[row + np.uint64(c)] if prod else g / f
        for c in range(s, stride):
            per_pixel[local + np.uint64(c)] = 0.0


@njit(**_KERNEL)
def silhouette_backward(fr, boxes, f, s, stride, lanes, sigma, threshold, prod, grad_alpha, acc, grad, per_pixel,
                        lo, hi):  # pragma: no cover
    """grad (N, 3, ≥2) −= ∂loss/∂corners for faces lo … hi − 1, each cell evaluated again as in
    :func:`silhouette_forward`, from grad_alpha (B, S·S) = ∂loss/∂alpha (the output's dtype) and the forward's acc.
    Each image's per-pixel factor (:func:`_alpha_factor`) is computed when the piece reaches the image's first face,
    into this piece's own per_pixel (S·stride), as in :func:`rgba_backward`. A face's 12 sums are kept per lane
    (``part``, sum n of lane l at n·LANES + l) and added up in a fixed order after its last row: a face's gradient
    does not depend on the thread that computes it."""
    step, x_first, radius = 2 / s, (1 - s) / s, math.sqrt(threshold)
    inv_sigma = 1 / sigma
    part = np.zeros(12 * LANES)
    sums = np.zeros(12)
    current = -1
    for i in range(lo, hi):
        img = i // f
        if img != current:
            _alpha_factor(grad_alpha, acc, prod, f, s, stride, per_pixel, img)
            current = img
        t = _face(fr, i)
        part[:] = 0.0
        for r in range(boxes[i, 2], boxes[i, 3] + 1):
            py = (s - 1 - 2 * r) / s
            local = r * stride
            c0, c1 = _row_span(t, py, boxes[i, 0], boxes[i, 1], s, radius)
            for first in range(c0, c1 + 1, lanes):
                for lane in range(lanes):
                    c = first + lane
                    p = np.uint64(local + c)
                    keep, sign, e, d, edges = _silhouette_cell(t, c, c1, c * step + x_first, py, inv_sigma,
                                                               threshold)
                    pp = per_pixel[p]
                    # ∂loss/∂x = per_pixel·D ('prod') or per_pixel·D(1 − D) ('sum'); ∂x/∂d² = sign/σ; the 2 of ∂d².
                    factor = pp * (d if prod else d * d * e) * 2 * sign * inv_sigma if keep else 0.0
                    d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2 = edges
                    k, a, b, ch, dh = _nearest_factors(d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2, factor)
                    m = np.uint64(lane)
                    part[m + 0 * LANES] += a if k == 0 else 0.0
                    part[m + 1 * LANES] += b if k == 0 else 0.0
                    part[m + 2 * LANES] += ch if k == 0 else 0.0
                    part[m + 3 * LANES] += dh if k == 0 else 0.0
                    part[m + 4 * LANES] += a if k == 1 else 0.0
                    part[m + 5 * LANES] += b if k == 1 else 0.0
                    part[m + 6 * LANES] += ch if k == 1 else 0.0
                    part[m + 7 * LANES] += dh if k == 1 else 0.0
                    part[m + 8 * LANES] += a if k == 2 else 0.0
                    part[m + 9 * LANES] += b if k == 2 else 0.0
                    part[m + 10 * LANES] += ch if k == 2 else 0.0
                    part[m + 11 * LANES] += dh if k == 2 else 0.0
        _add_lanes(part, sums)
        _write_gradients(grad, t, i, sums)


def _colors(colors, i):  # pragma: no cover (compiled: see its overload)
    """Face i's colours, read once per face: (corner, channel) flattened (9) from colors (N, 3, 3) per corner, or
    the face's RGB (3) from colors (N, 3) per face."""
    raise NotImplementedError


@overload(_colors, inline="always")
def _colors_of_layout(colors, i):  # pragma: no cover (runs when a kernel compiles)
    if colors.ndim == 2:
        return lambda colors, i: (colors[i, 0], colors[i, 1], colors[i, 2])
    return lambda colors, i: (
        colors[i, 0, 0], colors[i, 0, 1], colors[i, 0, 2], colors[i, 1, 0], colors[i, 1, 1], colors[i, 1, 2],
        colors[i, 2, 0], colors[i, 2, 1], colors[i, 2, 2],
    )


def _rgb(cc, w0, w1, w2):  # pragma: no cover (compiled: see its overload)
    """A cell's RGB from the face's colours :func:`_colors` and the clipped, renormalised barycentrics: the corners'
    colours interpolated, or the face's own. One colour per face is SoftRas's surface texture with R = 1, whose
    one texel is sampled wherever the barycentrics point: the face's colour itself, with no interpolation to
    compute (the eager path's Σ w̄_k·c is the same colour, the w̄_k summing to 1)."""
    raise NotImplementedError


@overload(_rgb, inline="always")
def _rgb_of_layout(cc, w0, w1, w2):  # pragma: no cover (runs when a kernel compiles)
    if cc.count == 3:
        return lambda cc, w0, w1, w2: (cc[0], cc[1], cc[2])
    return lambda cc, w0, w1, w2: (w0 * cc[0] + w1 * cc[3] + w2 * cc[6], w0 * cc[1] + w1 * cc[4] + w2 * cc[7],
                                   w0 * cc[2] + w1 * cc[5] + w2 * cc[8])


def _color_terms(cc, a0, a1, a2, w0, w1, w2):  # pragma: no cover (compiled: see its overload)
    """A cell's terms of ∂loss/∂colours (9, corner-major) from a_c = ∂loss/∂rgb_c·weight: a_c·w̄_k per corner, or
    a_c for one colour per face, then −0.0 (x + (−0.0) is x for every x, so LLVM drops those six sums)."""
    raise NotImplementedError


@overload(_color_terms, inline="always")
def _color_terms_of_layout(cc, a0, a1, a2, w0, w1, w2):  # pragma: no cover (runs when a kernel compiles)
    if cc.count == 3:
        return lambda cc, a0, a1, a2, w0, w1, w2: (a0, a1, a2, -0.0, -0.0, -0.0, -0.0, -0.0, -0.0)
    return lambda cc, a0, a1, a2, w0, w1, w2: (a0 * w0, a1 * w0, a2 * w0, a0 * w1, a1 * w1, a2 * w1, a0 * w2,
                                               a1 * w2, a2 * w2)


def _store_color_gradients(grad_colors, i, q):  # pragma: no cover (compiled: see its overload)
    """grad_colors[i] = the colour sums q (9, corner-major): (N, 3, 3) per corner, or (N, 3) per face from the first
    three (:func:`_color_terms`)."""
    raise NotImplementedError


@overload(_store_color_gradients, inline="always")
def _store_of_layout(grad_colors, i, q):  # pragma: no cover (runs when a kernel compiles)
    if grad_colors.ndim == 2:
        def store_face(grad_colors, i, q):
            for ch in range(3):
                grad_colors[i, ch] = q[ch]

        return store_face

    def store_corners(grad_colors, i, q):
        for k in range(3):
            for ch in range(3):
                grad_colors[i, k, ch] = q[3 * k + ch]

    return store_corners


@njit(inline="always")
def _surface_frame(fr, i):  # pragma: no cover
    """Face i's barycentric inverse (9) and inverse clamped depths (3), read once per face."""
    return (
        (fr[i, BARY], fr[i, BARY + 1], fr[i, BARY + 2], fr[i, BARY + 3], fr[i, BARY + 4], fr[i, BARY + 5],
         fr[i, BARY + 6], fr[i, BARY + 7], fr[i, BARY + 8]),
        (fr[i, INV_DEPTH], fr[i, INV_DEPTH + 1], fr[i, INV_DEPTH + 2]),
    )


@njit(inline="always")
def _surface(bary, inv_depth, px, py):  # pragma: no cover
    """(w̄0, w̄1, w̄2, z, deep) at (px, py): the clipped, renormalised barycentrics, the perspective-correct depth
    z = 1/inv_z with inv_z = Σ w̄_k/z_k, and whether |inv_z| ≥ MIN_INV_Z (false for NaN), below which z is
    clamped to ±1/MIN_INV_Z."""
    w0 = min(max(bary[0] * px + bary[1] * py + bary[2], 0.0), 1.0)
    w1 = min(max(bary[3] * px + bary[4] * py + bary[5], 0.0), 1.0)
    w2 = min(max(bary[6] * px + bary[7] * py + bary[8], 0.0), 1.0)
    total = max(w0 + w1 + w2, MIN_WEIGHT_SUM)
    raw = w0 * inv_depth[0] + w1 * inv_depth[1] + w2 * inv_depth[2]  # inv_z·total
    scale = 1 / total
    # z = 1/inv_z as total/raw, and inv_z compared through raw: the depth does not wait for 1/total (two divisions
    # in a row are the longest chain of a cell's work; measured: the RGBA forward and backward at batch 64 take
    # 2 ms less), and a forward that needs no w̄_k (one colour per face) needs no 1/total at all. NaN stays NaN.
    bound = MIN_INV_Z * total
    z = (1 / MIN_INV_Z if raw >= 0 else -1 / MIN_INV_Z) if abs(raw) < bound else total / raw
    return w0 * scale, w1 * scale, w2 * scale, z, abs(raw) >= bound


@njit(inline="always")
def _rgba_cell(t, bary, inv_depth, facing, c, c1, px, py, inv_sigma, threshold, near, far):  # pragma: no cover
    """One lane of the RGBA kernels, cell (c, py): (kept, coloured, sign, e = exp(−sign·d²/σ), D, the edges of
    :func:`_edges` (12), w̄0, w̄1, w̄2, z, deep) as :func:`_surface`. Not kept beyond column c1."""
    keep, sign, e, d, edges = _silhouette_cell(t, c, c1, px, py, inv_sigma, threshold)
    w0, w1, w2, z, deep = _surface(bary, inv_depth, px, py)
    colored = keep & facing & (near <= z) & (z <= far)
    return keep, colored, sign, e, d, edges, w0, w1, w2, z, deep


@njit(inline="always")
def _rgba_pixel(a, m, old, x0, x1, x2, prod, keep, colored, e, d, z, w0, w1, w2, cc, far, inv_range,
                inv_gamma):  # pragma: no cover
    """A pixel's (acc, shift, den, num) after one cell, unchanged unless the cell is kept (and coloured). Online
    softmax: a nearer face (zn > M) rescales the sums by exp((M − zn)/γ) and weighs exp(0) = 1; a farther one
    weighs exp((zn − M)/γ). One exp either way. (Values in and out, not arrays: an array passed to an inlined
    function may cost a reference count, a call, which stops the loop from vectorising.)"""
    covered = a * (e * d) if prod else a + d  # 1 − D = sigmoid(−x), or D
    zn = (far - z) * inv_range
    nearer = zn > m
    t_exp = _vexp(-abs(zn - m) * inv_gamma)
    rescale = t_exp if nearer else 1.0
    weight = d * (1.0 if nearer else t_exp)
    if not colored:
        return covered if keep else a, m, old, x0, x1, x2
    red, green, blue = _rgb(cc, w0, w1, w2)
    return (covered, zn if nearer else m, old * rescale + weight, x0 * rescale + weight * red,
            x1 * rescale + weight * green, x2 * rescale + weight * blue)


@njit(**_KERNEL)
def rgba_forward(fr, boxes, colors, f, s, stride, lanes, sigma, threshold, prod, gamma, near, far, double_sided,
                 eps, background, bands, acc, shift, den, n0, n1, n2, out, lo, hi):  # pragma: no cover
    """Alpha as :func:`silhouette_forward` into acc; the soft z-buffer's running maximum (shift, from eps),
    denominator and numerator (den from exp(eps/γ), n0 … n2 from den·background (3)) per pixel, by an online
    softmax, for the (image, row band) units lo … hi − 1: all written, each unit's rows set to their start values
    first (as :func:`silhouette_forward`). The per-pixel arrays hold rows of ``stride`` ≥ S + lanes − 1 pixels.
    Last, each unit writes its rows of out (B, 4, S·S), in the output's dtype: RGB = num/den, and alpha from acc.
    Nothing is saved: :func:`rgba_backward` evaluates the cells again.

    Vector code (see the comment above LANES): each row's span is walked ``lanes`` cells at a time, every lane
    computed, and the results of a lane that is culled, beyond the span or not coloured selected away; the padding
    takes the lanes beyond the image's last column."""
    step, x_first, radius = 2 / s, (1 - s) / s, math.sqrt(threshold)
    inv_sigma, inv_gamma, inv_range, inv_f = 1 / sigma, 1 / gamma, 1 / (far - near), 1 / f
    den0 = math.exp(eps * inv_gamma)
    bg0, bg1, bg2 = background[0] * den0, background[1] * den0, background[2] * den0
    for unit in range(lo, hi):
        img, band_lo, band_hi = _unit(unit, bands, s)
        for p in range(np.uint64((img * s + band_lo) * stride), np.uint64((img * s + band_hi + 1) * stride)):
            acc[p], shift[p], den[p], n0[p], n1[p], n2[p] = 1.0 if prod else 0.0, eps, den0, bg0, bg1, bg2
        for i in range(img * f, img * f + f):
            r0, r1 = max(boxes[i, 2], band_lo), min(boxes[i, 3], band_hi)
            if r0 > r1:
                continue
            t = _face(fr, i)
            cc = _colors(colors, i)
            bary, inv_depth = _surface_frame(fr, i)
            facing = double_sided or fr[i, FRONT] > 0  # a back face of a one-sided render adds no colour
            for r in range(r0, r1 + 1):
                py = (s - 1 - 2 * r) / s
                row = (img * s + r) * stride
                c0, c1 = _row_span(t, py, boxes[i, 0], boxes[i, 1], s, radius)
                for first in range(c0, c1 + 1, lanes):
                    for lane in range(lanes):
                        c = first + lane
                        p = np.uint64(row + c)  # unsigned: no wraparound
                        keep, colored, _, e, d, _, w0, w1, w2, z, _ = _rgba_cell(
                            t, bary, inv_depth, facing, c, c1, c * step + x_first, py, inv_sigma, threshold, near, far)
                        acc[p], shift[p], den[p], n0[p], n1[p], n2[p] = _rgba_pixel(
                            acc[p], shift[p], den[p], n0[p], n1[p], n2[p], prod, keep, colored, e, d, z, w0, w1, w2,
                            cc, far, inv_range, inv_gamma)
        for r in range(band_lo, band_hi + 1):
            row, q0 = np.uint64((img * s + r) * stride), np.uint64(r * s)
            for c in range(s):
                q, p = q0 + np.uint64(c), row + np.uint64(c)
                inv_den = 1 / den[p]
                out[img, 0, q], out[img, 1, q], out[img, 2, q] = n0[p] * inv_den, n1[p] * inv_den, n2[p] * inv_den
                out[img, 3, q] = 1 - acc[p] if prod else acc[p] * inv_f


@njit(inline="always")
def _rgba_gradient_terms(t, bary, inv_depth, cc, facing, c, c1, px, py, per_pixel, shift, g0, g1, g2, h, prod,
                         inv_sigma, threshold, near, far, inv_range, inv_gamma):  # pragma: no cover
    """One lane of :func:`rgba_backward`: (nearest edge k, its four window terms for :func:`_write_gradients`, the
    colour terms g_c·weight·w̄_k (9, corner-major) and the depth terms ∂loss/∂inv_z·w̄_k (3)), all 0 for a culled
    cell and the last 12 for an uncoloured one. weight = D·ez, ez = exp((zn − M)/γ); g: ∂loss/∂rgb / den and h:
    Σ g·rgb, so that ∂loss/∂weight = Σ g·colour − h."""
    keep, colored, sign, e, d, edges, w0, w1, w2, z, deep = _rgba_cell(t, bary, inv_depth, facing, c, c1, px, py,
                                                                      inv_sigma, threshold, near, far)
    dd = d * d * e  # D(1 − D)
    ez = _vexp(((far - z) * inv_range - shift) * inv_gamma)
    weight = d * ez
    red, green, blue = _rgb(cc, w0, w1, w2)
    g_weight = g0 * red + g1 * green + g2 * blue - h
    # ∂loss/∂x: per_pixel·D ('prod') or per_pixel·D(1 − D) ('sum'), plus the colour's through D.
    dx = per_pixel * (d if prod else dd) + (g_weight * ez * dd if colored else 0.0)
    factor = dx * 2 * sign * inv_sigma if keep else 0.0  # ∂x/∂d² = sign/σ, with the 2 of ∂d²
    d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2 = edges
    k, a, b, ch, dh = _nearest_factors(d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2, factor)
    a0, a1, a2 = (g0 * weight, g1 * weight, g2 * weight) if colored else (0.0, 0.0, 0.0)
    # zn = (far − z)/(far − near), z = 1/inv_z, inv_z = Σ w̄_k/z_k: ∂zn/∂inv_z = z²/(far − near).
    g_inv_z = g_weight * weight * inv_gamma * inv_range * z * z if colored & deep else 0.0
    return (k, a, b, ch, dh, *_color_terms(cc, a0, a1, a2, w0, w1, w2), g_inv_z * w0, g_inv_z * w1, g_inv_z * w2)


@njit(**_KERNEL)
def rgba_backward(fr, boxes, colors, f, s, stride, lanes, sigma, threshold, prod, gamma, near, far, double_sided,
                  grad_out, acc, den, n0, n1, n2, shift, grad_fv, grad_colors, per_pixel, g0, g1, g2, h, lo,
                  hi):  # pragma: no cover
    """grad_fv (N, 3, 3) and grad_colors (N, 3, 3) = ∂loss/∂(corners, depths) and ∂loss/∂colours (written, not
    added), for faces lo … hi − 1, each cell evaluated again as in :func:`rgba_forward`; grad_out (B, 4, S·S) =
    ∂loss/∂RGBA (the output's dtype), and the forward's per-pixel acc, den, n0 … n2 and shift.

    Each image's per-pixel inputs (:func:`_pixel_terms`: per_pixel, g0 … g2, h, each of S·stride) are computed
    when the piece reaches the image's first face, into this piece's own arrays, where the image's faces then read
    them from cache (a piece that starts or ends inside an image computes them too: the same values).

    Vector code as :func:`rgba_forward`: a face's 24 sums are kept per lane (``part``) and added up in a fixed
    order after its last row, so that a face's gradient does not depend on the thread that computes it."""
    step, x_first, radius = 2 / s, (1 - s) / s, math.sqrt(threshold)
    inv_sigma, inv_gamma, inv_range = 1 / sigma, 1 / gamma, 1 / (far - near)
    part = np.zeros(24 * LANES)  # sum n of lane l at n·LANES + l
    sums = np.zeros(24)  # 4 per edge (see _write_gradients), then the 9 colour and 3 depth sums
    current = -1
    for i in range(lo, hi):
        img = i // f
        if img != current:
            _pixel_terms(grad_out, acc, den, n0, n1, n2, prod, f, s, stride, per_pixel, g0, g1, g2, h, img)
            current = img
        t = _face(fr, i)
        cc = _colors(colors, i)
        bary, inv_depth = _surface_frame(fr, i)
        facing = double_sided or fr[i, FRONT] > 0
        part[:] = 0.0
        for r in range(boxes[i, 2], boxes[i, 3] + 1):
            py = (s - 1 - 2 * r) / s
            row, local = (img * s + r) * stride, r * stride  # in the forward's arrays, in this image's
            c0, c1 = _row_span(t, py, boxes[i, 0], boxes[i, 1], s, radius)
            for first in range(c0, c1 + 1, lanes):
                for lane in range(lanes):
                    c = first + lane
                    p, q = np.uint64(row + c), np.uint64(local + c)
                    terms = _rgba_gradient_terms(t, bary, inv_depth, cc, facing, c, c1, c * step + x_first, py,
                                                 per_pixel[q], shift[p], g0[q], g1[q], g2[q], h[q], prod, inv_sigma,
                                                 threshold, near, far, inv_range, inv_gamma)
                    k, m = terms[0], np.uint64(lane)
                    # The nearest edge's four terms into its own sums; written out: a loop over a tuple of
                    # terms would index it at run time.
                    part[m + 0 * LANES] += terms[1] if k == 0 else 0.0
                    part[m + 1 * LANES] += terms[2] if k == 0 else 0.0
                    part[m + 2 * LANES] += terms[3] if k == 0 else 0.0
                    part[m + 3 * LANES] += terms[4] if k == 0 else 0.0
                    part[m + 4 * LANES] += terms[1] if k == 1 else 0.0
                    part[m + 5 * LANES] += terms[2] if k == 1 else 0.0
                    part[m + 6 * LANES] += terms[3] if k == 1 else 0.0
                    part[m + 7 * LANES] += terms[4] if k == 1 else 0.0
                    part[m + 8 * LANES] += terms[1] if k == 2 else 0.0
                    part[m + 9 * LANES] += terms[2] if k == 2 else 0.0
                    part[m + 10 * LANES] += terms[3] if k == 2 else 0.0
                    part[m + 11 * LANES] += terms[4] if k == 2 else 0.0
                    part[m + 12 * LANES] += terms[5]
                    part[m + 13 * LANES] += terms[6]
                    part[m + 14 * LANES] += terms[7]
                    part[m + 15 * LANES] += terms[8]
                    part[m + 16 * LANES] += terms[9]
                    part[m + 17 * LANES] += terms[10]
                    part[m + 18 * LANES] += terms[11]
                    part[m + 19 * LANES] += terms[12]
                    part[m + 20 * LANES] += terms[13]
                    part[m + 21 * LANES] += terms[14]
                    part[m + 22 * LANES] += terms[15]
                    part[m + 23 * LANES] += terms[16]
        _add_lanes(part, sums)
        _write_gradients(grad_fv, t, i, sums)
        _write_color_and_depth_gradients(fr, grad_fv, grad_colors, i, sums[12:21], sums[21:24])


@njit(inline="always")
def _write_color_and_depth_gradients(fr, grad_fv, grad_colors, i, q, zsum):  # pragma: no cover
    """grad_colors[i] from the colour sums q (:func:`_store_color_gradients`); grad_fv[i, k, 2] from
    Σ ∂loss/∂inv_z·w̄_k per corner."""
    _store_color_gradients(grad_colors, i, q)
    # ∂inv_z/∂z_k = −w̄_k/z_k², where z_k was not clamped away from 0.
    for k in range(3):
        zk = fr[i, DEPTH + k]
        grad_fv[i, k, 2] = -zsum[k] / (zk * zk) if abs(zk) > MIN_DEPTH else 0.0


@njit(inline="always")
def _pixel_terms(grad_out, acc, den, n0, n1, n2, prod, f, s, stride, p0, p1, p2, p3, p4, img):  # pragma: no cover
    """:func:`rgba_backward`'s per-pixel inputs for image img, into p0 … p4 (S·stride each, in rows of ``stride``
    pixels, the padding set to 0): per_pixel (∂loss/∂alpha·Π(1 − D) for 'prod', ∂loss/∂alpha/F for 'sum'),
    g = ∂loss/∂rgb / den (3) and h = Σ g·rgb with rgb = num/den, from grad_out (B, 4, S·S) and the forward's sums.
    Vector code: one row at a time, a pixel's terms computed apart from its neighbours'."""
    inv_f = 1 / f
    for r in range(s):
        row, local, q0 = np.uint64((img * s + r) * stride), np.uint64(r * stride), np.uint64(r * s)
        for c in range(s):
            q, p, m = q0 + np.uint64(c), row + np.uint64(c), local + np.uint64(c)
            inv_den = 1 / den[p]
            g0, g1, g2 = grad_out[img, 0, q] * inv_den, grad_out[img, 1, q] * inv_den, grad_out[img, 2, q] * inv_den
            p0[m] = grad_out[img, 3, q] * acc[p] if prod else grad_out[img, 3, q] * inv_f
            p1[m], p2[m], p3[m] = g0, g1, g2
            p4[m] = (g0 * n0[p] + g1 * n1[p] + g2 * n2[p]) * inv_den
        for c in range(s, stride):
            m = local + np.uint64(c)
            p0[m] = p1[m] = p2[m] = p3[m] = p4[m] = 0.0
