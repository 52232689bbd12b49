"""The Triton kernels of :mod:`recon.render.triton_path` (imported on first use: Triton decides when a kernel is
defined whether it compiles it or, with ``TRITON_INTERPRET=1``, interprets it on CPU tensors)."""

import triton
import triton.language as tl

# Columns of the per-face frames (see recon.render.triton_path.face_frames).
NX, NY, HC, UX, UY = tl.constexpr(0), tl.constexpr(3), tl.constexpr(6), tl.constexpr(9), tl.constexpr(12)
UC, LEN, INV, INTERIOR = tl.constexpr(15), tl.constexpr(18), tl.constexpr(21), tl.constexpr(24)
FRAME_SIZE = tl.constexpr(25)
BARY, DEPTH, FRONT, INV_DEPTH = tl.constexpr(25), tl.constexpr(34), tl.constexpr(37), tl.constexpr(38)
SURFACE_FRAME_SIZE = tl.constexpr(41)
MIN_DET, MIN_DEPTH = tl.constexpr(1e-10), tl.constexpr(1e-6)
MIN_INV_Z, MIN_WEIGHT_SUM = tl.constexpr(1e-12), tl.constexpr(1e-5)
# params[]: the settings' numbers in the input's dtype (a Python float argument would be float32 in a kernel).
P_INV_SIGMA, P_THRESHOLD, P_RADIUS, P_INV_GAMMA = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
P_NEAR, P_FAR, P_EPS, P_BACKGROUND = tl.constexpr(4), tl.constexpr(5), tl.constexpr(6), tl.constexpr(7)


@triton.jit
def edge(fr, k: tl.constexpr, px, py):
    """(d², h, excess, foot) of pixels (px, py) against edge k of the face whose frame starts at fr."""
    nx, ny, hc = tl.load(fr + NX + k), tl.load(fr + NY + k), tl.load(fr + HC + k)
    ux, uy, uc = tl.load(fr + UX + k), tl.load(fr + UY + k), tl.load(fr + UC + k)
    length = tl.load(fr + LEN + k)
    h = nx * px + ny * py + hc
    u = ux * px + uy * py + uc
    foot = tl.minimum(tl.maximum(u, 0.0), length)
    excess = u - foot
    return h * h + excess * excess, h, excess, foot


@triton.jit
def forward(frames, boxes, acc, params, faces, size, PROD: tl.constexpr, BLOCK: tl.constexpr):
    """acc (B·S²): Π(1 − D) ('prod') or Σ D ('sum') over each pixel's kept cells, for one (image, tile): the
    faces in order."""
    inv_sigma, threshold = tl.load(params + P_INV_SIGMA), tl.load(params + P_THRESHOLD)
    img = tl.program_id(0)
    dtype = frames.dtype.element_ty
    p, valid, r, c, px, py, row_lo, row_hi = tile(size, dtype, BLOCK)
    a = tl.full([BLOCK], 1.0 if PROD else 0.0, dtype)  # Π(1 − D) from 1, or Σ D from 0
    for j in range(faces):
        face = img * faces + j
        c0, c1, r0, r1 = face_box(boxes, face)
        if (r0 <= row_hi) & (r1 >= row_lo) & (c0 <= c1):
            fr = frames + FRAME_SIZE * face
            keep, _, e, d, _, _, _, _, _, _, _, _, _, _, _, _ = coverage(fr, px, py, inv_sigma, threshold,
                                                                         in_face_box(r, c, c0, c1, r0, r1))
            a = add_coverage(a, keep, e, d, PROD)
    tl.store(acc + img * size * size + p, a, mask=valid)


@triton.jit
def backward(frames, boxes, per_pixel, grad, params, faces, size, dims, PROD: tl.constexpr, BLOCK: tl.constexpr):
    """grad (N, 3, dims) x and y for one face, its box's cells evaluated again; per_pixel (B·S²):
    ∂loss/∂alpha·(1 − alpha) ('prod') or ∂loss/∂alpha / F."""
    inv_sigma, threshold = tl.load(params + P_INV_SIGMA), tl.load(params + P_THRESHOLD)
    face = tl.program_id(0)
    img = face // faces
    dtype = frames.dtype.element_ty
    fr = frames + FRAME_SIZE * face
    c0, c1, r0, r1 = face_box(boxes, face)
    width, cells = tl.maximum(c1 - c0 + 1, 0), tl.maximum(c1 - c0 + 1, 0) * tl.maximum(r1 - r0 + 1, 0)
    # Per edge k: Σw·h, Σw·excess, Σw·foot·h, Σw·foot·excess over the cells where k is nearest.
    zero = tl.zeros([BLOCK], dtype)
    sh0, se0, sfh0, sfe0 = zero, zero, zero, zero
    sh1, se1, sfh1, sfe1 = zero, zero, zero, zero
    sh2, se2, sfh2, sfe2 = zero, zero, zero, zero
    for start in range(0, cells, BLOCK):
        in_box, r, c, px, py = box_cells(start, r0, c0, width, cells, size, dtype, BLOCK)
        keep, sign, e, d, d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2 = coverage(fr, px, py, inv_sigma,
                                                                                   threshold, in_box)
        pp = tl.load(per_pixel + img * size * size + r * size + c, mask=in_box, other=0.0)
        # ∂loss/∂x = per_pixel·D ('prod') or per_pixel·D(1 − D) ('sum'); ∂x/∂d² = sign/σ; the 2 of ∂d².
        if PROD:
            dx = pp * d
        else:
            dx = pp * d * d * e
        factor = tl.where(keep, dx * 2 * sign * inv_sigma, 0.0)
        sh0, se0, sfh0, sfe0, sh1, se1, sfh1, sfe1, sh2, se2, sfh2, sfe2 = add_window_terms(
            factor, d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2,
            sh0, se0, sfh0, sfe0, sh1, se1, sfh1, sfe1, sh2, se2, sfh2, sfe2)
    write_window_gradients(fr, grad + face * 3 * dims, dims, tl.sum(sh0, 0), tl.sum(se0, 0), tl.sum(sfh0, 0),
                           tl.sum(sfe0, 0), tl.sum(sh1, 0), tl.sum(se1, 0), tl.sum(sfh1, 0), tl.sum(sfe1, 0),
                           tl.sum(sh2, 0), tl.sum(se2, 0), tl.sum(sfh2, 0), tl.sum(sfe2, 0))


@triton.jit
def tile(size, dtype: tl.constexpr, BLOCK: tl.constexpr):
    """The program's BLOCK pixels of the image: (index, within the image, row, column, x, y, first and last row).
    Pixel centre c has x = (2c + 1 − S)/S; row r has y = (S − 1 − 2r)/S (row 0 at the top)."""
    tile_index = tl.program_id(1)
    p = tile_index * BLOCK + tl.arange(0, BLOCK)
    r, c = p // size, p % size
    px = (2 * c + 1 - size).to(dtype) / size
    py = (size - 1 - 2 * r).to(dtype) / size
    return p, p < size * size, r, c, px, py, (tile_index * BLOCK) // size, (tile_index * BLOCK + BLOCK - 1) // size


@triton.jit
def in_face_box(r, c, c0, c1, r0, r1):
    """Whether pixels (r, c) lie in the box (c0 … c1, r0 … r1)."""
    return (c >= c0) & (c <= c1) & (r >= r0) & (r <= r1)


@triton.jit
def add_coverage(a, keep, e, d, PROD: tl.constexpr):
    """A pixel's Π(1 − D) ('prod': 1 − D = e·D = sigmoid(−x)) or Σ D after a cell, unchanged if it is not kept."""
    if PROD:
        return tl.where(keep, a * (e * d), a)
    else:
        return tl.where(keep, a + d, a)


@triton.jit
def face_box(boxes, face):
    """(first col, last col, first row, last row) of the face's grown box."""
    box = boxes + 4 * face
    return tl.load(box), tl.load(box + 1), tl.load(box + 2), tl.load(box + 3)


@triton.jit
def box_cells(start, r0, c0, width, cells, size, dtype: tl.constexpr, BLOCK: tl.constexpr):
    """Cells start … start + BLOCK − 1 of a box of ``cells`` cells in rows of ``width`` from (r0, c0): (in the
    box, row, column, x, y)."""
    q = start + tl.arange(0, BLOCK)
    r, c = r0 + q // tl.maximum(width, 1), c0 + q % tl.maximum(width, 1)
    return q < cells, r, c, (2 * c + 1 - size).to(dtype) / size, (size - 1 - 2 * r).to(dtype) / size


@triton.jit
def add_window_terms(factor, d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2,
                     sh0, se0, sfh0, sfe0, sh1, se1, sfh1, sfe1, sh2, se2, sfh2, sfe2):
    """A face's 12 window sums after adding its cells' terms: factor = 2·∂loss/∂d² times h, excess, foot·h and
    foot·excess of the nearest edge (the lowest index on ties), into that edge's four sums."""
    near0 = (d0 <= d1) & (d0 <= d2)
    near1 = (~near0) & (d1 <= d2)
    near2 = (~near0) & (~near1)
    v0, v1, v2 = tl.where(near0, factor, 0.0), tl.where(near1, factor, 0.0), tl.where(near2, factor, 0.0)
    return (sh0 + v0 * h0, se0 + v0 * e0, sfh0 + v0 * f0 * h0, sfe0 + v0 * f0 * e0,
            sh1 + v1 * h1, se1 + v1 * e1, sfh1 + v1 * f1 * h1, sfe1 + v1 * f1 * e1,
            sh2 + v2 * h2, se2 + v2 * e2, sfh2 + v2 * f2 * h2, sfe2 + v2 * f2 * e2)


@triton.jit
def write_window_gradients(fr, g, dims, sh0, se0, sfh0, sfe0, sh1, se1, sfh1, sfe1, sh2, se2, sfh2, sfe2):
    """g[k·dims + 0, 1] = ∂loss/∂(x, y) of corner k from a face's window sums (per edge k: Σw·h, Σw·excess,
    Σw·foot·h, Σw·foot·excess, w = 2·∂loss/∂d² on the cells where k is nearest). SoftRas's ∂d²/∂p_a =
    2(1 − t)(q − p), ∂d²/∂p_b = 2t(q − p) onto edge (a, b), with q − p = −(h·n̂ + excess·û) and t = foot/length:
    edge k's sums without t go to corner k, the t-weighted ones (th, te) to corner k + 1."""
    th0, te0 = sfh0 * tl.load(fr + INV), sfe0 * tl.load(fr + INV)
    th1, te1 = sfh1 * tl.load(fr + INV + 1), sfe1 * tl.load(fr + INV + 1)
    th2, te2 = sfh2 * tl.load(fr + INV + 2), sfe2 * tl.load(fr + INV + 2)
    nx0, ny0, ux0, uy0 = tl.load(fr + NX), tl.load(fr + NY), tl.load(fr + UX), tl.load(fr + UY)
    nx1, ny1, ux1, uy1 = tl.load(fr + NX + 1), tl.load(fr + NY + 1), tl.load(fr + UX + 1), tl.load(fr + UY + 1)
    nx2, ny2, ux2, uy2 = tl.load(fr + NX + 2), tl.load(fr + NY + 2), tl.load(fr + UX + 2), tl.load(fr + UY + 2)
    tl.store(g, -((sh0 - th0) * nx0 + (se0 - te0) * ux0) - (th2 * nx2 + te2 * ux2))
    tl.store(g + 1, -((sh0 - th0) * ny0 + (se0 - te0) * uy0) - (th2 * ny2 + te2 * uy2))
    tl.store(g + dims, -((sh1 - th1) * nx1 + (se1 - te1) * ux1) - (th0 * nx0 + te0 * ux0))
    tl.store(g + dims + 1, -((sh1 - th1) * ny1 + (se1 - te1) * uy1) - (th0 * ny0 + te0 * uy0))
    tl.store(g + 2 * dims, -((sh2 - th2) * nx2 + (se2 - te2) * ux2) - (th1 * nx1 + te1 * ux1))
    tl.store(g + 2 * dims + 1, -((sh2 - th2) * ny2 + (se2 - te2) * uy2) - (th1 * ny1 + te1 * uy1))


@triton.jit
def coverage(fr, px, py, inv_sigma, threshold, in_box):
    """(kept, sign, e = exp(−sign·d²/σ), D = 1/(1 + e), d0, h0, excess0, foot0, …, foot2) of pixels (px, py)."""
    d0, h0, e0, f0 = edge(fr, 0, px, py)
    d1, h1, e1, f1 = edge(fr, 1, px, py)
    d2, h2, e2, f2 = edge(fr, 2, px, py)
    best = tl.minimum(tl.minimum(d0, d1), d2)
    inside = tl.minimum(tl.minimum(h0, h1), h2) > tl.load(fr + INTERIOR)
    keep = (inside | (best < threshold)) & in_box
    sign = tl.where(inside, 1.0, -1.0)
    e = tl.exp(tl.where(keep, -sign * best * inv_sigma, 0.0))  # exp(−x), x = sign·d²/σ
    return keep, sign, e, 1 / (1 + e), d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2


@triton.jit
def surface(fr, px, py):
    """(w̄0, w̄1, w̄2, z, inv_z) at (px, py): the clipped, renormalised barycentrics and the perspective-correct
    depth."""
    w0 = tl.load(fr + BARY) * px + tl.load(fr + BARY + 1) * py + tl.load(fr + BARY + 2)
    w1 = tl.load(fr + BARY + 3) * px + tl.load(fr + BARY + 4) * py + tl.load(fr + BARY + 5)
    w2 = tl.load(fr + BARY + 6) * px + tl.load(fr + BARY + 7) * py + tl.load(fr + BARY + 8)
    w0 = tl.minimum(tl.maximum(w0, 0.0), 1.0)
    w1 = tl.minimum(tl.maximum(w1, 0.0), 1.0)
    w2 = tl.minimum(tl.maximum(w2, 0.0), 1.0)
    scale = 1 / tl.maximum(w0 + w1 + w2, MIN_WEIGHT_SUM)
    w0, w1, w2 = w0 * scale, w1 * scale, w2 * scale
    inv_z = w0 * tl.load(fr + INV_DEPTH) + w1 * tl.load(fr + INV_DEPTH + 1) + w2 * tl.load(fr + INV_DEPTH + 2)
    z = 1 / tl.where(inv_z >= 0, tl.maximum(inv_z, MIN_INV_Z), tl.minimum(inv_z, -MIN_INV_Z))
    return w0, w1, w2, z, inv_z


@triton.jit
def rgba_forward(frames, boxes, colors, out, acc, shift, den, params, faces, size, face_stride, corner_stride,
                 double_sided, PROD: tl.constexpr, BLOCK: tl.constexpr):
    """out (B, 4, S²) RGBA, and per pixel acc (Π(1 − D) or Σ D), shift (the soft z-buffer's running maximum, from
    eps) and den (the softmax's denominator), for one (image, tile): the faces in order, online softmax."""
    inv_sigma, threshold, inv_gamma = tl.load(params + P_INV_SIGMA), tl.load(params + P_THRESHOLD), tl.load(
        params + P_INV_GAMMA)
    near, far, eps = tl.load(params + P_NEAR), tl.load(params + P_FAR), tl.load(params + P_EPS)
    background0 = tl.load(params + P_BACKGROUND)
    background1, background2 = tl.load(params + P_BACKGROUND + 1), tl.load(params + P_BACKGROUND + 2)
    img = tl.program_id(0)
    dtype = frames.dtype.element_ty
    p, valid, r, c, px, py, row_lo, row_hi = tile(size, dtype, BLOCK)
    a = tl.full([BLOCK], 1.0 if PROD else 0.0, dtype)  # Π(1 − D) from 1, or Σ D from 0
    m = tl.full([BLOCK], eps, dtype)
    old = tl.full([BLOCK], 1.0, dtype) * tl.exp(eps * inv_gamma + tl.zeros([BLOCK], dtype))
    x0, x1, x2 = old * background0, old * background1, old * background2
    inv_range = 1 / (far - near)
    for j in range(faces):
        face = img * faces + j
        c0, c1, r0, r1 = face_box(boxes, face)
        if (r0 <= row_hi) & (r1 >= row_lo) & (c0 <= c1):
            fr = frames + SURFACE_FRAME_SIZE * face
            keep, _, e, d, _, _, _, _, _, _, _, _, _, _, _, _ = coverage(fr, px, py, inv_sigma, threshold,
                                                                         in_face_box(r, c, c0, c1, r0, r1))
            w0, w1, w2, z, _ = surface(fr, px, py)
            facing = (double_sided != 0) | (tl.load(fr + FRONT) > 0)
            colored = keep & facing & (near <= z) & (z <= far)  # a back face of a one-sided render adds no colour
            # Online softmax: a nearer face (zn > M) rescales the sums by exp((M − zn)/γ) and weighs 1; a farther
            # one weighs exp((zn − M)/γ).
            zn = (far - z) * inv_range
            nearer = zn > m
            t = tl.exp(tl.where(colored, -tl.abs(zn - m) * inv_gamma, 0.0))
            rescale = tl.where(nearer, t, 1.0)
            weight = d * tl.where(nearer, 1.0, t)
            col = colors + face_stride * face
            k1, k2 = corner_stride, 2 * corner_stride
            c_r = w0 * tl.load(col) + w1 * tl.load(col + k1) + w2 * tl.load(col + k2)
            c_g = w0 * tl.load(col + 1) + w1 * tl.load(col + k1 + 1) + w2 * tl.load(col + k2 + 1)
            c_b = w0 * tl.load(col + 2) + w1 * tl.load(col + k1 + 2) + w2 * tl.load(col + k2 + 2)
            a = add_coverage(a, keep, e, d, PROD)
            old = tl.where(colored, old * rescale + weight, old)
            x0 = tl.where(colored, x0 * rescale + weight * c_r, x0)
            x1 = tl.where(colored, x1 * rescale + weight * c_g, x1)
            x2 = tl.where(colored, x2 * rescale + weight * c_b, x2)
            m = tl.where(colored & nearer, zn, m)
    base = img * size * size + p
    tl.store(acc + base, a, mask=valid)
    tl.store(shift + base, m, mask=valid)
    tl.store(den + base, old, mask=valid)
    image = out + img * 4 * size * size + p
    tl.store(image, x0 / old, mask=valid)
    tl.store(image + size * size, x1 / old, mask=valid)
    tl.store(image + 2 * size * size, x2 / old, mask=valid)
    if PROD:
        tl.store(image + 3 * size * size, 1 - a, mask=valid)
    else:
        tl.store(image + 3 * size * size, a / faces, mask=valid)


@triton.jit
def rgba_backward(frames, boxes, colors, pixels, grad_fv, grad_colors, params, faces, size, face_stride,
                  corner_stride, double_sided, PROD: tl.constexpr, BLOCK: tl.constexpr):
    """grad_fv (N, 3, 3) and grad_colors (N, 9) for one face, its box's cells evaluated again. pixels (6, B·S²):
    per_pixel, the shift, ∂loss/∂rgb / den (3) and h = Σ ∂loss/∂rgb·rgb / den."""
    inv_sigma, threshold, inv_gamma = tl.load(params + P_INV_SIGMA), tl.load(params + P_THRESHOLD), tl.load(
        params + P_INV_GAMMA)
    near, far = tl.load(params + P_NEAR), tl.load(params + P_FAR)
    face = tl.program_id(0)
    img = face // faces
    dtype = frames.dtype.element_ty
    npix = tl.num_programs(0) // faces * size * size
    fr = frames + SURFACE_FRAME_SIZE * face
    col = colors + face_stride * face
    k1, k2 = corner_stride, 2 * corner_stride
    cr0, cg0, cb0 = tl.load(col), tl.load(col + 1), tl.load(col + 2)
    cr1, cg1, cb1 = tl.load(col + k1), tl.load(col + k1 + 1), tl.load(col + k1 + 2)
    cr2, cg2, cb2 = tl.load(col + k2), tl.load(col + k2 + 1), tl.load(col + k2 + 2)
    facing = (double_sided != 0) | (tl.load(fr + FRONT) > 0)
    inv_range = 1 / (far - near)
    c0, c1, r0, r1 = face_box(boxes, face)
    width, cells = tl.maximum(c1 - c0 + 1, 0), tl.maximum(c1 - c0 + 1, 0) * tl.maximum(r1 - r0 + 1, 0)
    zero = tl.zeros([BLOCK], dtype)
    sh0, se0, sfh0, sfe0 = zero, zero, zero, zero
    sh1, se1, sfh1, sfe1 = zero, zero, zero, zero
    sh2, se2, sfh2, sfe2 = zero, zero, zero, zero
    q0r, q0g, q0b, q1r, q1g, q1b, q2r, q2g, q2b = zero, zero, zero, zero, zero, zero, zero, zero, zero
    z0, z1, z2 = zero, zero, zero
    for start in range(0, cells, BLOCK):
        in_box, r, c, px, py = box_cells(start, r0, c0, width, cells, size, dtype, BLOCK)
        keep, sign, e, d, d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2 = coverage(fr, px, py, inv_sigma,
                                                                                   threshold, in_box)
        w0, w1, w2, z, inv_z = surface(fr, px, py)
        colored = keep & facing & (near <= z) & (z <= far)
        pix = pixels + img * size * size + r * size + c
        per_pixel = tl.load(pix, mask=in_box, other=0.0)
        m = tl.load(pix + npix, mask=in_box, other=0.0)
        g0 = tl.load(pix + 2 * npix, mask=in_box, other=0.0)
        g1 = tl.load(pix + 3 * npix, mask=in_box, other=0.0)
        g2 = tl.load(pix + 4 * npix, mask=in_box, other=0.0)
        h = tl.load(pix + 5 * npix, mask=in_box, other=0.0)
        dd = d * d * e  # D(1 − D)
        ez = tl.exp(tl.where(colored, ((far - z) * inv_range - m) * inv_gamma, 0.0))
        weight = d * ez
        g_weight = (g0 * (w0 * cr0 + w1 * cr1 + w2 * cr2) + g1 * (w0 * cg0 + w1 * cg1 + w2 * cg2)
                    + g2 * (w0 * cb0 + w1 * cb1 + w2 * cb2) - h)
        # ∂loss/∂x: per_pixel·D ('prod') or per_pixel·D(1 − D) ('sum'), plus the colour's through D.
        if PROD:
            dx = per_pixel * d
        else:
            dx = per_pixel * dd
        dx = dx + tl.where(colored, g_weight * ez * dd, 0.0)
        factor = tl.where(keep, dx * 2 * sign * inv_sigma, 0.0)
        sh0, se0, sfh0, sfe0, sh1, se1, sfh1, sfe1, sh2, se2, sfh2, sfe2 = add_window_terms(
            factor, d0, h0, e0, f0, d1, h1, e1, f1, d2, h2, e2, f2,
            sh0, se0, sfh0, sfe0, sh1, se1, sfh1, sfe1, sh2, se2, sfh2, sfe2)
        a_r = tl.where(colored, g0 * weight, 0.0)
        a_g = tl.where(colored, g1 * weight, 0.0)
        a_b = tl.where(colored, g2 * weight, 0.0)
        q0r, q0g, q0b = q0r + a_r * w0, q0g + a_g * w0, q0b + a_b * w0
        q1r, q1g, q1b = q1r + a_r * w1, q1g + a_g * w1, q1b + a_b * w1
        q2r, q2g, q2b = q2r + a_r * w2, q2g + a_g * w2, q2b + a_b * w2
        # zn = (far − z)/(far − near), z = 1/inv_z, inv_z = Σ w̄_k/z_k: ∂zn/∂inv_z = z²/(far − near).
        g_inv_z = tl.where(colored & (tl.abs(inv_z) >= MIN_INV_Z),
                           g_weight * weight * inv_gamma * inv_range * z * z, 0.0)
        z0, z1, z2 = z0 + g_inv_z * w0, z1 + g_inv_z * w1, z2 + g_inv_z * w2
    write_window_gradients(fr, grad_fv + face * 9, 3, tl.sum(sh0, 0), tl.sum(se0, 0), tl.sum(sfh0, 0),
                           tl.sum(sfe0, 0), tl.sum(sh1, 0), tl.sum(se1, 0), tl.sum(sfh1, 0), tl.sum(sfe1, 0),
                           tl.sum(sh2, 0), tl.sum(se2, 0), tl.sum(sfh2, 0), tl.sum(sfe2, 0))
    # ∂inv_z/∂z_k = −w̄_k/z_k², where z_k was not clamped away from 0.
    g = grad_fv + face * 9
    for k in tl.static_range(3):
        zk = tl.load(fr + DEPTH + k)
        if k == 0:
            zs = tl.sum(z0, 0)
        elif k == 1:
            zs = tl.sum(z1, 0)
        else:
            zs = tl.sum(z2, 0)
        tl.store(g + 3 * k + 2, tl.where(tl.abs(zk) > MIN_DEPTH, -zs / (zk * zk), 0.0))
    gc = grad_colors + 9 * face
    tl.store(gc, tl.sum(q0r, 0))
    tl.store(gc + 1, tl.sum(q0g, 0))
    tl.store(gc + 2, tl.sum(q0b, 0))
    tl.store(gc + 3, tl.sum(q1r, 0))
    tl.store(gc + 4, tl.sum(q1g, 0))
    tl.store(gc + 5, tl.sum(q1b, 0))
    tl.store(gc + 6, tl.sum(q2r, 0))
    tl.store(gc + 7, tl.sum(q2g, 0))
    tl.store(gc + 8, tl.sum(q2b, 0))


@triton.jit
def finite(v):
    """Neither NaN nor ±inf."""
    return (v == v) & (tl.abs(v) < float("inf"))


@triton.jit
def face_frames(fv, frames, boxes, params, n, dims, size, SURFACE: tl.constexpr, HAS_DEPTH: tl.constexpr,
                BLOCK: tl.constexpr):
    """frames (N, FRAME_SIZE or SURFACE_FRAME_SIZE) and boxes (N, 4) = (first col, last col, first row, last row)
    of the cells within √T of each face's box, for BLOCK faces of fv (N, 3, dims) corners (x_ndc, y_ndc[, z]). A
    face with a non-finite corner gets an empty box (last < first) and a frame of zeros."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = i < n
    corner = fv + i * 3 * dims
    x0, y0 = tl.load(corner, mask=valid, other=0.0), tl.load(corner + 1, mask=valid, other=0.0)
    x1, y1 = tl.load(corner + dims, mask=valid, other=0.0), tl.load(corner + dims + 1, mask=valid, other=0.0)
    x2 = tl.load(corner + 2 * dims, mask=valid, other=0.0)
    y2 = tl.load(corner + 2 * dims + 1, mask=valid, other=0.0)
    ok = finite(x0) & finite(y0) & finite(x1) & finite(y1) & finite(x2) & finite(y2)
    radius = tl.load(params + P_RADIUS)
    # Pixel centre c has x = (2c + 1 − S)/S; row r has y = (S − 1 − 2r)/S (row 0 at the top).
    s = size * 1.0
    c_lo = ((tl.minimum(tl.minimum(x0, x1), x2) - radius) * s + s - 1) / 2
    c_hi = ((tl.maximum(tl.maximum(x0, x1), x2) + radius) * s + s - 1) / 2
    r_lo = (s - 1 - (tl.maximum(tl.maximum(y0, y1), y2) + radius) * s) / 2
    r_hi = (s - 1 - (tl.minimum(tl.minimum(y0, y1), y2) - radius) * s) / 2
    box = boxes + 4 * i
    tl.store(box, tl.where(ok, tl.ceil(tl.minimum(tl.maximum(c_lo, 0.0), s)), 0.0).to(tl.int32), mask=valid)
    tl.store(box + 1, tl.where(ok, tl.floor(tl.minimum(tl.maximum(c_hi, -1.0), s - 1)), -1.0).to(tl.int32),
             mask=valid)
    tl.store(box + 2, tl.where(ok, tl.ceil(tl.minimum(tl.maximum(r_lo, 0.0), s)), 0.0).to(tl.int32), mask=valid)
    tl.store(box + 3, tl.where(ok, tl.floor(tl.minimum(tl.maximum(r_hi, -1.0), s - 1)), -1.0).to(tl.int32),
             mask=valid)
    if SURFACE:
        fr = frames + i * SURFACE_FRAME_SIZE
    else:
        fr = frames + i * FRAME_SIZE
    det = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    orient = tl.where(det < 0, -1.0, 1.0)
    edge_frame(fr, 0, x0, y0, x1, y1, orient, ok, valid)
    edge_frame(fr, 1, x1, y1, x2, y2, orient, ok, valid)
    edge_frame(fr, 2, x2, y2, x0, y0, orient, ok, valid)
    tl.store(fr + INTERIOR, tl.where(ok & (det == 0), float("inf"), 0.0), mask=valid)
    if SURFACE:
        # Barycentrics from the clamped-determinant inverse (|det| ≥ 1e-10, sign kept), as SoftRas.
        bdet = x2 * (y0 - y1) + x0 * (y1 - y2) + x1 * (y2 - y0)
        inv_det = 1 / tl.where(bdet > 0, tl.maximum(bdet, MIN_DET), tl.minimum(bdet, -MIN_DET))
        tl.store(fr + BARY, tl.where(ok, (y1 - y2) * inv_det, 0.0), mask=valid)
        tl.store(fr + BARY + 1, tl.where(ok, (x2 - x1) * inv_det, 0.0), mask=valid)
        tl.store(fr + BARY + 2, tl.where(ok, (x1 * y2 - x2 * y1) * inv_det, 0.0), mask=valid)
        tl.store(fr + BARY + 3, tl.where(ok, (y2 - y0) * inv_det, 0.0), mask=valid)
        tl.store(fr + BARY + 4, tl.where(ok, (x0 - x2) * inv_det, 0.0), mask=valid)
        tl.store(fr + BARY + 5, tl.where(ok, (x2 * y0 - x0 * y2) * inv_det, 0.0), mask=valid)
        tl.store(fr + BARY + 6, tl.where(ok, (y0 - y1) * inv_det, 0.0), mask=valid)
        tl.store(fr + BARY + 7, tl.where(ok, (x1 - x0) * inv_det, 0.0), mask=valid)
        tl.store(fr + BARY + 8, tl.where(ok, (x0 * y1 - x1 * y0) * inv_det, 0.0), mask=valid)
        for k in tl.static_range(3):
            if HAS_DEPTH:
                z = tl.load(corner + k * dims + 2, mask=valid, other=1.0)
            else:
                z = tl.full([BLOCK], 1.0, x0.dtype)
            z = tl.where(z >= 0, tl.maximum(z, MIN_DEPTH), tl.minimum(z, -MIN_DEPTH))
            tl.store(fr + DEPTH + k, tl.where(ok, z, 0.0), mask=valid)
            tl.store(fr + INV_DEPTH + k, tl.where(ok, 1 / z, 0.0), mask=valid)
        front = tl.where((y2 - y0) * (x1 - x0) < (y1 - y0) * (x2 - x0), 1.0, 0.0)
        tl.store(fr + FRONT, tl.where(ok, front, 0.0), mask=valid)


@triton.jit
def edge_frame(fr, k: tl.constexpr, xa, ya, xb, yb, orient, ok, valid):
    """Edge k's columns (corner a → b): inward normal, unit direction, their constants, length and 1/length."""
    ex, ey = xb - xa, yb - ya
    length = tl.sqrt(ex * ex + ey * ey)
    has_length = length > 0
    safe = tl.where(has_length, length, 1.0)
    ux = tl.where(has_length, ex / safe, 1.0)
    uy = tl.where(has_length, ey / safe, 0.0)
    nx, ny = -uy * orient, ux * orient
    tl.store(fr + NX + k, tl.where(ok, nx, 0.0), mask=valid)
    tl.store(fr + NY + k, tl.where(ok, ny, 0.0), mask=valid)
    tl.store(fr + HC + k, tl.where(ok, -(nx * xa + ny * ya), 0.0), mask=valid)
    tl.store(fr + UX + k, tl.where(ok, ux, 0.0), mask=valid)
    tl.store(fr + UY + k, tl.where(ok, uy, 0.0), mask=valid)
    tl.store(fr + UC + k, tl.where(ok, -(ux * xa + uy * ya), 0.0), mask=valid)
    tl.store(fr + LEN + k, tl.where(ok, length, 0.0), mask=valid)
    tl.store(fr + INV + k, tl.where(ok & has_length, 1 / safe, 0.0), mask=valid)
