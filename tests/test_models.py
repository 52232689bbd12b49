"""Encoders, the sphere decoder (against a literal SoftRas transcription) and the generator."""

import pytest
import torch

from recon.mesh import template_sphere
from recon.models import (
    AttentionEncoder,
    BaselineEncoder,
    Encoder,
    MeshGenerator,
    ResNetEncoder,
    SphereDecoder,
)

ENCODERS = [BaselineEncoder, ResNetEncoder, AttentionEncoder]


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("encoder_class", ENCODERS)
def test_encoder_maps_rgba_views_to_non_negative_latents(encoder_class):
    torch.manual_seed(0)
    encoder = encoder_class(dim=32)
    assert isinstance(encoder, Encoder)
    latent = encoder(torch.rand(3, 4, 64, 64))
    assert latent.shape == (3, 32) and encoder.dim == 32
    assert latent.min() >= 0 and latent.max() > 0  # SoftRas's final ReLU, not a dead head


@pytest.mark.parametrize("encoder_class", ENCODERS)
def test_encoder_rejects_wrong_image_shape_clearly(encoder_class):
    with pytest.raises(ValueError, match=r"\(B, 4, 64, 64\)"):
        encoder_class(dim=8)(torch.rand(2, 3, 64, 64))


def test_parameter_budgets_are_similar_and_as_documented():
    counts = {c.__name__: _parameters(c()) for c in ENCODERS}
    # SoftRas's encoder has 19.38 M parameters (docs/conventions.md#training-recipe)
    assert counts["BaselineEncoder"] == pytest.approx(19.38e6, rel=1e-3)
    assert counts["ResNetEncoder"] == pytest.approx(19.58e6, rel=1e-3)
    assert counts["AttentionEncoder"] == pytest.approx(20.45e6, rel=1e-3)
    assert max(counts.values()) / min(counts.values()) < 1.06


def _softras_deform(template: torch.Tensor, centroid: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """SoftRas's ``Decoder.forward`` after its FC layers, written out literally in float64 (log(0) = −inf)."""
    base = 0.5 * template.double()
    sign = torch.sign(base)
    logit = torch.log(base.abs() / (1 - base.abs()))
    vertices = torch.sigmoid(logit + offsets) * sign
    vertices = torch.relu(vertices) * (1 - centroid) - torch.relu(-vertices) * (1 + centroid)
    return 0.5 * (vertices + centroid)


def test_decoder_matches_softras_and_keeps_the_zero_coordinate_quirk():
    torch.manual_seed(0)
    decoder = SphereDecoder(latent_dim=16).double()
    template, _ = template_sphere()
    centroid = torch.rand(2, 1, 3, dtype=torch.float64) * 2 - 1
    offsets = torch.randn(2, 642, 3, dtype=torch.float64) * 2
    vertices = decoder.deform(centroid, offsets)
    torch.testing.assert_close(vertices, _softras_deform(template, centroid, offsets))
    frozen = template == 0
    assert frozen.sum() > 0  # the quirk is exercised (67 coordinates in SoftRas's sphere, 96 in recon's)
    expected = (0.5 * centroid).expand(2, 642, 3)[:, frozen]
    torch.testing.assert_close(vertices[:, frozen], expected)


def test_decoder_at_zero_offsets_is_a_sphere_of_radius_quarter():
    decoder = SphereDecoder(latent_dim=16)
    for layer in (decoder.fc_centroid, decoder.fc_bias):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    vertices = decoder(torch.randn(4, 16))
    assert vertices.shape == (4, 642, 3)
    torch.testing.assert_close(vertices.norm(dim=-1), torch.full((4, 642), 0.25))
    torch.testing.assert_close(vertices[0], 0.25 * template_sphere()[0])


def test_decoder_output_stays_inside_the_voxel_cube():
    torch.manual_seed(0)
    decoder = SphereDecoder(latent_dim=16).double()
    centroid = torch.tanh(torch.randn(64, 1, 3, dtype=torch.float64))
    offsets = torch.randn(64, 642, 3, dtype=torch.float64) * 4
    vertices = decoder.deform(centroid, offsets)
    assert vertices.abs().max() < 0.5
    assert vertices.abs().max() > 0.45  # large offsets reached the edge: the bound was exercised
    # float32 with absurd latents saturates the sigmoid/tanh: still finite and within the closed cube
    for layer in (decoder.fc_centroid, decoder.fc_bias):
        torch.nn.init.normal_(layer.weight, std=5.0)
    extreme = decoder.float()(torch.randn(8, 16) * 100)
    assert torch.isfinite(extreme).all() and extreme.abs().max() <= 0.5


def test_free_zero_coordinates_move_and_keep_the_initial_sphere():
    torch.manual_seed(0)
    fixed = SphereDecoder(latent_dim=16, free_zero_coordinates=True).double()
    frozen = template_sphere()[0] == 0
    centroid = torch.zeros(1, 1, 3, dtype=torch.float64)
    offsets = torch.zeros(1, 642, 3, dtype=torch.float64, requires_grad=True)
    vertices = fixed.deform(centroid, offsets)
    torch.testing.assert_close(vertices[0], 0.25 * template_sphere()[0].double())
    vertices[:, frozen].sum().backward()
    assert (offsets.grad[0][frozen] > 0).all()  # tanh'(0) = 1: they can move, in either direction
    quirk = SphereDecoder(latent_dim=16).double()
    offsets.grad = None
    quirk.deform(centroid, offsets)[:, frozen].sum().backward()
    assert (offsets.grad[0][frozen] == 0).all()


@pytest.mark.parametrize("free", [False, True])
def test_decoder_gradient_matches_finite_differences(free):
    torch.manual_seed(0)
    decoder = SphereDecoder(latent_dim=4, hidden=(8, 8), free_zero_coordinates=free).double()
    latent = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, 642, 3, dtype=torch.float64)  # a random projection keeps the Jacobian small
    assert torch.autograd.gradcheck(lambda z: (decoder(z) * weights).sum((1, 2)), (latent,))


def test_generator_joins_encoder_and_decoder_and_checks_dimensions():
    generator = MeshGenerator(BaselineEncoder(dim=16), SphereDecoder(latent_dim=16))
    vertices = generator(torch.rand(2, 4, 64, 64))
    assert vertices.shape == (2, 642, 3) and generator.faces.shape == (1280, 3)
    assert generator.faces.dtype == torch.int64
    with pytest.raises(ValueError, match="dim=16.*latent_dim=32"):
        MeshGenerator(BaselineEncoder(dim=16), SphereDecoder(latent_dim=32))
    assert torch.isfinite(vertices).all() and vertices.abs().max() < 0.5
