"""The renderer's settings: one frozen value, validated once, replaced whole; σ follows the training step."""

from dataclasses import FrozenInstanceError, replace

import pytest
import torch

from recon.mesh import template_sphere
from recon.render import Lighting, RasterSettings, SoftRenderer, eye_from_angles, soft_rasterize


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_size", 0, "image_size"),
        ("image_size", 32.0, "image_size"),
        ("sigma", 0.0, "sigma"),
        ("gamma", -1.0, "gamma"),
        ("dist_eps", 0.5, "dist_eps"),
        ("near", 0.0, "near"),
        ("far", 0.5, "near < far"),
        ("aggr_rgb", "max", "aggr_rgb"),
        ("aggr_alpha", "min", "aggr_alpha"),
        ("background", (1.0, 1.0), "background"),
    ],
)
def test_invalid_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        RasterSettings(**{field: value})
    with pytest.raises(ValueError, match=message):  # replace() validates the new value again
        replace(RasterSettings(), **{field: value})
    with pytest.raises(ValueError, match=message):  # and so does the renderer's keyword form
        SoftRenderer(**{field: value})


def test_settings_are_frozen_normalised_and_shared_by_every_path():
    settings = RasterSettings(image_size=16, background=[1, 0, 0])
    assert settings.background == (1.0, 0.0, 0.0)
    assert settings.culling_threshold == pytest.approx(1e-4 * 23.02585, rel=1e-6)  # σ·ln(1/dist_eps − 1)
    with pytest.raises(FrozenInstanceError):
        settings.sigma = 1e-3
    with pytest.raises(TypeError, match="sigmaa"):
        soft_rasterize(torch.zeros(1, 1, 3, 3), None, settings, sigmaa=1e-3)
    with pytest.raises(TypeError, match="lighting"):
        SoftRenderer(lighting=False)
    renderer = SoftRenderer(settings, lighting=None)
    assert renderer.settings is settings and renderer.image_size == 16 and renderer.lighting is None
    assert SoftRenderer(image_size=16, background=(1, 0, 0)).settings == settings
    assert SoftRenderer().lighting == Lighting(0.5, 0.5, (0.0, 1.0, 0.0))


def _scene(batch=2):
    vertices, faces = template_sphere()
    v = (vertices * 0.35)[None].expand(batch, -1, -1).contiguous()
    eyes = eye_from_angles(2.732, 30.0, -15.0 * torch.arange(float(batch)))
    return v, faces, eyes


def test_replacing_sigma_changes_the_render_and_nothing_else():
    v, faces, eyes = _scene()
    renderer = SoftRenderer(image_size=32)
    sharp = renderer.silhouette(v, faces, eyes)
    before = renderer.settings
    renderer.settings = replace(renderer.settings, sigma=1e-3)
    soft = renderer.silhouette(v, faces, eyes)
    assert renderer.settings == replace(before, sigma=1e-3)
    # A softer σ spreads alpha beyond the outline: more total coverage, the same image size.
    assert soft.shape == sharp.shape == (2, 32, 32)
    assert soft.sum() > sharp.sum() + 1


def test_rendering_without_colours_warns_and_points_to_the_silhouette():
    v, faces, eyes = _scene()
    renderer = SoftRenderer(image_size=32)
    with pytest.warns(UserWarning, match=r"renderer\.silhouette"):
        rgba = renderer(v, faces, eyes)
    white = renderer(v, faces, eyes, colors=torch.ones(2, faces.shape[0], 3))  # explicit colours: no warning
    torch.testing.assert_close(rgba, white)
    torch.testing.assert_close(rgba[:, 3], renderer.silhouette(v, faces, eyes), atol=1e-5, rtol=0)


def test_sigma_follows_the_schedule_in_every_step_and_after_a_restore():
    from recon.models import BaselineEncoder
    from recon.module import ReconModule

    module = ReconModule(encoder=BaselineEncoder(dim=8), sigma=2e-4, schedule_step=5, schedule_gamma=0.3).eval()
    built = module.renderer.settings
    assert built.sigma == pytest.approx(2e-4)
    batch = {"images_a": torch.rand(1, 4, 64, 64), "images_b": torch.rand(1, 4, 64, 64),
             "eyes_a": torch.tensor([[0.0, 1.366, -2.366]]), "eyes_b": torch.tensor([[0.0, 1.366, -2.366]])}
    module.renderer.settings = replace(built, sigma=1.0)
    module.model_step(batch)  # no trainer: step 0
    assert module.renderer.settings == built  # σ back to the schedule's, every other field untouched
    module.on_load_checkpoint({"global_step": 7})  # testing a checkpoint trained past the drop
    module.model_step(batch)
    assert module.renderer.sigma == pytest.approx(6e-5)
    assert replace(module.renderer.settings, sigma=built.sigma) == built
