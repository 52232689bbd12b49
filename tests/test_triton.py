"""The Triton kernels (``RECON_FUSED=triton``: silhouette, RGBA): compiled on a GPU, interpreted without one.

The interpreter runs the kernels' own code, program by program, with NumPy, on CPU tensors (``tests/conftest.py``
sets ``TRITON_INTERPRET=1`` before Triton is imported): what these tests check (values, gradients, culling, boxes,
degenerate faces, the dispatch) is what a GPU compiles, short of the compiler itself. Small scenes: the
interpreter takes a second for a few hundred faces.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from recon.mesh import icosphere
from recon.render import SoftRenderer, eye_from_angles, fused, soft_rasterize
from recon.render.reference import dense_soft_rasterize
from recon.render.silhouette import soft_silhouette
from recon.render.triton_path import interpreted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (pip install -e .[dev])"),
    pytest.mark.skipif(DEVICE == "cpu" and not interpreted(), reason="no GPU, and TRITON_INTERPRET is not set"),
]


@pytest.fixture(autouse=True)
def triton_path(monkeypatch):
    monkeypatch.setenv("RECON_FUSED", "triton")


def _scene(dtype, b=2, level=1, size=23, seed=1):
    """Projected corners (B, F, 3, 3) of a deformed sphere, in b views."""
    vertices, faces = icosphere(level)
    g = torch.Generator().manual_seed(seed)
    verts = vertices.to(dtype) * 0.5 * (1 + 0.1 * torch.randn(b, vertices.shape[0], 1, generator=g, dtype=dtype))
    eyes = eye_from_angles(2.732, 30.0, 40.0 * torch.arange(b)).to(dtype)
    return SoftRenderer(image_size=size).face_vertices(verts, faces, eyes).detach().to(DEVICE)


def _render(monkeypatch, path, fv, weight, **settings):
    """(alpha, ∂(Σ weight·alpha)/∂fv) with ``RECON_FUSED=path``."""
    monkeypatch.setenv("RECON_FUSED", path)
    x = fv.clone().requires_grad_()
    alpha = soft_silhouette(x, SoftRenderer(**settings).settings)
    (grad,) = torch.autograd.grad((alpha * weight.to(x.device)).sum(), x)
    return alpha.detach().cpu(), grad.cpu()


def _triton_and_eager(monkeypatch, fv, size, **settings):
    """(Triton, eager) results; asserts the Triton kernels served the first and not the second."""
    weight = torch.rand(fv.shape[0], 1, size, size, generator=torch.Generator().manual_seed(2), dtype=fv.dtype)
    before = fused.triton_calls["silhouette"]
    fast = _render(monkeypatch, "triton", fv, weight, image_size=size, **settings)
    assert fused.triton_calls["silhouette"] == before + 1 and not fused._triton_failed
    slow = _render(monkeypatch, "0", fv, weight, image_size=size, **settings)
    assert fused.triton_calls["silhouette"] == before + 1
    return fast, slow


def _assert_close(fast, slow, atol, rtol):
    assert (fast[0] - slow[0]).abs().max() <= atol, (fast[0] - slow[0]).abs().max()
    scale = slow[1].abs().max()
    assert scale > 0 and (fast[1] - slow[1]).abs().max() <= rtol * scale, ((fast[1] - slow[1]).abs().max(), scale)


@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_triton_silhouette_equals_eager_and_dense_reference(monkeypatch, aggr_alpha):
    fv = _scene(torch.float64)
    settings = dict(sigma=1e-3, aggr_alpha=aggr_alpha)
    fast, slow = _triton_and_eager(monkeypatch, fv, 23, **settings)
    covered = slow[0] > (0.5 if aggr_alpha == "prod" else 0.5 / fv.shape[1])
    assert 0.1 < covered.float().mean() < 0.9  # object and background: not a vacuous comparison
    _assert_close(fast, slow, atol=1e-12, rtol=1e-10)
    dense = dense_soft_rasterize(fv, None, image_size=23, **settings).cpu()
    assert (fast[0] - dense).abs().max() <= 1e-10


def test_triton_silhouette_in_float32_within_the_eager_tolerances(monkeypatch):
    fast, slow = _triton_and_eager(monkeypatch, _scene(torch.float32, b=1, size=29), 29, sigma=3e-4)
    assert fast[0].dtype == fast[1].dtype == torch.float32
    _assert_close(fast, slow, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_triton_silhouette_on_degenerate_faces_and_tiles_that_cut_rows(monkeypatch, aggr_alpha):
    # Zero-area faces (a segment, a point), a face larger than the image, one outside it, one with a NaN corner;
    # 17² pixels are not a whole number of 256-pixel tiles, so tiles end mid-row.
    corners = torch.tensor([
        [[-0.2, 0.0, 2.0], [0.0, 0.0, 2.0], [0.4, 0.0, 2.0]],
        [[0.1, 0.1, 2.0], [0.1, 0.1, 2.0], [0.1, 0.1, 2.0]],
        [[-3.0, -3.0, 2.0], [4.0, -2.5, 2.0], [0.5, 3.0, 2.0]],
        [[2.0, 2.0, 2.0], [2.5, 2.0, 2.0], [2.2, 2.6, 2.0]],
        [[0.0, 0.0, 2.0], [float("nan"), 0.3, 2.0], [0.2, 0.5, 2.0]],
        [[0.2, 0.2, 3.0], [0.9, 0.3, 3.0], [0.4, 0.8, 3.0]],
    ], dtype=torch.float64, device=DEVICE)[None]
    fast, slow = _triton_and_eager(monkeypatch, corners, 17, sigma=1e-3, aggr_alpha=aggr_alpha)
    # The NaN face adds nothing on either path, and gets no gradient.
    assert torch.isfinite(fast[0]).all() and torch.isfinite(fast[1][0, :4]).all() and (fast[1][0, 4] == 0).all()
    finite = torch.isfinite(slow[1])
    _assert_close((fast[0], fast[1][finite]), (slow[0], slow[1][finite]), atol=1e-12, rtol=1e-10)


def test_triton_silhouette_gradcheck(monkeypatch):
    monkeypatch.setenv("RECON_FUSED", "triton")
    fv = _scene(torch.float64, b=1, level=0, size=8)[:, :2].clone().requires_grad_()
    settings = SoftRenderer(image_size=8, sigma=1e-2).settings
    before = fused.triton_calls["silhouette"]
    # fast_mode: a few random projections of the Jacobian, not one backward per pixel (the interpreter is slow).
    assert torch.autograd.gradcheck(lambda x: soft_silhouette(x, settings), (fv,), eps=1e-6, atol=1e-6,
                                    fast_mode=True)
    assert fused.triton_calls["silhouette"] > before


def test_a_failing_triton_start_falls_back_with_one_log_line(monkeypatch, caplog):
    from recon.render import triton_path

    def broken(*_):
        raise RuntimeError("no GPU compiler here")

    monkeypatch.setattr(triton_path, "warm_up", broken)
    monkeypatch.setattr(fused, "_triton_ready", {})
    monkeypatch.setattr(fused, "_triton_failed", [])
    fv = _scene(torch.float64, b=1, level=0, size=8)
    with caplog.at_level(logging.WARNING, logger="recon.render.fused"):
        first = soft_silhouette(fv, SoftRenderer(image_size=8).settings)
        again = soft_silhouette(fv, SoftRenderer(image_size=8).settings)
    lines = [r.getMessage() for r in caplog.records if "Triton" in r.getMessage()]
    assert len(lines) == 1 and "no GPU compiler here" in lines[0]
    monkeypatch.setenv("RECON_FUSED", "0")
    assert torch.equal(first, again) and torch.allclose(first, soft_silhouette(fv, SoftRenderer(image_size=8).settings))


def _rgba(monkeypatch, path, fv, colors, weight, **settings):
    """(RGBA, ∂(Σ weight·RGBA)/∂fv, ∂…/∂colors) with ``RECON_FUSED=path``."""
    monkeypatch.setenv("RECON_FUSED", path)
    x, c = fv.clone().requires_grad_(), colors.clone().requires_grad_()
    image = soft_rasterize(x, c, **settings)
    grads = torch.autograd.grad((image * weight.to(x.device)).sum(), (x, c))
    return image.detach().cpu(), *(g.cpu() for g in grads)


@pytest.mark.parametrize(("aggr_alpha", "layout", "double_sided"),
                         [("prod", "per-corner", True), ("sum", "per-face", False)])
def test_triton_rgba_equals_eager_and_dense_reference(monkeypatch, aggr_alpha, layout, double_sided):
    fv = _scene(torch.float64, b=2, level=0, size=19)
    g = torch.Generator().manual_seed(3)
    colors = torch.rand(*fv.shape[:2], 3 if layout == "per-corner" else 1, 3, generator=g, dtype=fv.dtype)
    settings = dict(image_size=19, sigma=1e-3, gamma=1e-3, aggr_alpha=aggr_alpha, double_sided=double_sided,
                    background=(0.2, 0.3, 0.4))
    weight = torch.rand(fv.shape[0], 4, 19, 19, generator=g, dtype=fv.dtype)
    before = fused.triton_calls["rgba"]
    fast = _rgba(monkeypatch, "triton", fv, colors.to(DEVICE), weight, **settings)
    assert fused.triton_calls["rgba"] == before + 1 and not fused._triton_failed
    slow = _rgba(monkeypatch, "0", fv, colors.to(DEVICE), weight, **settings)
    # Not vacuous: face colours, the background and soft edges all appear.
    assert (slow[0][:, :3] - torch.tensor([0.2, 0.3, 0.4], dtype=fv.dtype)[:, None, None]).abs().amax() > 0.1
    assert ((slow[0][:, 3] > 0.05) & (slow[0][:, 3] < 0.95)).any()
    assert (fast[0] - slow[0]).abs().max() <= 1e-12
    for got, want in zip(fast[1:], slow[1:], strict=True):
        assert got.shape == want.shape and (got - want).abs().max() <= 1e-10 * want.abs().max()
    dense = dense_soft_rasterize(fv, colors.to(DEVICE), **settings).cpu()
    assert (fast[0] - dense).abs().max() <= 1e-10


def test_triton_rgba_in_float32_within_the_eager_tolerances(monkeypatch):
    fv = _scene(torch.float32, b=1, level=1, size=17)
    colors = torch.rand(*fv.shape[:2], 3, 3, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    weight = torch.rand(1, 4, 17, 17, generator=torch.Generator().manual_seed(5))
    settings = dict(image_size=17, sigma=3e-4, gamma=1e-3)
    fast = _rgba(monkeypatch, "triton", fv, colors, weight, **settings)
    slow = _rgba(monkeypatch, "0", fv, colors, weight, **settings)
    assert fast[0].dtype == torch.float32 and (fast[0] - slow[0]).abs().max() <= 1e-5
    for got, want in zip(fast[1:], slow[1:], strict=True):
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_triton_rgba_gradcheck(monkeypatch):
    # With respect to the colours and the depths: SoftRas's backward holds the barycentrics constant, so the
    # screen positions are checked against the eager path and the dense reference instead, above.
    monkeypatch.setenv("RECON_FUSED", "triton")
    fv = _scene(torch.float64, b=1, level=0, size=6)[:, :2]
    xy, z = fv[..., :2], fv[..., 2:].clone().requires_grad_()
    colors = torch.rand(1, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    colors = colors.to(DEVICE).requires_grad_()
    settings = dict(image_size=6, sigma=1e-2, gamma=3e-2)
    before = fused.triton_calls["rgba"]
    # One input at a time: in fast mode, a projection mixing both would let the colours' larger terms hide the
    # depths'.
    assert torch.autograd.gradcheck(lambda d: soft_rasterize(torch.cat((xy, d), -1), colors.detach(), **settings), (z,),
                                    fast_mode=True)
    assert torch.autograd.gradcheck(lambda c: soft_rasterize(torch.cat((xy, z.detach()), -1), c, **settings),
                                    (colors,), fast_mode=True)
    assert fused.triton_calls["rgba"] > before


def test_triton_face_tables_equal_the_numba_kernels(monkeypatch):
    # Columns and boxes against recon.render.cpu_kernels.face_frames (float64 there and here): random faces, a
    # zero-area one, a vertical edge, a face outside the image and one with a NaN corner.
    import numpy as np

    from recon.render import cpu_kernels as ck
    from recon.render import triton_path as tp

    g = torch.Generator().manual_seed(8)
    fv = torch.rand(300, 3, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2
    fv[..., 2] = fv[..., 2].abs() * 3 - 0.5  # some depths behind the eye or at it
    fv[0, :, :2] = fv[0, :1, :2]
    fv[1, 1, 0] = fv[1, 0, 0]
    fv[2, :, :2] += 5.0
    fv[3, 1, 1] = float("nan")
    settings = SoftRenderer(image_size=37, sigma=1e-3).settings
    radius = float(tp.params(settings, fv.dtype, "cpu")[2])
    frames, boxes = tp.face_frames(fv.to(DEVICE), 37, tp.params(settings, fv.dtype, DEVICE), surface=True)
    frames, boxes = frames.cpu().numpy(), boxes.cpu().numpy()
    want_frames, want_boxes = np.zeros((300, ck.FRAME_SIZE)), np.zeros((300, 4), dtype=np.int64)
    ck.face_frames(fv.numpy(), 37, radius, True, want_frames, want_boxes, 0, 300)
    np.testing.assert_array_equal(boxes, want_boxes)
    assert (boxes[2, 1] < boxes[2, 0]) and (boxes[3, 1] < boxes[3, 0]) and (boxes[4:, 1] >= boxes[4:, 0]).any()
    ok = np.isfinite(fv.numpy()).all((1, 2))
    columns = [(tp.NX, ck.NX, 24), (tp.BARY, ck.BARY, 9), (tp.DEPTH, ck.DEPTH, 3), (tp.FRONT, ck.FRONT, 1),
               (tp.INV_DEPTH, ck.INV_DEPTH, 3)]
    for mine, theirs, count in columns:
        # A zero-area face's barycentric inverse divides rounding residue by the 1e-10 clamp: not compared.
        rows = ok & (np.arange(300) != 0) if mine == tp.BARY else ok
        np.testing.assert_allclose(frames[rows, mine:mine + count], want_frames[rows, theirs:theirs + count],
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(frames[ok, tp.INTERIOR], want_frames[ok, ck.INTERIOR])
    assert (frames[~ok] == 0).all()


@pytest.mark.slow
def test_every_kernel_compiles_for_ampere_and_hopper_and_the_cell_loops_spill_no_register():
    # What the interpreter cannot check: Triton's GPU compiler and NVIDIA's assembler, both in Triton's wheel, take
    # every kernel variant the launches use, with no GPU present; and the kernels that loop over cells keep their
    # state in registers (a spill is a memory round trip per cell).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "recon.render.triton_compile", "--json"], capture_output=True,
                         text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    kernels = {"face_frames", "forward", "backward", "rgba_forward", "rgba_backward"}
    assert {(r["kernel"], r["arch"], r["dtype"]) for r in rows} == {
        (k, a, d) for k in kernels for a in ("sm_80", "sm_90") for d in ("fp32", "fp64")}
    assert len(rows) == 44 and all(r["error"] == "" and r["registers"] > 0 for r in rows)
    assert [r for r in rows if r["kernel"] != "face_frames" and r["spill_bytes"] != 0] == []
    assert max(r["spill_bytes"] for r in rows) <= 16  # the per-face tables: once per face, a few bytes at most


def test_changing_the_silhouette_in_place_leaves_its_gradient_right():
    fv = _scene(torch.float64, b=1, size=15)
    weight = torch.rand(1, 1, 15, 15, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(DEVICE)
    x = fv.detach().clone().requires_grad_()
    alpha = soft_rasterize(x, None, image_size=15)
    alpha.mul_(2.0).sub_(0.5)
    (got,) = torch.autograd.grad((alpha * weight).sum(), x)
    x = fv.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad((soft_rasterize(x, None, image_size=15) * 2 * weight).sum(), x)
    assert fused.triton_calls["silhouette"] >= 2
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()


def test_changing_the_rgba_image_in_place_leaves_its_gradient_right():
    # As on the numba path: the backward's RGB is the forward's, whatever the caller does to the image it got.
    fv = _scene(torch.float64, b=1, size=15)
    colors = torch.rand(*fv.shape[:2], 3, 3, generator=torch.Generator().manual_seed(4), dtype=fv.dtype)
    weight = torch.rand(1, 4, 15, 15, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inputs = (fv.detach().to(DEVICE).requires_grad_(), colors.detach().to(DEVICE).requires_grad_())
    image = soft_rasterize(*inputs, image_size=15, gamma=1e-3)
    image.mul_(2.0).sub_(0.5)
    got = torch.autograd.grad((image * weight.to(DEVICE)).sum(), inputs)
    inputs = (fv.detach().to(DEVICE).requires_grad_(), colors.detach().to(DEVICE).requires_grad_())
    want = torch.autograd.grad((soft_rasterize(*inputs, image_size=15, gamma=1e-3) * 2 * weight.to(DEVICE)).sum(),
                               inputs)
    assert fused.triton_calls["rgba"] >= 2
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= 1e-12 * w.abs().max()
