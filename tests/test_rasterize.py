"""The culled soft rasterizer against the dense, literal reference; gradients; culling; degenerate input."""

from dataclasses import replace

import pytest
import torch

from recon.render import RasterSettings, SoftRenderer, eye_from_angles, soft_rasterize
from recon.render.reference import dense_soft_rasterize


def _random_face_vertices(b=2, f=12, scale=0.6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    centers = (torch.rand(b, f, 1, 2, generator=g) * 2 - 1) * 0.8
    xy = centers + (torch.rand(b, f, 3, 2, generator=g) - 0.5) * scale
    z = 2 + torch.rand(b, f, 3, 1, generator=g) * 2
    return torch.cat((xy, z), -1).to(dtype)


def _colors(fv, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*fv.shape[:2], 3, 3, generator=g, dtype=fv.dtype)


@pytest.mark.parametrize("sigma", [1e-4, 3e-5, 1e-3])
@pytest.mark.parametrize("aggr_alpha", ["prod", "sum", "hard"])
def test_alpha_matches_dense_reference(sigma, aggr_alpha):
    fv = _random_face_vertices(scale=0.3)
    kwargs = dict(image_size=32, sigma=sigma, dist_eps=1e-10, aggr_alpha=aggr_alpha)
    fast = soft_rasterize(fv, None, **kwargs)
    slow = dense_soft_rasterize(fv, None, **kwargs)
    assert fast.shape == (2, 1, 32, 32)
    assert (fast > 0).float().mean() > 0.01  # faces cover part of the image: not a vacuous comparison
    assert torch.allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("aggr_rgb", ["softmax", "hard"])
@pytest.mark.parametrize("double_sided", [True, False])
def test_rgb_matches_dense_reference(aggr_rgb, double_sided):
    fv = _random_face_vertices(scale=0.5, seed=3)
    colors = _colors(fv)
    kwargs = dict(image_size=24, sigma=1e-4, gamma=1e-2, aggr_rgb=aggr_rgb, double_sided=double_sided,
                  background=(0.2, 0.3, 0.4))
    fast = soft_rasterize(fv, colors, **kwargs)
    slow = dense_soft_rasterize(fv, colors, **kwargs)
    assert fast.shape == (2, 4, 24, 24)
    assert torch.allclose(fast, slow, atol=1e-4)
    # Both a face colour and the background appear: the comparison is not vacuous.
    assert (fast[:, :3] - torch.tensor([0.2, 0.3, 0.4])[:, None, None]).abs().amax() > 0.1


def test_gradients_match_dense_reference():
    fv = _random_face_vertices(scale=0.4, seed=5, dtype=torch.float64).requires_grad_()
    colors = _colors(fv).requires_grad_()
    target = torch.rand(2, 4, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kwargs = dict(image_size=24, sigma=3e-4, gamma=1e-2)
    grads = []
    for raster in (soft_rasterize, dense_soft_rasterize):
        out = raster(fv, colors, **kwargs)
        grads.append(torch.autograd.grad(((out - target) ** 2).sum(), (fv, colors)))
    for fast, slow in zip(*grads, strict=True):
        assert fast.abs().max() > 0
        assert torch.allclose(fast, slow, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
@pytest.mark.parametrize("sigma", [1e-4, 3e-4])
def test_silhouette_gradients_match_dense_reference(aggr_alpha, sigma):
    # The silhouette path (no colours) has its own backward: recomputed windows, gradients reduced per face.
    fv = _random_face_vertices(f=16, scale=0.4, seed=13, dtype=torch.float64).requires_grad_()
    target = torch.rand(2, 1, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kwargs = dict(image_size=24, sigma=sigma, aggr_alpha=aggr_alpha)
    grads = []
    for raster in (soft_rasterize, dense_soft_rasterize):
        out = raster(fv, None, **kwargs)
        grads.append(torch.autograd.grad(((out - target) ** 2).sum(), fv)[0])
    fast, slow = grads
    assert fast[..., :2].abs().max() > 1e-3
    assert torch.allclose(fast, slow, atol=1e-8, rtol=1e-6)


def test_silhouette_path_equals_the_pair_path():
    # Alpha without colours (window kernel) and the alpha channel of an RGBA render (pair lists) agree, values
    # and gradients, on a decoder-like mesh in the training setting.
    from recon.mesh import template_sphere

    vertices, faces = template_sphere()
    g = torch.Generator().manual_seed(2)
    v = (vertices * 0.35 * (1 + 0.1 * torch.randn(3, vertices.shape[0], 1, generator=g))).requires_grad_()
    eyes = eye_from_angles(2.732, 30.0, torch.tensor([0.0, -45.0, -150.0]))
    renderer = SoftRenderer(image_size=64)
    weight = torch.rand(3, 64, 64, generator=g)
    alpha = renderer.silhouette(v, faces, eyes)
    (grad_window,) = torch.autograd.grad((alpha * weight).sum(), v)
    rgba = renderer(v, faces, eyes, colors=torch.ones(3, faces.shape[0], 3), color_mode="face")
    (grad_pairs,) = torch.autograd.grad((rgba[:, 3] * weight).sum(), v)
    assert alpha.shape == (3, 64, 64)
    assert 0.1 < alpha.mean() < 0.9
    assert torch.allclose(alpha, rgba[:, 3], atol=1e-6)
    assert torch.allclose(grad_window, grad_pairs, rtol=1e-4, atol=1e-4 * grad_pairs.abs().max())


def test_silhouette_of_faces_larger_than_the_image():
    # Windows wider than the image (S = 50 is not a window size) must not wrap onto the next row.
    fv = torch.tensor(
        [[[[-3.0, -3.0, 2.0], [4.0, -2.5, 2.0], [0.5, 3.0, 2.0]], [[0.2, 0.2, 3.0], [0.9, 0.3, 3.0], [0.4, 0.8, 3.0]]]],
        dtype=torch.float64,
    ).requires_grad_()
    for size in (50, 17):
        fast = soft_rasterize(fv, None, image_size=size, sigma=1e-3)
        slow = dense_soft_rasterize(fv, None, image_size=size, sigma=1e-3)
        assert torch.allclose(fast, slow, atol=1e-10)
        (g_fast,) = torch.autograd.grad(fast.sum(), fv)
        (g_slow,) = torch.autograd.grad(slow.sum(), fv)
        assert torch.allclose(g_fast, g_slow, atol=1e-9)


def test_gradcheck_alpha_wrt_vertices_and_rgb_wrt_colours_float64():
    fv = _random_face_vertices(b=1, f=3, scale=0.9, seed=7, dtype=torch.float64).requires_grad_()
    colors = _colors(fv).requires_grad_()
    settings = dict(image_size=8, sigma=2e-2, gamma=0.5, dist_eps=1e-4)
    assert torch.autograd.gradcheck(lambda fv: soft_rasterize(fv, None, **settings), (fv,), eps=1e-6, atol=1e-5)
    # RGB w.r.t. geometry holds the clipped barycentrics constant, as SoftRas's backward does, so it is not the
    # finite-difference Jacobian; it is checked against the dense reference above instead.
    rgb = lambda c: soft_rasterize(fv.detach(), c, **settings)  # noqa: E731
    assert torch.autograd.gradcheck(rgb, (colors,), eps=1e-6, atol=1e-5)


def test_culling_changes_alpha_by_at_most_dist_eps_per_face():
    fv = _random_face_vertices(f=30, scale=0.2, seed=11, dtype=torch.float64)
    dist_eps = 1e-3
    culled = dense_soft_rasterize(fv, None, image_size=32, sigma=1e-3, dist_eps=dist_eps)
    full = dense_soft_rasterize(fv, None, image_size=32, sigma=1e-3, dist_eps=dist_eps, cull=False)
    fast = soft_rasterize(fv, None, image_size=32, sigma=1e-3, dist_eps=dist_eps)
    # Each culled pair had D < dist_eps: 1 − Π(1 − D) moves by at most Σ of those D.
    bound = dist_eps * fv.shape[1]
    assert (full - culled).abs().max() <= bound
    assert (full - culled).abs().max() > 0  # culling did drop pairs
    assert torch.allclose(fast, culled, atol=1e-10)


def test_degenerate_faces_near_plane_and_eye_are_finite():
    v = torch.tensor(
        [
            [0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.4, 0.0, 0.0],  # collinear: zero area
            [0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1],  # one point: zero area
            [0.0, 0.3, -2.2], [0.2, 0.3, -2.9], [0.0, -0.3, -3.1],  # crosses the near plane and the eye's depth
            [0.0, 1.366, -2.366], [0.1, 1.3, -2.3], [0.0, 0.0, 0.0],  # a vertex exactly at the eye
        ],
        dtype=torch.float64,
    )[None].requires_grad_()
    faces = torch.arange(12).reshape(4, 3)
    eye = eye_from_angles(2.732, 30.0, 0.0).double()
    renderer = SoftRenderer(image_size=32)
    with pytest.warns(UserWarning, match="silhouette"):
        out = renderer(v, faces, eye)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(v.grad).all()
    (grad,) = torch.autograd.grad(renderer.silhouette(v, faces, eye).sum(), v)  # the window kernel's backward
    assert torch.isfinite(grad).all()


def test_sigma_can_change_between_calls():
    fv = _random_face_vertices(scale=0.3)
    sharp = soft_rasterize(fv, None, image_size=32, sigma=1e-5)
    soft = soft_rasterize(fv, None, RasterSettings(image_size=32, sigma=1e-3))
    assert soft.sum() > sharp.sum()
    renderer = SoftRenderer(image_size=32)
    renderer.settings = replace(renderer.settings, sigma=1e-3)
    assert renderer.sigma == 1e-3 and renderer.settings.image_size == 32
    with pytest.raises(AttributeError):
        renderer.sigma = 1e-5  # one source of truth: the settings, replaced whole


@pytest.mark.parametrize("path", ["auto", "0"])
def test_autocast_and_half_precision_inputs_render_in_float32(monkeypatch, path):
    # Under autocast (Lightning's 16-mixed / bf16-mixed) the camera's matrix products ran in half precision and
    # moved this sphere's silhouette by up to 0.55 in alpha: the renderer switches autocast off and takes half
    # inputs as float32.
    from recon.mesh import icosphere

    monkeypatch.setenv("RECON_FUSED", path)
    vertices, faces = icosphere(2)
    verts = vertices[None].expand(2, -1, -1) * 0.4
    eyes = eye_from_angles(2.732, 30.0, torch.tensor([0.0, 90.0]))
    colors = torch.rand(2, faces.shape[0], 3, generator=torch.Generator().manual_seed(0))
    r = SoftRenderer(image_size=32)
    silhouette, image = r.silhouette(verts, faces, eyes), r(verts, faces, eyes, colors=colors)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            assert torch.equal(r.silhouette(verts, faces, eyes), silhouette)
            assert torch.equal(r(verts, faces, eyes, colors=colors), image)
            fv = r.face_vertices(verts, faces, eyes)
            assert fv.dtype == torch.float32
            assert torch.equal(soft_rasterize(fv, None, r.settings), silhouette[:, None])
        half = verts.to(dtype).requires_grad_()
        got = r.silhouette(half, faces, eyes)
        want = r.silhouette(half.detach().float(), faces, eyes)
        assert got.dtype == torch.float32 and torch.equal(got, want)
        got.sum().backward()
        assert half.grad.dtype == dtype and half.grad.abs().sum() > 0
        assert soft_rasterize(fv.to(dtype), None, r.settings).dtype == torch.float32


def test_renderer_validates_shapes():
    r = SoftRenderer(image_size=16)
    v = torch.rand(2, 4, 3)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    eyes = eye_from_angles(2.732, 30.0, torch.tensor([0.0, -15.0]))
    with pytest.raises(ValueError, match="vertices"):
        r(torch.rand(4, 3), f, eyes)
    with pytest.raises(ValueError, match="integer"):
        r(v, f.float(), eyes)
    with pytest.raises(ValueError, match="index vertices"):
        r(v, f + 5, eyes)
    with pytest.raises(ValueError, match="eyes"):
        r(v, f, torch.rand(3, 3))
    with pytest.raises(ValueError, match="colors"):
        r(v, f, eyes, colors=torch.rand(2, 5, 3))
    with pytest.raises(ValueError, match="aggr_rgb"):
        SoftRenderer(aggr_rgb="max")
    out = r(v, f, eyes, colors=torch.rand(2, 2, 3))
    assert out.shape == (2, 4, 16, 16)


def test_vertex_and_face_colours_agree_for_constant_colour():
    from recon.render.lighting import face_normals  # noqa: F401  (lighting is exercised through the renderer)

    g = torch.Generator().manual_seed(0)
    v = torch.rand(1, 6, 3, generator=g) - 0.5
    f = torch.tensor([[0, 1, 2], [3, 4, 5]])
    eye = eye_from_angles(2.732, 30.0, 0.0)
    r = SoftRenderer(image_size=32, lighting=None, aggr_rgb="hard")
    red = torch.tensor([1.0, 0.0, 0.0])
    by_face = r(v, f, eye, colors=red.expand(1, 2, 3))
    by_vertex = r(v, f, eye, colors=red.expand(1, 6, 3))
    assert torch.allclose(by_face, by_vertex)
    assert by_face[0, 0].max() == pytest.approx(1.0) and by_face[0, 1].max() == 0.0


def test_shading_lights_faces_whose_normal_points_up():
    # SoftRas lights in world space, independent of the view: 0.5 ambient + 0.5·relu(n·(0, 1, 0)).
    v = torch.tensor([[[-0.3, 0.0, -0.3], [0.3, 0.0, -0.3], [0.3, 0.0, 0.3], [-0.3, 0.0, 0.3]]])
    up = torch.tensor([[0, 2, 1], [0, 3, 2]])  # CCW seen from +y: normals +y
    r = SoftRenderer(image_size=32, aggr_rgb="hard")
    eye = eye_from_angles(2.732, 30.0, 0.0)
    with pytest.warns(UserWarning, match="silhouette"):  # no colours: a white mesh, through the pair path
        lit = r(v, up, eye)
        unlit = r(v, up.flip(-1), eye)  # normals −y
    covered = lit[0, 3] > 0.99
    assert covered.sum() > 20
    assert torch.allclose(lit[0, :3][:, covered], torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(unlit[0, :3][:, covered], torch.tensor(0.5), atol=1e-5)


def test_gpu_chunking_renders_the_same_with_far_fewer_dispatched_operations(monkeypatch):
    # On a GPU every tensor operation of a chunk is a kernel launch: its limits make fewer, larger chunks. Checked
    # here on the CPU by giving it the GPU's limits: the eager path (CUDA's) must render the same.
    from recon.mesh import icosphere
    from recon.render import culling

    monkeypatch.setenv("RECON_FUSED", "0")
    vertices, faces = icosphere(3)
    g = torch.Generator().manual_seed(0)
    v = vertices[None] * 0.35 * (1 + 0.25 * torch.rand(32, 1, 3, generator=g))
    renderer = SoftRenderer(image_size=64)
    fv = renderer.face_vertices(v, faces, eye_from_angles(2.732, 30.0, -15.0 * torch.arange(32.0))).detach()
    colors = torch.rand(*fv.shape[:2], 3, 3, generator=g)
    assert culling.chunk_limits(torch.device("cpu")) == (culling.MAX_CELLS, culling.CHUNK_COST)
    assert culling.chunk_limits(torch.device("cuda")) == (culling.GPU_MAX_CELLS, culling.GPU_CHUNK_COST)

    def render_and_count():
        outs = []
        with torch.profiler.profile() as prof:
            for c in (None, colors):
                x = fv.clone().requires_grad_()
                image = soft_rasterize(x, c, renderer.settings)
                image.sum().backward()
                outs.append((image.detach(), x.grad))
        xy = fv[..., :2].reshape(-1, 3, 2)
        plan = culling.plan_windows(xy, faces.shape[0], 64, renderer.settings.culling_threshold)
        return outs, sum(e.name.startswith("aten::") for e in prof.events()), len(plan.chunks)

    cpu, cpu_ops, cpu_chunks = render_and_count()
    monkeypatch.setattr(culling, "chunk_limits", lambda device: (culling.GPU_MAX_CELLS, culling.GPU_CHUNK_COST))
    gpu, gpu_ops, gpu_chunks = render_and_count()
    assert gpu_chunks < cpu_chunks / 5 and gpu_ops < cpu_ops / 5, (cpu_chunks, gpu_chunks, cpu_ops, gpu_ops)
    for (image, grad), (want, want_grad) in zip(gpu, cpu, strict=True):
        assert (image - want).abs().max() <= 1e-6
        assert (grad - want_grad).abs().max() <= 1e-5 * want_grad.abs().max()


def test_window_plan_covers_every_face_once_and_merges_small_buckets(monkeypatch):
    # Small batches have many nearly empty window-size buckets; merged runs must still hold every face's box,
    # visit each face exactly once, and render the same silhouette as one chunk per bucket.
    from recon.mesh import template_sphere
    from recon.render import culling
    from recon.render.culling import culling_threshold, plan_windows

    vertices, faces = template_sphere()
    g = torch.Generator().manual_seed(3)
    v = vertices * 0.35 * (1 + 0.1 * torch.randn(8, vertices.shape[0], 1, generator=g))
    eyes = eye_from_angles(2.732, 30.0, -15.0 * torch.arange(8.0))
    renderer = SoftRenderer(image_size=64)
    xy = renderer.face_vertices(v, faces, eyes)[..., :2].reshape(-1, 3, 2)
    threshold = culling_threshold(1e-4, 1e-10)

    def plan_and_alpha():
        plan = plan_windows(xy, faces.shape[0], 64, threshold)
        return plan, renderer.silhouette(v, faces, eyes)

    merged, alpha = plan_and_alpha()
    monkeypatch.setattr(culling, "CHUNK_COST", 0)
    apart, alpha_apart = plan_and_alpha()
    assert len(merged.chunks) < len(apart.chunks)
    for plan in (merged, apart):
        visited = torch.cat([chunk.faces for chunk in plan.chunks])
        assert visited.unique().numel() == visited.numel() == int(((plan.window.width > 0) & (plan.window.height > 0)).sum())
        for chunk in plan.chunks:
            assert torch.equal(chunk.faces, plan.order[chunk.lo : chunk.hi])
            assert plan.window.height[chunk.lo : chunk.hi].max() <= chunk.kh
            assert plan.window.width[chunk.lo : chunk.hi].max() <= chunk.kw
    assert torch.allclose(alpha, alpha_apart, atol=1e-6)
