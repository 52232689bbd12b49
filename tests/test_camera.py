"""Camera conventions of SoftRas/NMR: eye positions, look-at frame, perspective, pixel orientation."""

import math

import pytest
import torch

from recon.render import SoftRenderer, eye_from_angles, look_at, ndc_to_pixel, perspective, project


@pytest.mark.parametrize(
    ("view", "expected"),
    [(0, (0.0, 1.366, -2.366)), (1, (-0.612, 1.366, -2.285)), (6, (-2.366, 1.366, 0.0))],
)
def test_dataset_views_have_the_published_eye_positions(view, expected):
    eye = eye_from_angles(2.732, 30.0, -15.0 * view)
    assert eye.shape == (1, 3)
    assert torch.allclose(eye[0], torch.tensor(expected), atol=1e-3)


def test_eye_from_angles_broadcasts_tensors():
    eyes = eye_from_angles(2.732, 30.0, -15.0 * torch.arange(24.0))
    assert eyes.shape == (24, 3)
    assert torch.allclose(eyes.norm(dim=1), torch.full((24,), 2.732))
    assert torch.allclose(eyes[:, 1], torch.full((24,), 2.732 * math.sin(math.radians(30))))


def test_look_at_from_minus_z_is_the_world_frame():
    eye = torch.tensor([[0.0, 0.0, -3.0]])
    points = torch.tensor([[[0.3, -0.2, 0.1]]])
    assert torch.allclose(look_at(points, eye), points + torch.tensor([0.0, 0.0, 3.0]), atol=1e-6)


def test_world_point_lands_on_expected_pixel_and_row_zero_is_the_top():
    eye = torch.tensor([[0.0, 0.0, -2.732]])
    # A point up and to the world's +x: camera frame = world frame here (eye on −z), so it projects to
    # x_ndc = 0.2/((2.732)·tan 15°) > 0 (right) and y_ndc > 0 (up, i.e. a small row index).
    point = torch.tensor([[[0.2, 0.3, 0.0]]])
    ndc = project(point, eye)[0, 0]
    tan15 = math.tan(math.radians(15))
    assert ndc[0].item() == pytest.approx(0.2 / (2.732 * tan15), rel=1e-5)
    assert ndc[1].item() == pytest.approx(0.3 / (2.732 * tan15), rel=1e-5)
    row, col = ndc_to_pixel(ndc[:2], 64).tolist()
    assert row == pytest.approx((1 - ndc[1].item()) * 32 - 0.5, abs=1e-4)
    assert col == pytest.approx((ndc[0].item() + 1) * 32 - 0.5, abs=1e-4)
    assert row < 31.5 < col


def _rendered_centroid(vertices, faces, eye):
    alpha = SoftRenderer(image_size=64).silhouette(vertices, faces, eye)[0]
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    return (alpha * rows).sum() / alpha.sum(), (alpha * cols).sum() / alpha.sum()


def _small_tetrahedron(center):
    v = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]]) - 0.025
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return (v + torch.tensor(center))[None], f


def test_render_orientation_up_is_top_and_world_x_mirrors_with_the_view():
    # Seen from view 0 (eye at −z, above), world +x is image right and world +y is image up.
    eye0 = eye_from_angles(2.732, 30.0, 0.0)
    up, f = _small_tetrahedron((0.0, 0.3, 0.0))
    right, _ = _small_tetrahedron((0.3, 0.0, 0.0))
    row_up, col_up = _rendered_centroid(up, f, eye0)
    row_right, col_right = _rendered_centroid(right, f, eye0)
    assert row_up < 28 and abs(col_up - 31.5) < 2
    assert col_right > 36
    # From the opposite side (azimuth 180°, view 12) world +x appears on the left.
    eye12 = eye_from_angles(2.732, 30.0, -180.0)
    _, col_right_back = _rendered_centroid(right, f, eye12)
    assert col_right_back < 27


def test_perspective_keeps_depth_and_is_finite_at_the_eye():
    v = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 2.0]]], requires_grad=True)
    out = perspective(v)
    assert torch.isfinite(out).all()
    assert out[0, 1, 2].item() == 2.0
    out.sum().backward()
    assert torch.isfinite(v.grad).all()


def test_renderer_constants_made_during_a_validation_serve_a_later_training_step(monkeypatch):
    """The up vector, light direction, background and window sizes are made once per device and dtype. Made first
    under inference mode (Lightning's validation sanity check runs before training), they must still be usable in
    an autograd graph: an inference tensor saved for backward would fail the first training step. The eager path
    uses all four."""
    from recon.mesh.template import icosphere
    from recon.render import constants

    monkeypatch.setenv("RECON_FUSED", "0")
    constants._constant.cache_clear()
    vertices, faces = icosphere(1)
    vertices = (0.4 * vertices)[None].to(torch.float64)
    eyes = eye_from_angles(2.732, 30.0, 45.0).to(torch.float64)
    colors = torch.rand(1, vertices.shape[1], 3, dtype=torch.float64)
    renderer = SoftRenderer(image_size=16)
    with torch.inference_mode():
        expected = renderer(vertices, faces, eyes, colors=colors)
    # (0, 1, 0) (the up vector and the default light direction), the window sizes and the background
    assert constants._constant.cache_info().currsize == 3
    v = vertices.clone().requires_grad_()
    c = colors.clone().requires_grad_()
    image = renderer(v, faces, eyes, colors=c)
    image.sum().backward()
    torch.testing.assert_close(image.detach(), expected)
    assert v.grad is not None and v.grad.abs().sum() > 0 and c.grad.abs().sum() > 0
    assert constants._constant.cache_info().hits > 0
