"""The inductor-compiled silhouette kernels (``RECON_FUSED=inductor``) against the eager ones and the dense
reference; the eager fallback. (The default CPU kernels, numba's, are tests/test_numba_kernels.py.)

These tests turn the inductor kernels on at small sizes, so the compile cost (seconds with a warm inductor cache,
tens of seconds cold) is paid once per test run.
"""

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_numba_kernels import _degenerate_faces
from test_rasterize import _random_face_vertices

from recon.render import fused, soft_rasterize
from recon.render.reference import dense_soft_rasterize


def _alpha_and_grad(fv: torch.Tensor, weight: torch.Tensor, raster=soft_rasterize, **kwargs):
    """(alpha, ∂(Σ weight·alpha)/∂fv) of one rasterizer."""
    fv = fv.detach().requires_grad_()
    alpha = raster(fv, None, **kwargs)
    (grad,) = torch.autograd.grad((alpha * weight).sum(), fv)
    return alpha.detach(), grad


def _both_paths(monkeypatch, fv, weight, **kwargs):
    """(alpha, grad) eager, then fused; asserts the fused kernels really ran."""
    monkeypatch.setenv("RECON_FUSED", "0")
    eager = _alpha_and_grad(fv, weight, **kwargs)
    monkeypatch.setenv("RECON_FUSED", "inductor")
    before = sum(fused.compiled_calls.values())
    fast = _alpha_and_grad(fv, weight, **kwargs)
    assert not fused._failed, fused._failed
    assert sum(fused.compiled_calls.values()) > before  # the compiled kernels evaluated chunks
    return eager, fast


def _assert_close(fast, slow):
    (alpha_f, grad_f), (alpha_s, grad_s) = fast, slow
    assert torch.allclose(alpha_f, alpha_s.to(alpha_f.dtype), atol=1e-5)
    scale = grad_s.abs().max()
    assert scale > 0
    assert (grad_f - grad_s.to(grad_f.dtype)).abs().max() <= 1e-4 * scale


@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_fused_silhouette_equals_eager_and_dense_reference(monkeypatch, aggr_alpha):
    fv = _random_face_vertices(b=2, f=40, scale=0.4, seed=13)
    weight = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    kwargs = dict(image_size=24, sigma=1e-4, aggr_alpha=aggr_alpha)
    eager, fast = _both_paths(monkeypatch, fv, weight, **kwargs)
    assert (eager[0] > 1e-3).float().mean() > 0.05  # faces cover the image: not a vacuous comparison
    _assert_close(fast, eager)
    dense = dense_soft_rasterize(fv, None, **kwargs)
    assert torch.allclose(fast[0], dense, atol=1e-5)
    # A new σ is an argument of the compiled kernels, not a constant: same answers, no failure.
    eager, fast = _both_paths(monkeypatch, fv, weight, **{**kwargs, "sigma": 3e-4})
    _assert_close(fast, eager)


@pytest.mark.slow
@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_fused_float64_gradients_equal_the_dense_reference_and_pass_gradcheck(monkeypatch, aggr_alpha):
    # float64 compiles its own variants (seconds more): the gradients against the dense reference at 1e-4
    # relative need it, as float32 sums over large windows carry ~1e-3 relative rounding on either path.
    big = torch.tensor(
        [[[[-3.0, -3.0, 2.0], [4.0, -2.5, 2.0], [0.5, 3.0, 2.0]], [[0.2, 0.2, 3.0], [0.9, 0.3, 3.0], [0.4, 0.8, 3.0]]]],
        dtype=torch.float64,
    )
    cases = ((_random_face_vertices(b=2, f=40, scale=0.4, seed=13, dtype=torch.float64), 24), (big, 50), (big, 17))
    for fv, size in cases:
        weight = torch.rand(fv.shape[0], 1, size, size, generator=torch.Generator().manual_seed(size)).double()
        kwargs = dict(image_size=size, sigma=3e-4, aggr_alpha=aggr_alpha)
        _, fast = _both_paths(monkeypatch, fv, weight, **kwargs)
        _assert_close(fast, _alpha_and_grad(fv, weight, dense_soft_rasterize, **kwargs))
    tiny = _random_face_vertices(b=1, f=3, scale=0.9, seed=7, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: soft_rasterize(v, None, image_size=12, sigma=1e-2,
                                                             aggr_alpha=aggr_alpha), (tiny,))
    assert not fused._failed


@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_fused_silhouette_on_degenerate_faces_and_faces_larger_than_the_image(monkeypatch, aggr_alpha):
    # Zero-area faces, a face crossing the eye's depth, a vertex at the eye, and faces larger than the image
    # (windows wider than S must not wrap onto the next row).
    for faces, size in _degenerate_faces():
        weight = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(size))
        kwargs = dict(image_size=size, sigma=1e-3, aggr_alpha=aggr_alpha)
        eager, fast = _both_paths(monkeypatch, faces, weight, **kwargs)
        assert torch.isfinite(fast[0]).all() and torch.isfinite(fast[1]).all()
        _assert_close(fast, eager)
        dense = _alpha_and_grad(faces.double(), weight.double(), dense_soft_rasterize, **kwargs)
        assert torch.allclose(fast[0], dense[0].float(), atol=1e-5)
        # Gradients against the dense reference: in float64, test_fused_float64_gradients_equal_the_dense_...
        # (float32 sums over these large windows round at ~1e-3 relative, on the eager path too).


def test_failed_compilation_falls_back_to_eager_with_one_log_line(monkeypatch, caplog):
    def broken(fn):
        def call(*args):
            raise RuntimeError("inductor failed: no working C++ compiler\nsecond line")

        return call

    monkeypatch.setattr(fused, "compile_kernel", broken)
    monkeypatch.setattr(fused, "_compiled", {})
    monkeypatch.setattr(fused, "_failed", [])
    monkeypatch.setenv("RECON_FUSED", "inductor")
    fv = _random_face_vertices(b=2, f=12, scale=0.4, seed=5)
    weight = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    with caplog.at_level(logging.WARNING, logger="recon.render.fused"):
        first = _alpha_and_grad(fv, weight, image_size=24)
        second = _alpha_and_grad(fv, weight, image_size=24)
    lines = [r.getMessage() for r in caplog.records if r.name == "recon.render.fused"]
    assert len(lines) == 1 and "eager" in lines[0] and "no working C++ compiler" in lines[0]
    monkeypatch.setenv("RECON_FUSED", "0")
    eager = _alpha_and_grad(fv, weight, image_size=24)
    for got in (first, second):
        assert torch.equal(got[0], eager[0]) and torch.equal(got[1], eager[1])


@pytest.mark.slow
def test_missing_cxx_compiler_falls_back_to_eager_in_a_fresh_process(tmp_path):
    # A real failure, not a patched one: inductor is pointed at a C++ compiler that does not exist, with an empty
    # cache so nothing compiled earlier can be reused.
    script = textwrap.dedent(
        """
        import logging, os, torch
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
        from recon.render import soft_rasterize
        g = torch.Generator().manual_seed(0)
        xy = (torch.rand(1, 30, 3, 2, generator=g) - 0.5) * 1.2
        fv = torch.cat((xy, 2 + torch.rand(1, 30, 3, 1, generator=g)), -1).requires_grad_()
        fused = soft_rasterize(fv, None, image_size=24)
        fused.sum().backward()
        os.environ["RECON_FUSED"] = "0"
        eager = soft_rasterize(fv.detach(), None, image_size=24)
        print("EQUAL", torch.equal(fused.detach(), eager), bool(torch.isfinite(fv.grad).all()))
        """
    )
    env = {**os.environ, "RECON_FUSED": "inductor", "CXX": str(tmp_path / "no-such-c++"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "EQUAL True True" in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.startswith("recon.render.fused")]
    assert len(lines) == 1 and "eager path" in lines[0], out.stderr[-2000:]
