"""The renderer, a training step and a short fit on CUDA, against the CPU reference (marked ``gpu``).

Skipped without CUDA. ``make gpu-check`` runs them with the benchmarks on a GPU machine. To dry-run the same
checks on the CPU (their logic, not CUDA's), set ``RECON_TEST_DEVICE=cpu``.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import pytest
import torch

from recon.datamodules import ViewPairDataModule
from recon.mesh import icosphere
from recon.models import BaselineEncoder, ColorDecoder
from recon.module import ReconModule
from recon.render import SoftRenderer, eye_from_angles, fused

DEVICE = os.environ.get("RECON_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA"),
]


def _scene(dtype, b=4):
    """A deformed 1280-face sphere in b views, per-face and per-vertex colours: the same numbers in any dtype."""
    vertices, faces = icosphere(3)
    g = torch.Generator().manual_seed(0)
    scale = 0.35 * (1 + 0.25 * torch.rand(b, 1, 3, generator=g)) * (1 + 0.05 * torch.randn(b, 642, 1, generator=g))
    verts = (vertices[None] * scale).to(dtype)
    eyes = eye_from_angles(2.732, 30.0, -15.0 * torch.arange(b) * 5).to(dtype)
    colors = {"face": torch.rand(b, 1280, 3, generator=g), "vertex": torch.rand(b, 642, 3, generator=g)}
    return verts, faces, eyes, {kind: c.to(dtype) for kind, c in colors.items()}


def _render(monkeypatch, device, dtype, kind, aggr_alpha, path):
    """(image, ∂(Σ weight·image)/∂vertices[, ∂…/∂colours]) on ``device`` with ``RECON_FUSED=path``."""
    monkeypatch.setenv("RECON_FUSED", path)
    verts, faces, eyes, colors = _scene(dtype)
    renderer = SoftRenderer(image_size=64, aggr_alpha=aggr_alpha, gamma=1e-3)
    v = verts.to(device).requires_grad_()
    inputs = [v]
    if kind == "silhouette":
        image = renderer.silhouette(v, faces.to(device), eyes.to(device))[:, None]
    else:
        c = colors[kind].to(device).requires_grad_()
        inputs.append(c)
        image = renderer(v, faces.to(device), eyes.to(device), colors=c, color_mode=kind)
    weight = torch.rand(image.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)  # same in any dtype
    grads = torch.autograd.grad((image * weight).sum(), inputs)
    return image.detach().cpu(), *[grad.cpu() for grad in grads]


@pytest.mark.parametrize(("kind", "aggr_alpha"), [("silhouette", "prod"), ("silhouette", "sum"), ("face", "prod"),
                                                  ("vertex", "prod"), ("vertex", "sum")])
def test_renders_and_gradients_on_the_device_equal_the_cpu_reference(monkeypatch, kind, aggr_alpha):
    reference = _render(monkeypatch, "cpu", torch.float64, kind, aggr_alpha, "0")
    alpha = reference[0][:, -1]  # object and background in view ('sum' alpha is the mean over faces: small)
    assert alpha.amax() > (0.9 if aggr_alpha == "prod" else 0.005) and alpha.amin() == 0
    # float64: the same formulas, to rounding; float32: the eager float32 path's own tolerances, and gradients
    # summed in another order (CUDA's atomic adds).
    for dtype, atol, rtol in ((torch.float64, 1e-9, 1e-7), (torch.float32, 1e-4, 1e-3)):
        got = _render(monkeypatch, DEVICE, dtype, kind, aggr_alpha, "auto")
        assert got[0].dtype == dtype and got[0].shape == reference[0].shape
        assert (got[0] - reference[0]).abs().max() <= atol, (dtype, (got[0] - reference[0]).abs().max())
        for grad, want in zip(got[1:], reference[1:], strict=True):
            scale = want.abs().max()
            assert scale > 0 and (grad - want).abs().max() <= rtol * scale, (dtype, (grad - want).abs().max(), scale)


def test_inductor_silhouette_kernels_on_the_device_equal_the_eager_ones(monkeypatch):
    eager = _render(monkeypatch, DEVICE, torch.float32, "silhouette", "prod", "0")
    before = sum(fused.compiled_calls.values())
    compiled = _render(monkeypatch, DEVICE, torch.float32, "silhouette", "prod", "inductor")
    assert sum(fused.compiled_calls.values()) > before and not fused._failed
    assert (compiled[0] - eager[0]).abs().max() <= 1e-5
    assert (compiled[1] - eager[1]).abs().max() <= 1e-4 * eager[1].abs().max()


@pytest.mark.parametrize("aggr_alpha", ["prod", "sum"])
def test_triton_silhouette_kernels_on_the_device_equal_the_eager_ones(monkeypatch, aggr_alpha):
    if DEVICE != "cuda":
        pytest.skip("without a GPU the Triton kernels run interpreted, at small sizes: tests/test_triton.py")
    eager = _render(monkeypatch, DEVICE, torch.float32, "silhouette", aggr_alpha, "0")
    before = fused.triton_calls["silhouette"]
    got = _render(monkeypatch, DEVICE, torch.float32, "silhouette", aggr_alpha, "triton")
    assert fused.triton_calls["silhouette"] == before + 1 and not fused._triton_failed, fused._triton_failed
    assert (got[0] - eager[0]).abs().max() <= 1e-5
    assert (got[1] - eager[1]).abs().max() <= 1e-4 * eager[1].abs().max()


@pytest.mark.parametrize("colors", [None, "vertex"])
def test_a_training_step_on_the_device_equals_the_cpu_one(overfit_batch, colors):
    torch.manual_seed(0)
    head = ColorDecoder(32, colors) if colors else None
    module = ReconModule(encoder=BaselineEncoder(dim=32), colors=head, lambda_color=1.0).double()
    batch = {key: value.double() if value.is_floating_point() else value for key, value in overfit_batch.items()}
    step = module.model_step(batch)
    step.loss.backward()
    expected = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    module.to(DEVICE)
    got = module.model_step({key: value.to(DEVICE) for key, value in batch.items()})
    got.loss.backward()
    assert got.loss.device.type == torch.device(DEVICE).type
    assert torch.allclose(got.loss.cpu(), step.loss, rtol=1e-9, atol=0), (got.loss.item(), step.loss.item())
    for name, p in module.named_parameters():
        scale = expected[name].abs().max()
        assert (p.grad.cpu() - expected[name]).abs().max() <= 1e-6 * scale + 1e-12, name


def test_a_short_fit_and_validation_on_the_device(tiny_h5, tmp_path):
    torch.manual_seed(0)
    data = ViewPairDataModule(path=str(tiny_h5), batch_size=2, eval_batch_size=2, num_workers=0,
                              val_views_per_object=2)
    module = ReconModule(encoder=BaselineEncoder(dim=32))
    accelerator = "gpu" if DEVICE == "cuda" else DEVICE
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_steps=3, limit_val_batches=2,
                         num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 3 and next(module.parameters()).device.type == torch.device(DEVICE).type
    assert any(not torch.equal(a, b.detach().cpu()) for a, b in zip(before, module.parameters(), strict=True))
    (scores,) = trainer.validate(module, datamodule=data, verbose=False)
    iou = [value for key, value in scores.items() if "iou" in key.lower()]
    assert iou and all(0 <= value <= 1 for value in iou), scores
