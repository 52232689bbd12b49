"""ReconModule: the SoftRas objective's pairing, the lr/σ schedule, evaluation, export, and an overfit run."""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from recon.callbacks import MeshWriter
from recon.errors import ConfigError, NonFiniteMeshError
from recon.mesh import voxelize
from recon.models import BaselineEncoder, ResNetEncoder, SphereDecoder
from recon.module import ReconModule
from recon.render import RasterSettings, eye_from_angles


def _batch(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    views_a = torch.randint(0, 24, (size,), generator=generator)
    views_b = torch.randint(0, 24, (size,), generator=generator)
    return {
        "images_a": torch.rand(size, 4, 64, 64, generator=generator),
        "images_b": torch.rand(size, 4, 64, 64, generator=generator),
        "eyes_a": eye_from_angles(2.732, 30.0, -15.0 * views_a.float()),
        "eyes_b": eye_from_angles(2.732, 30.0, -15.0 * views_b.float()),
        "views_a": views_a,
        "views_b": views_b,
        "voxels": torch.zeros(size, 32, 32, 32, dtype=torch.bool),
        "category": torch.zeros(size, dtype=torch.int64),
        "object_index": torch.arange(size),
    }


class _RecordingRenderer(torch.nn.Module):
    """Stands in for SoftRenderer: records what it is asked to render and returns all-ones silhouettes."""

    settings = RasterSettings()

    def silhouette(self, vertices, faces, eyes):
        self.vertices, self.eyes = vertices.detach().clone(), eyes.clone()
        return torch.ones(vertices.shape[0], 64, 64)


def test_training_objective_renders_both_meshes_in_both_views():
    torch.manual_seed(0)
    module = ReconModule(encoder=BaselineEncoder(dim=32), lambda_lap=0.1, lambda_flat=0.01).eval()
    module.renderer = _RecordingRenderer()
    batch = _batch(3)
    batch["images_a"][:, 3] = 1.0  # all-ones renders: IoU 1 against view a's masks
    batch["images_b"][:, 3] = 0.0
    batch["images_b"][:, 3, :32] = 1.0  # half the image: IoU 0.5 against view b's masks
    out = module.model_step(batch)
    mesh_a = module(batch["images_a"])
    mesh_b = module(batch["images_b"])
    renderer = module.renderer
    # [R_aa, R_ba, R_ab, R_bb]: meshes [M_a; M_b; M_a; M_b] seen from [V_a; V_a; V_b; V_b]
    torch.testing.assert_close(renderer.vertices, torch.cat([mesh_a, mesh_b, mesh_a, mesh_b]).detach())
    expected_eyes = torch.cat([batch["eyes_a"], batch["eyes_a"], batch["eyes_b"], batch["eyes_b"]])
    torch.testing.assert_close(renderer.eyes, expected_eyes)
    # silhouette loss: mean of (1 − IoU) over the four groups = (0 + 0 + 0.5 + 0.5) / 4
    assert out.loss_sil.item() == pytest.approx(0.25, abs=1e-5)
    both = torch.cat([mesh_a, mesh_b])
    torch.testing.assert_close(out.loss_lap, module.laplacian(both).mean())
    torch.testing.assert_close(out.loss_flat, module.flatten(both).mean())
    expected = out.loss_sil + 0.1 * out.loss_lap + 0.01 * out.loss_flat
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.vertices, mesh_a)


def test_the_training_losses_are_averaged_over_the_processes(monkeypatch):
    # under DDP each process trains on its share of the step's batch: the logged loss is the mean over all of them
    module = ReconModule(encoder=BaselineEncoder(dim=8))
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **options: logged.update({name: options}))
    monkeypatch.setattr(ReconModule, "trainer", SimpleNamespace(optimizers=[torch.optim.SGD(module.parameters(), 0.1)]))
    module.training_step(_batch(2), 0)
    losses = [name for name in logged if name.startswith("train/loss")]
    assert losses == ["train/loss", "train/loss_sil", "train/loss_lap", "train/loss_flat"]
    assert all(logged[name].get("sync_dist") for name in losses)


def test_lr_and_sigma_drop_together_at_the_schedule_step():
    module = ReconModule(encoder=BaselineEncoder(dim=8), lr=1e-3, sigma=2e-4, schedule_step=3, schedule_gamma=0.3)
    assert module.sigma_at(2) == pytest.approx(2e-4)
    assert module.sigma_at(3) == pytest.approx(6e-5)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 3e-4, 3e-4])
    never = ReconModule(encoder=BaselineEncoder(dim=8), schedule_step=None)
    assert never.sigma_at(10**9) == never.hparams.sigma


def test_encoder_choice_and_mismatched_decoder():
    module = ReconModule(encoder=ResNetEncoder(dim=64))
    assert module.generator.decoder.latent_dim == 64
    assert module(torch.rand(2, 4, 64, 64)).shape == (2, 642, 3)
    with pytest.raises(ValueError, match="latent_dim"):
        ReconModule(encoder=BaselineEncoder(dim=64), decoder=SphereDecoder(latent_dim=32))


def test_evaluation_scores_a_perfect_prediction_one_and_the_writer_exports_meshes(tmp_path):
    torch.manual_seed(0)
    module = ReconModule(encoder=BaselineEncoder(dim=16), category_names=["plane", "bench", "chair"]).eval()
    batches = [_batch(2, seed=0), _batch(2, seed=1)]
    batches[0]["category"] = torch.tensor([0, 2])
    batches[1]["category"] = torch.tensor([2, 2])
    with torch.no_grad():
        for batch in batches:  # ground truth = the voxels of the model's own prediction: IoU exactly 1
            batch["voxels"] = voxelize(module(batch["images_a"]), module.faces, 32)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[MeshWriter(dirpath=str(tmp_path / "meshes"))],
    )  # fmt: skip
    loader = DataLoader(batches, batch_size=None)  # the batches as they are
    metrics = trainer.test(module, dataloaders=loader, verbose=False)[0]
    assert metrics["test/miou"] == pytest.approx(1.0)
    # only the categories that have items get a row
    assert {key for key in metrics if key.startswith("test/iou_")} == {"test/iou_plane", "test/iou_chair"}
    assert metrics["test/iou_chair"] == pytest.approx(1.0)
    assert 0 < metrics["test/loss_sil"] <= metrics["test/loss"]
    assert {key for key in metrics if key.startswith("test/psnr_")} == {"test/psnr_plane", "test/psnr_chair"}
    assert metrics["test/psnr"] > 0
    written = sorted(p.relative_to(tmp_path / "meshes") for p in (tmp_path / "meshes").rglob("*.obj"))
    views = batches[0]["views_a"]
    assert len(written) == 4 and str(written[0]).startswith("test/chair/")
    assert f"test/plane/00000_v{int(views[0]):02d}.obj" in map(str, written)


def test_a_module_without_category_names_or_datamodule_refuses_to_evaluate():
    module = ReconModule(encoder=BaselineEncoder(dim=16))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(ConfigError, match="category_names"):
        trainer.test(module, dataloaders=DataLoader([_batch(2)], batch_size=None), verbose=False)


def test_non_finite_vertices_stop_training_naming_the_batch_items():
    module = ReconModule(encoder=BaselineEncoder(dim=16)).eval()  # eval: batch norm keeps items apart
    batch = _batch(3)
    batch["object_index"] = torch.tensor([10, 11, 12])
    batch["images_b"][1, 0, 5, 5] = float("inf")  # one pixel of one item's second view
    with pytest.raises(NonFiniteMeshError, match=r"batch item 1 \(object 11\) are NaN or infinite"):
        module.model_step(batch)
    batch["images_b"][1, 0, 5, 5] = 0.0
    assert torch.isfinite(module.model_step(batch).loss)


def test_a_restored_model_with_nan_weights_is_refused_by_test_and_predict_naming_them():
    module = ReconModule(encoder=BaselineEncoder(dim=16)).eval()
    with torch.no_grad():
        next(iter(module.generator.decoder.parameters())).fill_(float("nan"))  # a checkpoint saved after divergence
    module._trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.PREDICTING), global_step=0)
    batch = {"images": _batch(2)["images_a"], "name": ["chair", "table"]}
    with pytest.raises(NonFiniteMeshError, match=r"for batch item 0 \(chair\), item 1 \(table\); the checkpoint's "
                                                 r"weights hold NaN or infinite values \(generator\.decoder\."):
        module.predict_step(batch, 0)
    module._trainer.state.fn = TrainerFn.TESTING
    with pytest.raises(NonFiniteMeshError, match=r"for batch item 0 \(object 0\), .*, item 4 \(object 4\) and 3 "
                                                 r"more; the checkpoint's weights hold NaN"):  # five named
        module.model_step(_batch(8))
    module._trainer.state.fn = TrainerFn.FITTING
    with pytest.raises(NonFiniteMeshError, match="training diverged"):
        module.model_step(_batch(2))


@pytest.mark.slow
def test_overfitting_a_handful_of_objects_drives_the_silhouette_loss_down(overfit_batch):
    batch = overfit_batch  # 4 objects × 2 views, fixed
    module = ReconModule()
    optimizer = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(15):  # SoftRas's recipe as is (Adam, lr 1e-4): ~0.57 -> ~0.35 in 15 steps
        out = module.model_step(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss_sil.item())
    assert losses[-1] < 0.75 * losses[0], losses


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path):
    # The restore's own check (the recon command checks earlier; a script calling the Trainer has only this one):
    # a ResNet's weights offered to a baseline module name both models, not every mismatched tensor.
    resnet = ReconModule(encoder=ResNetEncoder(dim=64), category_names=["airplane"])
    path = tmp_path / "resnet.ckpt"
    saved = {"encoder": {"class_path": "recon.models.ResNetEncoder", "init_args": {"dim": 64}}}  # as the CLI saves
    torch.save({"state_dict": resnet.state_dict(), "hyper_parameters": saved, "global_step": 7,
                "pytorch-lightning_version": pl.__version__}, path)
    baseline = ReconModule(encoder=BaselineEncoder(dim=64), category_names=["airplane"])
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    loader = DataLoader([_batch(2)], batch_size=None)
    with pytest.raises(ConfigError, match=r"resnet\.ckpt holds another model \(encoder ResNetEncoder\(dim=64\), "
                                          r"decoder default, colors none\) than this config builds \(encoder "
                                          r"BaselineEncoder, decoder default, colors none\): \d+ of its weights"):
        trainer.validate(baseline, loader, ckpt_path=path)
    same = ReconModule(encoder=ResNetEncoder(dim=64), category_names=["airplane"])
    same.check_checkpoint(torch.load(path, weights_only=False), path)  # its own kind of model: accepted
