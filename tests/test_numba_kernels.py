"""The numba CPU kernels (the default on CPU) against the eager kernels and the dense literal reference.

Tolerances are the eager path's own against the reference: alpha 1e-5, gradients 1e-4 of their largest value, on
random faces, SoftRas's degenerate cases and faces larger than the image; float64 gradients against the
reference and a float64 gradcheck; the same bits on any number of threads; the eager fallback.
"""

import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_rasterize import _colors, _random_face_vertices

from recon.mesh import icosphere
from recon.render import Lighting, SoftRenderer, eye_from_angles, fused, soft_rasterize
from recon.render.reference import dense_soft_rasterize


def _render_and_grad(fv, colors, weight, raster=soft_rasterize, **kwargs):
    """(image, ∂(Σ weight·image)/∂fv, ∂…/∂colors or None) of one rasterizer."""
    fv = fv.detach().requires_grad_()
    inputs = (fv,) if colors is None else (fv, colors.detach().requires_grad_())
    out = raster(*inputs, **kwargs) if colors is not None else raster(fv, None, **kwargs)
    grads = torch.autograd.grad((out * weight[:, : out.shape[1]]).sum(), inputs)
    return (out.detach(), *grads) if colors is not None else (out.detach(), grads[0], None)


def _numba_and_eager(monkeypatch, fv, colors, weight, **kwargs):
    """(numba, eager) results; asserts the numba kernels served the first and not the second."""
    path = "silhouette" if colors is None else "rgba" if colors.shape[2] == 3 else "rgba-face"
    monkeypatch.setenv("RECON_FUSED", "auto")
    before = fused.numba_calls[path]
    fast = _render_and_grad(fv, colors, weight, **kwargs)
    assert fused.numba_calls[path] == before + 1 and not fused._numba_failed
    monkeypatch.setenv("RECON_FUSED", "0")
    slow = _render_and_grad(fv, colors, weight, **kwargs)
    assert fused.numba_calls[path] == before + 1
    return fast, slow


def _assert_close(fast, slow, atol=1e-5, rtol=1e-4):
    image_f, *grads_f = fast
    image_s, *grads_s = slow
    assert torch.allclose(image_f, image_s.to(image_f.dtype), atol=atol)
    for got, want in zip(grads_f, grads_s, strict=True):
        if want is None:
            continue
        scale = want.abs().max()
        assert scale > 0
        assert (got - want.to(got.dtype)).abs().max() <= rtol * scale, ((got - want).abs().max(), scale)


def _weight(fv, size, channels, seed=1):
    return torch.rand(fv.shape[0], channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=fv.dtype)


def _degenerate_faces():
    # Zero-area faces, a face crossing the eye's depth, a vertex at the eye, and faces larger than the image.
    v = torch.tensor(
        [
            [0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.4, 0.0, 0.0],
            [0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1],
            [0.0, 0.3, -2.2], [0.2, 0.3, -2.9], [0.0, -0.3, -3.1],
            [0.0, 1.366, -2.366], [0.1, 1.3, -2.3], [0.0, 0.0, 0.0],
            [-0.3, -0.2, 0.0], [0.3, -0.2, 0.1], [0.0, 0.3, 0.0],
        ]
    )[None]
    fv = SoftRenderer(image_size=32).face_vertices(v, torch.arange(15).reshape(5, 3), eye_from_angles(2.732, 30.0, 0.0))
    big = torch.tensor(
        [[[[-3.0, -3.0, 2.0], [4.0, -2.5, 2.0], [0.5, 3.0, 2.0]], [[0.2, 0.2, 3.0], [0.9, 0.3, 3.0], [0.4, 0.8, 3.0]]]]
    )
    return ((fv, 32), (big, 50), (big, 17))


@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_silhouette_equals_eager_and_dense_reference(monkeypatch, aggr_alpha):
    fv = _random_face_vertices(b=2, f=40, scale=0.4, seed=13)
    kwargs = dict(image_size=24, sigma=1e-4, aggr_alpha=aggr_alpha)
    fast, slow = _numba_and_eager(monkeypatch, fv, None, _weight(fv, 24, 1), **kwargs)
    assert (slow[0] > 1e-3).float().mean() > 0.05  # faces cover the image: not a vacuous comparison
    _assert_close(fast, slow)
    assert torch.allclose(fast[0], dense_soft_rasterize(fv, None, **kwargs), atol=1e-5)
    # A new σ is an argument, not a constant of the compiled code.
    fast, slow = _numba_and_eager(monkeypatch, fv, None, _weight(fv, 24, 1), **{**kwargs, "sigma": 3e-4})
    _assert_close(fast, slow)


@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_silhouette_on_degenerate_faces_and_faces_larger_than_the_image(monkeypatch, aggr_alpha):
    for faces, size in _degenerate_faces():
        kwargs = dict(image_size=size, sigma=1e-3, aggr_alpha=aggr_alpha)
        weight = _weight(faces, size, 1, seed=size)
        fast, slow = _numba_and_eager(monkeypatch, faces, None, weight, **kwargs)
        assert torch.isfinite(fast[0]).all() and torch.isfinite(fast[1]).all()
        assert torch.allclose(fast[0], slow[0], atol=1e-5)
        # Gradients in float64 on both sides: float32 sums over these large windows round at ~1e-3 relative on the
        # eager path (the numba kernels sum in float64).
        fast64, slow64 = _numba_and_eager(monkeypatch, faces.double(), None, weight.double(), **kwargs)
        _assert_close(fast64, slow64, atol=1e-10, rtol=1e-8)
        assert (fast[1].double() - slow64[1]).abs().max() <= 1e-4 * slow64[1].abs().max()
        dense = _render_and_grad(faces.double(), None, weight.double(), dense_soft_rasterize, **kwargs)
        assert torch.allclose(fast64[0], dense[0], atol=1e-10)
        if size != 32:  # zero-area faces: the reference's autograd splits a tie between edges, SoftRas takes one
            _assert_close(fast64, dense, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("layout", ["per-corner", "per-face"])
@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
@pytest.mark.parametrize("double_sided", [True, False])
def test_rgba_equals_eager_and_dense_reference_in_float64(monkeypatch, aggr_alpha, double_sided, layout):
    fv = _random_face_vertices(b=2, f=30, scale=0.5, seed=3, dtype=torch.float64)
    colors = _colors(fv) if layout == "per-corner" else _colors(fv)[:, :, :1]  # (B, F, 3, 3) or (B, F, 1, 3)
    kwargs = dict(image_size=24, sigma=1e-4, gamma=1e-4, aggr_alpha=aggr_alpha, double_sided=double_sided,
                  background=(0.2, 0.3, 0.4))
    fast, slow = _numba_and_eager(monkeypatch, fv, colors, _weight(fv, 24, 4), **kwargs)
    _assert_close(fast, slow, atol=1e-10, rtol=1e-8)
    # The dense reference's autograd overflows (NaN gradients) for small γ: compare with it at γ = 1e-2.
    kwargs["gamma"] = 1e-2
    dense = _render_and_grad(fv, colors, _weight(fv, 24, 4), dense_soft_rasterize, **kwargs)
    monkeypatch.setenv("RECON_FUSED", "auto")
    _assert_close(_render_and_grad(fv, colors, _weight(fv, 24, 4), **kwargs), dense, atol=1e-10, rtol=1e-8)
    # Not vacuous: face colours, the background and soft edges all appear.
    assert (fast[0][:, :3] - torch.tensor([0.2, 0.3, 0.4], dtype=fv.dtype)[:, None, None]).abs().amax() > 0.1
    assert ((fast[0][:, 3] > 0.05) & (fast[0][:, 3] < 0.95)).any()


@pytest.mark.parametrize("render", ["silhouette", "rgba"])
@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_rows_wider_than_the_vector_and_sizes_not_a_multiple_of_it(monkeypatch, aggr_alpha, render):
    # The kernels walk a row's span LANES cells at a time and select away the lanes beyond it; the per-pixel rows
    # are padded for the lanes beyond the image's last column. Wide faces, faces cut by the image's edges and sizes
    # that are not a multiple of LANES exercise both.
    scenes = ((_random_face_vertices(b=2, f=20, scale=1.2, seed=5, dtype=torch.float64), 23),
              (_random_face_vertices(b=1, f=6, scale=2.5, seed=7, dtype=torch.float64), 13))
    for fv, size in scenes:
        colors = _colors(fv) if render == "rgba" else None
        kwargs = dict(image_size=size, sigma=1e-3, gamma=1e-3, aggr_alpha=aggr_alpha, double_sided=False)
        channels = 4 if colors is not None else 1
        fast, slow = _numba_and_eager(monkeypatch, fv, colors, _weight(fv, size, channels, seed=size), **kwargs)
        _assert_close(fast, slow, atol=1e-10, rtol=1e-8)
        covered = fast[0][:, -1] > 0.5 / fv.shape[1]  # alpha of one face inside ('sum' divides by F)
        assert covered[..., -1].any() and not covered.all()  # a face covers the last column, not every pixel


def test_the_vector_exp_is_within_2_ulp_of_libm():
    import math

    import numpy as np
    from numba import njit

    from recon.render.cpu_kernels import _vexp

    @njit
    def vexp(xs):
        out = np.empty_like(xs)
        for i in range(xs.size):
            out[i] = _vexp(xs[i])
        return out

    xs = np.concatenate([np.linspace(-708, 709.7, 200_001), np.linspace(-1, 1, 20_001), [0.0, 1e-300, -1e-300]])
    got, want = vexp(xs), np.exp(xs)
    assert np.max(np.abs(got - want) / want) <= 2 * 2.0**-52
    assert got[xs == 0][0] == 1.0
    tiny = np.array([-720.0, -740.0, -745.0, -746.0, -1e5, -math.inf])  # subnormal results, then 0
    assert np.allclose(vexp(tiny), np.exp(tiny), rtol=1e-3, atol=0) and vexp(tiny)[-3:].tolist() == [0.0, 0.0, 0.0]


def test_every_kernel_declares_its_arrays_apart_to_llvm():
    # The vector loops rely on it (no run-time overlap checks between the per-pixel arrays they write). numba's
    # noalias flag is not a public option: this fails if a kernel loses the pipeline or numba stops honouring it.
    import numpy as np
    from numba import njit

    from recon.render import cpu_kernels as k

    kernels = [k.face_frames, k.silhouette_forward, k.silhouette_backward, k.rgba_forward, k.rgba_backward]
    assert all(kernel._compiler.pipeline_class is k._DistinctArrays for kernel in kernels)

    def scale(a, b, out):
        for i in range(out.size):
            out[i] = a[i] * b[i]

    options = {**k._KERNEL, "cache": False}  # inspection needs code compiled in this process
    for pipeline, marked in ((k._DistinctArrays, True), (None, False)):
        fn = njit(**{**options, "pipeline_class": pipeline})(scale)
        a = np.arange(4.0)
        out = np.empty(4)
        fn(a, a + 1, out)
        assert out.tolist() == [0.0, 2.0, 6.0, 12.0]
        define = next(line for line in next(iter(fn.inspect_llvm().values())).splitlines()
                      if line.startswith("define") and "scale" in line)
        assert (define.count("noalias") >= 3 + 2) is marked, define  # three data pointers, plus numba's own two


def test_rgba_in_float32_is_within_the_eager_paths_rounding_of_the_float64_reference(monkeypatch):
    # With γ = 1e-4 the soft z-buffer's weights exp(z/γ) amplify float32 rounding of the depth ~1e4 times: the
    # eager float32 path itself is ~1e-4 from the float64 one. The numba kernels compute in float64.
    fv = _random_face_vertices(b=2, f=30, scale=0.5, seed=3)
    colors = _colors(fv)
    kwargs = dict(image_size=24, sigma=1e-4, gamma=1e-4, background=(0.2, 0.3, 0.4))
    weight = _weight(fv, 24, 4)
    fast, slow = _numba_and_eager(monkeypatch, fv, colors, weight, **kwargs)
    monkeypatch.setenv("RECON_FUSED", "0")
    exact = _render_and_grad(fv.double(), colors.double(), weight.double(), **kwargs)  # eager float64 = dense
    eager_error = (slow[0].double() - exact[0]).abs().max()
    assert (fast[0].double() - exact[0]).abs().max() <= max(1e-6, eager_error)
    for k in (1, 2):
        assert (fast[k].double() - exact[k]).abs().max() <= 1e-5 * exact[k].abs().max()
    _assert_close(fast, slow, atol=2e-4, rtol=1e-3)


def test_rgba_on_degenerate_faces(monkeypatch):
    for faces, size in _degenerate_faces():
        faces = faces.double()
        colors = _colors(faces)
        kwargs = dict(image_size=size, sigma=1e-3, gamma=1e-3)
        fast, slow = _numba_and_eager(monkeypatch, faces, colors, _weight(faces, size, 4, seed=size), **kwargs)
        assert all(torch.isfinite(x).all() for x in fast)
        _assert_close(fast, slow, atol=1e-9, rtol=1e-7)


def test_one_colour_per_face_equals_it_repeated_at_each_corner(monkeypatch):
    fv = _random_face_vertices(b=2, f=30, scale=0.5, seed=3, dtype=torch.float64)
    per_face = _colors(fv)[:, :, :1]
    weight = _weight(fv, 24, 4)
    for path in ("auto", "0"):  # the numba kernels read (B, F, 1, 3) as it is; the eager path expands it
        monkeypatch.setenv("RECON_FUSED", path)
        image, grad_fv, grad_colors = _render_and_grad(fv, per_face, weight, image_size=24, gamma=1e-3)
        assert grad_colors.shape == per_face.shape
        repeated = _render_and_grad(fv, per_face.expand(-1, -1, 3, -1).contiguous(), weight, image_size=24,
                                    gamma=1e-3)
        _assert_close((image, grad_fv, grad_colors), (repeated[0], repeated[1], repeated[2].sum(2, keepdim=True)),
                      atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match=r"face_colors must be \(B, F, 3, 3\) per corner or \(B, F, 1, 3\) .*"
                                         r"got \(2, 30, 2, 3\)"):
        soft_rasterize(fv, _colors(fv)[:, :, :2], image_size=24)


@pytest.mark.parametrize("render", ["silhouette", "rgba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_changing_the_image_in_place_leaves_its_gradient_right(monkeypatch, dtype, render):
    # As on the eager path, a caller may change the image in place (clamping, masking) and gets the gradient of
    # what it computed: the image returned is no view, and the RGBA backward reads the RGB from the forward's own
    # sums, not from that image.
    fv = _random_face_vertices(b=2, f=30, scale=0.5, seed=3, dtype=dtype)
    colors = _colors(fv) if render == "rgba" else None
    weight = _weight(fv, 24, 4 if render == "rgba" else 1)
    monkeypatch.setenv("RECON_FUSED", "0")

    def inputs():
        return (fv.detach().requires_grad_(),) + (() if colors is None else (colors.detach().requires_grad_(),))

    def render_(x):
        return soft_rasterize(x[0], x[1] if colors is not None else None, image_size=24, gamma=1e-3)

    x = inputs()
    want = torch.autograd.grad((render_(x) * 2 * weight).sum(), x)
    grads = {}
    for path in ("auto", "0"):
        monkeypatch.setenv("RECON_FUSED", path)
        before = fused.numba_calls[render]
        x = inputs()
        image = render_(x)
        assert fused.numba_calls[render] == before + (path == "auto")
        image.mul_(2.0).sub_(0.5)
        grads[path] = torch.autograd.grad((image * weight).sum(), x)
    for got, eager, expected in zip(grads["auto"], grads["0"], want, strict=True):
        scale = expected.abs().max()
        assert (eager - expected).abs().max() <= 1e-6 * scale
        assert (got - expected).abs().max() <= (1e-4 if dtype == torch.float32 else 1e-10) * scale


@pytest.mark.parametrize("shape", [(0, 5), (2, 0)], ids=["no image", "no face"])
def test_an_empty_batch_or_mesh_renders_as_on_the_eager_path(monkeypatch, shape):
    monkeypatch.setenv("RECON_FUSED", "auto")
    fv = torch.zeros(*shape, 3, 3, requires_grad=True)
    colors = torch.rand(*shape, 3, 3, requires_grad=True)
    alpha = soft_rasterize(fv, None, image_size=8)
    image = soft_rasterize(fv, colors, image_size=8, background=(0.2, 0.3, 0.4))
    assert alpha.shape == (shape[0], 1, 8, 8) and image.shape == (shape[0], 4, 8, 8)
    (alpha.sum() + image.sum()).backward()
    assert fv.grad.shape == fv.shape and colors.grad.shape == colors.shape
    if shape[0]:  # no face: background, nothing covered
        assert alpha.abs().max() == 0 and torch.equal(image[:, :3, 0, 0], torch.tensor([[0.2, 0.3, 0.4]] * 2))


def test_float64_gradcheck(monkeypatch):
    monkeypatch.setenv("RECON_FUSED", "auto")
    before = dict(fused.numba_calls)
    fv = _random_face_vertices(b=1, f=3, scale=0.9, seed=7, dtype=torch.float64).requires_grad_()
    for aggr_alpha in ("prod", "sum"):
        assert torch.autograd.gradcheck(
            lambda v, a=aggr_alpha: soft_rasterize(v, None, image_size=12, sigma=1e-2, aggr_alpha=a), (fv,)
        )
    # RGBA: with respect to the colours and the depths (the barycentrics are held constant in SoftRas's backward,
    # so the screen positions are checked against the dense reference instead, above).
    # Per corner and one per face: the kernels compiled for each layout.
    xy = fv.detach()[..., :2]
    z = fv.detach()[..., 2:].clone().requires_grad_()
    for colors in (_colors(fv), _colors(fv)[:, :, :1]):
        assert torch.autograd.gradcheck(
            lambda c, d: soft_rasterize(torch.cat((xy, d), -1), c, image_size=12, sigma=1e-2, gamma=3e-2),
            (colors.clone().requires_grad_(), z),
        )
    assert fused.numba_calls["silhouette"] > before.get("silhouette", 0)
    assert fused.numba_calls["rgba"] > before.get("rgba", 0)


def _lighting_mesh(dtype):
    """Two images of a randomly deformed icosphere, each with its own face order (faces (B, F, 3)), one face of
    zero area (its normal below NORMAL_EPS) and one vertex left out of every face."""
    vertices, faces = icosphere(2)
    g = torch.Generator().manual_seed(5)
    verts = vertices[None] * (0.4 + 0.1 * torch.rand(2, vertices.shape[0], 1, generator=g, dtype=torch.float64))
    faces = torch.stack((faces, faces[torch.randperm(faces.shape[0], generator=g)].roll(1, dims=1)))
    faces[:, 0] = faces[:, 0, :1]  # zero area: all three corners are one vertex
    faces[faces == vertices.shape[0] - 1] = 0  # the last vertex belongs to no face: a zero vertex normal
    return verts.to(dtype), faces


@pytest.mark.parametrize(("dtype", "layout"), [(torch.float64, "per image"), (torch.float32, "per image"),
                                               (torch.float64, "shared")])
@pytest.mark.parametrize("shading", ["face", "vertex"])
def test_lighting_equals_the_eager_composition(monkeypatch, shading, dtype, layout):
    verts, faces = _lighting_mesh(dtype)
    if layout == "shared":  # one (F, 3) for the batch, expanded as the renderer does: the kernels read one row
        faces = faces[:1].expand(2, -1, -1)
    lighting = Lighting(ambient=0.3, directional=0.6, direction=(0.2, 0.9, -0.3))
    weight = torch.rand(*faces.shape[:2] if shading == "face" else verts.shape[:2], 1,
                        generator=torch.Generator().manual_seed(6), dtype=dtype)

    def lit():
        v = verts.clone().requires_grad_()
        out = lighting.face_intensity(v, faces) if shading == "face" else lighting.vertex_intensity(v, faces)
        (grad,) = torch.autograd.grad((out * weight).sum(), v)
        return out.detach(), grad

    monkeypatch.setenv("RECON_FUSED", "auto")
    before = fused.numba_calls["lighting"]
    fast = lit()
    assert fused.numba_calls["lighting"] == before + 1 and not fused._numba_failed
    monkeypatch.setenv("RECON_FUSED", "0")
    slow = lit()
    assert fused.numba_calls["lighting"] == before + 1
    assert fast[0].dtype == fast[1].dtype == dtype and fast[0].shape == slow[0].shape
    # Lit and unlit (relu's zero) elements both occur, and the degenerate ones are ambient alone.
    assert (slow[0] > 0.31).any() and (slow[0] == 0.3).any()
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    assert (fast[0] - slow[0]).abs().max() <= tolerance
    scale = slow[1].abs().max()
    assert scale > 0 and (fast[1] - slow[1]).abs().max() <= tolerance * scale
    assert slow[1][:, -1].abs().max() == 0 == fast[1][:, -1].abs().max()  # the vertex in no face


@pytest.mark.parametrize("shading", ["face", "vertex"])
def test_lighting_of_a_nan_vertex_is_nan_on_both_paths(monkeypatch, shading):
    verts, faces = _lighting_mesh(torch.float64)
    verts[0, 5, 1] = float("nan")
    lit = {}
    for path in ("auto", "0"):
        monkeypatch.setenv("RECON_FUSED", path)
        lit[path] = getattr(Lighting(), f"{shading}_intensity")(verts, faces)
    assert lit["0"].isnan().any() and lit["0"].isfinite().any()
    assert torch.equal(lit["auto"].isnan(), lit["0"].isnan())


def test_lighting_refuses_faces_that_index_no_vertex(monkeypatch):
    monkeypatch.setenv("RECON_FUSED", "auto")  # the kernels would read memory there unchecked
    verts, faces = _lighting_mesh(torch.float32)
    faces[1, 7, 2] = verts.shape[1]
    v = verts.shape[1]
    with pytest.raises(ValueError, match=f"faces index vertices 0..{v - 1}, got indices 0..{v}"):
        Lighting().face_intensity(verts, faces)
    with pytest.raises(ValueError, match=r"faces must be \(B, F, 3\) with B=2, got \(1, "):
        Lighting().vertex_intensity(verts, faces[:1])


def test_lighting_gradcheck(monkeypatch):
    monkeypatch.setenv("RECON_FUSED", "auto")
    vertices, faces = icosphere(1)
    g = torch.Generator().manual_seed(8)
    verts = (vertices[None] * (0.4 + 0.1 * torch.rand(1, vertices.shape[0], 1, generator=g, dtype=torch.float64)))
    lighting = Lighting(direction=(0.3, 0.8, 0.5))
    before = fused.numba_calls["lighting"]
    for intensity in (lighting.face_intensity, lighting.vertex_intensity):
        assert torch.autograd.gradcheck(lambda v, f=intensity: f(v, faces[None]), (verts.requires_grad_(),))
    assert fused.numba_calls["lighting"] >= before + 2


def test_same_bits_on_any_number_of_threads_and_banded_small_batches(monkeypatch):
    monkeypatch.setenv("RECON_FUSED", "auto")
    fv = _random_face_vertices(b=3, f=60, scale=0.3, seed=2)
    colors = _colors(fv)
    weight = _weight(fv, 40, 4)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 5):  # 3 images on 5 threads: each image is cut into bands of rows
            torch.set_num_threads(n)
            results.append([_render_and_grad(fv, None, weight, image_size=40),
                            _render_and_grad(fv, colors, weight, image_size=40, gamma=1e-3)])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True) if b is not None)
    monkeypatch.setenv("RECON_FUSED", "0")  # against eager float64 (float32 eager rounds at ~1e-4 here)
    _assert_close(results[-1][0], _render_and_grad(fv.double(), None, weight.double(), image_size=40))


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_the_first_call_may_come_without_gradients(monkeypatch, context):
    # Lightning's validation renders under inference mode; the first call's compile check must still work there.
    monkeypatch.setenv("RECON_FUSED", "auto")
    monkeypatch.setattr(fused, "_numba_ready", {})
    monkeypatch.setattr(fused, "_numba_failed", [])
    fv = _random_face_vertices(b=2, f=20, scale=0.4, seed=4)
    with torch.no_grad() if context == "no_grad" else torch.inference_mode():
        silhouette = soft_rasterize(fv, None, image_size=16)
        rgba = soft_rasterize(fv, _colors(fv), image_size=16)
    assert not fused._numba_failed and set(fused._numba_ready) == {("silhouette", "torch.float32"),
                                                                    ("rgba", "torch.float32")}
    monkeypatch.setenv("RECON_FUSED", "0")
    assert torch.allclose(silhouette, soft_rasterize(fv, None, image_size=16), atol=1e-5)
    assert torch.allclose(rgba, soft_rasterize(fv, _colors(fv), image_size=16), atol=1e-4)


def _render_in_child(queue):
    fv = _random_face_vertices(b=2, f=20, scale=0.4, seed=4)
    queue.put(soft_rasterize(fv, None, image_size=16).sum().item())


def test_a_forked_child_renders_after_its_parent_did(monkeypatch):
    # DataLoader workers and ddp_fork fork a process that has rendered: its thread pool must not be inherited.
    monkeypatch.setenv("RECON_FUSED", "auto")
    torch.set_num_threads(max(torch.get_num_threads(), 2))
    expected = soft_rasterize(_random_face_vertices(b=2, f=20, scale=0.4, seed=4), None, image_size=16).sum().item()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_render_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == expected


@pytest.mark.slow
def test_without_numba_the_eager_path_serves_with_one_log_line(tmp_path):
    script = textwrap.dedent(
        """
        import logging, os, sys, torch
        sys.modules["numba"] = None  # as if numba were not installed
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
        from recon.render import soft_rasterize
        g = torch.Generator().manual_seed(0)
        xy = (torch.rand(1, 30, 3, 2, generator=g) - 0.5) * 1.2
        fv = torch.cat((xy, 2 + torch.rand(1, 30, 3, 1, generator=g)), -1).requires_grad_()
        colors = torch.rand(1, 30, 3, 3, generator=g)
        first = [soft_rasterize(fv, None, image_size=24), soft_rasterize(fv, colors, image_size=24)]
        (first[0].sum() + first[1].sum()).backward()
        again = soft_rasterize(fv, None, image_size=24)
        os.environ["RECON_FUSED"] = "0"
        eager = soft_rasterize(fv.detach(), None, image_size=24)
        print("EQUAL", torch.equal(first[0].detach(), eager), torch.equal(again.detach(), eager),
              bool(torch.isfinite(fv.grad).all()))
        """
    )
    env = {**os.environ, "RECON_FUSED": "auto", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "EQUAL True True True" in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.startswith("recon.render.fused")]
    assert len(lines) == 1 and "eager path" in lines[0] and "numba" in lines[0], out.stderr[-2000:]
