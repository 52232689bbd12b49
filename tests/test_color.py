"""Colour reconstruction: the colour head, the dataset's RGB convention, the colour loss against the dense
reference, PSNR/SSIM, coloured export, an overfit run and the CLI with ``configs/experiment/color.yaml``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import h5py
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from torch.utils.data import DataLoader

from recon.callbacks import MeshWriter
from recon.losses import color_loss, dataset_images
from recon.mesh import template_sphere
from recon.metrics import ImageFidelity, image_psnr
from recon.models import BaselineEncoder, ColorDecoder, MeshGenerator, SphereDecoder
from recon.module import GRAY_ALBEDO, ReconModule
from recon.prediction import write_prediction
from recon.render import eye_from_angles, project
from recon.render.lighting import directional_light, face_normals, gather_face_vertices, vertex_normals
from recon.render.reference import dense_soft_rasterize

pytestmark = pytest.mark.filterwarnings("ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT, COLOR = str(CONFIGS / "default.yaml"), str(CONFIGS / "experiment" / "color.yaml")


def _ellipsoid(radii=(0.3, 0.2, 0.25)) -> tuple[torch.Tensor, torch.Tensor]:
    vertices, faces = template_sphere()
    return vertices.float() * torch.tensor(radii), faces.long()


def _eyes(azimuths) -> torch.Tensor:
    return eye_from_angles(2.732, 30.0, torch.tensor(azimuths, dtype=torch.float32)).float()


def _colored_module(mode="vertex", seed=0, **kwargs) -> ReconModule:
    """A small colour model whose head predicts varied colours (random last-layer bias) from the start."""
    torch.manual_seed(seed)
    module = ReconModule(encoder=BaselineEncoder(dim=16, image_size=32), colors=ColorDecoder(16, mode), **kwargs)
    with torch.no_grad():
        module.generator.colors.fc_color.bias.normal_(0, 2)
    return module.eval()


# ------------------------------------------------------------------------------------------- the model
def test_without_a_head_the_model_is_the_silhouette_one_and_the_head_only_adds_parameters():
    plain = ReconModule(encoder=BaselineEncoder(dim=16))
    colored = ReconModule(encoder=BaselineEncoder(dim=16), colors=ColorDecoder(latent_dim=16, mode="face"))
    reference = MeshGenerator(BaselineEncoder(dim=16), SphereDecoder(latent_dim=16))
    assert set(plain.state_dict()) == {f"generator.{key}" for key in reference.state_dict()}
    extra = set(colored.state_dict()) - set(plain.state_dict())
    assert extra and all(key.startswith("generator.colors.") for key in extra)
    plain.load_state_dict(ReconModule(encoder=BaselineEncoder(dim=16)).state_dict())  # strict: same keys
    assert not plain.has_colors and colored.has_colors

    images = torch.rand(2, 4, 64, 64)
    vertices, colors = colored.predict_mesh(images)
    assert vertices.shape == (2, 642, 3) and colors.shape == (2, 1280, 3)
    torch.testing.assert_close(colors, torch.full_like(colors, 0.5))  # zero-initialised last layer: mid-grey
    assert plain.predict_mesh(images).colors is None
    with pytest.raises(ValueError, match="colour head expects latent_dim=512"):
        ReconModule(encoder=BaselineEncoder(dim=16), colors=ColorDecoder())
    with pytest.raises(ValueError, match="color_loss"):
        ReconModule(color_loss="l3")


# --------------------------------------------------------------------------- the dataset's RGB convention
def test_dataset_images_invert_the_colour_over_white_by_hand():
    rendered = torch.zeros(1, 4, 1, 3)
    rendered[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # opaque red
    rendered[0, :, 0, 1] = torch.tensor([0.2, 0.4, 0.6, 0.5])  # half-covered
    rendered[0, :, 0, 2] = torch.tensor([0.3, 0.9, 0.1, 0.0])  # a face colour where nothing covers: background
    stored = dataset_images(rendered)[0, :, 0]
    torch.testing.assert_close(stored[:, 0], torch.tensor([0.0, 1.0, 1.0, 1.0]))  # 1 − red, alpha kept
    # over white: 0.5·(0.2, 0.4, 0.6) + 0.5·1 = (0.6, 0.7, 0.8); inverted: (0.4, 0.3, 0.2)
    torch.testing.assert_close(stored[:, 1], torch.tensor([0.4, 0.3, 0.2, 0.5]))
    torch.testing.assert_close(stored[:, 2], torch.zeros(4))  # NMR's background is 0 in every channel


def test_color_loss_on_hand_made_images():
    rendered = torch.zeros(2, 4, 2, 2)
    rendered[:, :3], rendered[:, 3] = 0.5, 1.0  # opaque mid-grey: stored (0.5, 0.5, 0.5)
    reference = torch.zeros(2, 4, 2, 2)
    reference[:, 0], reference[:, 2], reference[:, 3] = 1.0, 0.5, 1.0  # stored (1, 0, 0.5): a cyan object
    # per pixel |diff| = (0.5, 0.5, 0): L1 mean 1/3, L2 mean 1/6
    assert color_loss(rendered, reference, "l1").item() == pytest.approx(1 / 3)
    assert color_loss(rendered, reference, "l2").item() == pytest.approx(1 / 6)
    matching = reference.clone()
    matching[:, :3] = 1 - matching[:, :3]  # the object's own colour, opaque
    assert color_loss(matching, reference).item() == pytest.approx(0.0, abs=1e-7)
    assert color_loss(matching, reference[:, :3]).item() == pytest.approx(0.0, abs=1e-7)  # RGB-only reference
    with pytest.raises(ValueError, match="'l1' or 'l2'"):
        color_loss(rendered, reference, "huber")


def test_model_render_matches_the_dataset_generator_and_the_inversion_matters():
    """The synthetic generator's images (hard, 2× supersampled, over white, inverted) against the model's soft
    render of the same coloured mesh converted by ``dataset_images``: the same colours where both are opaque,
    close overall; without the inversion, far."""
    from recon.datamodules.h5 import ViewsLayout
    from recon.datamodules.primitives import ColoredMesh
    from recon.datamodules.synthetic import ViewRenderer

    vertices, faces = _ellipsoid()
    face_colors = (0.5 + 1.3 * vertices[faces].mean(1)).clamp(0.05, 0.95)  # smooth: no sub-pixel mixing
    dataset = ViewRenderer(ViewsLayout(num_views=3))
    stored = torch.from_numpy(dataset(ColoredMesh(vertices.numpy(), faces.numpy(), face_colors.numpy()))) / 255.0
    module = ReconModule(encoder=BaselineEncoder(dim=8), colors=ColorDecoder(8, "face"))
    with torch.no_grad():
        rendered = module.render(vertices[None].expand(3, -1, -1), face_colors[None].expand(3, -1, -1), dataset.eyes)
    ours = dataset_images(rendered)
    opaque = (stored[:, 3] > 0.99) & (ours[:, 3] > 0.99)
    error = (ours[:, :3] - stored[:, :3]).abs().amax(1)[opaque]
    assert opaque.sum() > 50 and error.median() < 0.03 and error.max() < 0.08, error
    good = image_psnr(ours[:, :3], stored[:, :3])
    assert (good > 24).all(), good  # the rest is the soft edge (σ) against 2×2 hard coverage
    forgotten = rendered[:, :3] * rendered[:, 3:]  # the colour itself on black: no inversion
    assert (image_psnr(forgotten, stored[:, :3]) < good - 8).all()
    over_white = rendered[:, :3] * rendered[:, 3:] + 1 - rendered[:, 3:]  # composited but not inverted
    assert (image_psnr(over_white, stored[:, :3]) < good - 8).all()


# ----------------------------------------------------------------------- against the dense reference
@pytest.mark.parametrize("mode", ["vertex", "face"])
def test_model_rgb_aggregation_matches_the_dense_reference(mode):
    module = _colored_module(mode, gamma=1e-3)
    batch = {
        "images_a": torch.rand(1, 4, 32, 32), "images_b": torch.rand(1, 4, 32, 32),
        "eyes_a": _eyes([-30.0]), "eyes_b": _eyes([-120.0]),
    }  # fmt: skip
    out = module.model_step(batch)
    vertices, colors = module.predict_mesh(torch.cat([batch["images_a"], batch["images_b"]]))
    assert colors.std() > 0.1  # varied colours: a comparison that can fail
    meshes, colors = torch.cat([vertices, vertices]), torch.cat([colors, colors])
    eyes = torch.cat([batch["eyes_a"], batch["eyes_a"], batch["eyes_b"], batch["eyes_b"]])
    faces = module.faces.expand(4, -1, -1)
    # lighting written out: 0.5 ambient + 0.5·relu(n·(0, 1, 0)), on vertex or face normals
    normals = vertex_normals(meshes, faces) if mode == "vertex" else face_normals(meshes, faces)
    lit = colors * (0.5 + 0.5 * normals[..., 1:2].clamp(min=0))
    torch.testing.assert_close(lit, colors * directional_light(normals))
    corners = gather_face_vertices(lit, faces) if mode == "vertex" else lit[:, :, None].expand(-1, -1, 3, -1)
    face_vertices = gather_face_vertices(project(meshes, eyes, 15.0), faces)
    dense = dense_soft_rasterize(face_vertices, corners, image_size=32, sigma=1e-4, gamma=1e-3, dist_eps=1e-10)
    assert dense[:, 3].amax() > 0.9 and dense[:, 3].amin() == 0  # the object and background are both in view
    torch.testing.assert_close(out.rgba, dense, atol=1e-4, rtol=0)
    references = torch.cat([batch["images_a"], batch["images_a"], batch["images_b"], batch["images_b"]])
    expected = (dataset_images(dense)[:, :3] - references[:, :3]).abs().mean()
    torch.testing.assert_close(out.loss_color, expected, atol=1e-5, rtol=0)
    total = out.loss_sil + 5e-3 * out.loss_lap + 5e-4 * out.loss_flat + out.loss_color
    torch.testing.assert_close(out.loss, total)


def test_color_loss_reaches_the_colour_head_and_the_geometry():
    module = _colored_module(lambda_color=1.0)
    batch = {"images_a": torch.rand(2, 4, 32, 32), "images_b": torch.rand(2, 4, 32, 32),
             "eyes_a": _eyes([0.0, -45.0]), "eyes_b": _eyes([-90.0, -180.0])}  # fmt: skip
    out = module.model_step(batch)
    out.loss_color.backward()
    head = module.generator.colors.fc_color.weight.grad
    centroid = module.generator.decoder.fc_centroid.weight.grad  # the mesh moves to fit the colours too
    assert head is not None and head.abs().max() > 0
    assert centroid is not None and centroid.abs().max() > 0


# --------------------------------------------------------------------------------------- the metric
def test_image_fidelity_averages_per_item_then_per_category_and_sums_exactly_across_processes():
    target = torch.zeros(4, 3, 16, 16)
    predicted = target.clone()
    predicted[0] += 0.1  # MSE 1e-2: 20 dB
    predicted[1] += 0.01  # MSE 1e-4: 40 dB
    predicted[2] += 0.1  # 20 dB
    predicted[3] = target[3]  # identical: clamped at 100 dB, SSIM 1
    category = torch.tensor([0, 0, 2, 2])
    torch.testing.assert_close(image_psnr(predicted, target), torch.tensor([20.0, 40.0, 20.0, 100.0]))
    whole = ImageFidelity(3)
    whole.update(predicted, target, category)
    result = whole.compute()
    torch.testing.assert_close(result["psnr"][[0, 2]], torch.tensor([30.0, 60.0]))
    assert math.isnan(result["psnr"][1]) and result["mpsnr"].item() == pytest.approx(45.0)
    assert result["ssim"][2] < 1 and result["mssim"] <= 1
    # two "ranks" with half the items each: their summed states give the single-process result exactly
    parts = [ImageFidelity(3), ImageFidelity(3)]
    parts[0].update(predicted[::2], target[::2], category[::2])
    parts[1].update(predicted[1::2], target[1::2], category[1::2])
    parts[0].merge_state(parts[1])  # dist_reduce_fx="sum", as DDP's sync reduces the states
    for key, value in parts[0].compute().items():
        torch.testing.assert_close(value, result[key], equal_nan=True)


def test_a_silhouette_only_model_is_scored_painted_flat_gray():
    module = ReconModule(encoder=BaselineEncoder(dim=8, image_size=32)).eval()
    vertices, _ = _ellipsoid()
    eyes = _eyes([-15.0])
    with torch.no_grad():
        gray = module.render(vertices[None], None, eyes)
        explicit = module.renderer(vertices[None], module.faces, eyes, torch.full((1, 1280, 3), GRAY_ALBEDO))
    torch.testing.assert_close(gray, explicit)
    shade = gray[0, :3, gray[0, 3] > 0.99]  # lit: 0.5 ambient + 0.5 directional from +y, times the albedo
    assert shade.numel() and shade.min() >= 0.5 * GRAY_ALBEDO - 1e-5 and shade.max() <= GRAY_ALBEDO + 1e-5
    assert shade.max() - shade.min() > 0.05  # shaded, not flat


# ------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("mode", ["vertex", "face"])
def test_coloured_prediction_round_trips_through_glb_and_ply(tmp_path, mode):
    vertices, faces = _ellipsoid()
    count = vertices.shape[0] if mode == "vertex" else faces.shape[0]
    colors = torch.rand(count, 3, generator=torch.Generator().manual_seed(1))
    paths = write_prediction(tmp_path, "mesh", vertices, faces, colors=colors)
    assert sorted(p.name for p in paths) == ["mesh.glb", "mesh.obj", "mesh.ply"]
    glb = trimesh.load(tmp_path / "mesh.glb", process=False, force="mesh")
    stored = np.asarray(glb.visual.vertex_colors)[:, :3] / 255.0
    expected = colors.numpy() if mode == "vertex" else np.repeat(colors.numpy(), 3, axis=0)  # flat: split faces
    assert stored.shape == expected.shape
    np.testing.assert_allclose(stored, expected, atol=0.5 / 255 + 1e-9)
    ply = trimesh.load(tmp_path / "mesh.ply", process=False)
    visual = ply.visual.vertex_colors if mode == "vertex" else ply.visual.face_colors
    np.testing.assert_allclose(np.asarray(visual)[:, :3] / 255.0, colors.numpy(), atol=0.5 / 255 + 1e-9)
    np.testing.assert_allclose(ply.vertices, vertices.numpy(), atol=1e-6)
    assert [p.name for p in write_prediction(tmp_path / "plain", "m", vertices, faces)] == ["m.obj", "m.glb"]
    write_prediction(tmp_path, "mesh", vertices, faces)  # a silhouette model's mesh of the same name: no colour
    assert sorted(p.name for p in tmp_path.glob("mesh.*")) == ["mesh.glb", "mesh.obj"]  # no stale coloured PLY


@pytest.mark.parametrize("colored", [False, True], ids=["plain", "color"])
def test_predict_encodes_and_decodes_each_image_once(tmp_path, colored):
    """``recon predict``'s mesh, colours and preview all come from one pass of the generator per image."""
    torch.manual_seed(0)
    module = _colored_module() if colored else ReconModule(encoder=BaselineEncoder(dim=16, image_size=32)).eval()
    images = torch.rand(3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    batches = [{"images": images[:2], "name": ["a", "b"]}, {"images": images[2:], "name": ["c"]}]
    seen: dict[str, int] = {}  # the items each part ran on, over all its calls

    def count(key):
        return lambda _module, args, _output: seen.update({key: seen.get(key, 0) + len(args[0])})

    for key in ("encoder", "decoder", "colors"):
        if (part := getattr(module.generator, key)) is not None:
            part.register_forward_hook(count(key))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[MeshWriter(dirpath=str(tmp_path))])
    trainer.predict(module, dataloaders=DataLoader(batches, batch_size=None), return_predictions=False)
    assert seen == {"encoder": 3, "decoder": 3, **({"colors": 3} if colored else {})}  # images, not passes
    assert sorted(p.name for p in tmp_path.glob("a.*")) == ["a.glb", "a.obj", *(["a.ply"] if colored else []), "a.png"]


# ------------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_overfitting_a_handful_of_objects_raises_the_colour_psnr(overfit_batch):
    batch = overfit_batch  # 4 objects × 2 views, fixed
    module = ReconModule(colors=ColorDecoder(), lr=1e-3)

    def held_psnr() -> float:  # the mesh from view a, rendered in view b, against view b's image
        with torch.no_grad():
            vertices, colors = module.predict_mesh(batch["images_a"])
            rendered = dataset_images(module.render(vertices, colors, batch["eyes_b"]))
        return image_psnr(rendered[:, :3], batch["images_b"][:, :3]).mean().item()

    optimizer = module.configure_optimizers()["optimizer"]
    before, losses = held_psnr(), []
    for _ in range(20):
        out = module.model_step(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss_color.item())
    after = held_psnr()
    print(f"held-view PSNR {before:.2f} -> {after:.2f} dB; colour loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert after > before + 2.0, (before, after)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.fixture
def _bare_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["recon"])


@pytest.mark.slow
@pytest.mark.usefixtures("_bare_argv")
def test_cli_fits_tests_and_predicts_with_the_colour_config(shrink_flags, tiny_h5, tmp_path):
    from recon.cli import main, run_cli

    run = tmp_path / "run"
    main(["fit", "-c", DEFAULT, "-c", COLOR, *shrink_flags()])
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["colors"]["class_path"] == "recon.models.ColorDecoder"
    assert any(key.startswith("generator.colors.") for key in checkpoint["state_dict"])
    (grid,) = (run / "media" / "silhouettes").glob("*.png")
    with Image.open(grid) as image:  # 8 columns: input, colour render, silhouette, mask per view
        assert image.width == 2 * (2 + 8 * 66)

    export = tmp_path / "export"
    cli = run_cli(["test", "-c", DEFAULT, "-c", COLOR, *shrink_flags(),
                   f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"--export.dirpath={export}"])
    (written,) = [p for p in run.rglob("results.json") if "wandb" not in p.parts]
    results = json.loads(written.read_text())
    assert results["psnr_colors"] == "predicted" and set(results["psnr"]) == {"airplane"}
    assert 0 < results["mpsnr"] < 100 and 0 < results["mssim"] <= 1
    assert math.isfinite(float(cli.trainer.callback_metrics["test/psnr_airplane"]))
    (scene, *_) = sorted((run / "media" / "meshes").rglob("*.glb"))  # MeshLogger: mesh in its colours + voxels
    assert np.asarray(trimesh.load(scene, process=False, force="mesh").visual.vertex_colors).shape[0] > 642
    for suffix in (".glb", ".ply"):
        (path, *_) = sorted((export / "test" / "airplane").glob(f"*{suffix}"))
        mesh = trimesh.load(path, process=False, force="mesh")
        assert np.asarray(mesh.visual.vertex_colors).shape == (642, 4)
    assert results["mpsnr"] == pytest.approx(float(cli.trainer.callback_metrics["test/psnr"]))
    assert "PSNR (dB)" in (written.parent / "results.md").read_text()

    with h5py.File(tiny_h5, "r") as file:
        view = file["test/images"][0, 3]  # (4, 64, 64) uint8, NMR convention
    (tmp_path / "images").mkdir()
    rgba = np.concatenate([255 - view[:3], view[3:]]).transpose(1, 2, 0)  # undo the inversion for a user PNG
    Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "plane.png")
    out = tmp_path / "predicted"
    main(["predict", "-c", DEFAULT, "-c", COLOR, *shrink_flags(), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
          f"--data.predict_images={tmp_path / 'images'}", f"--export.dirpath={out}"])  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["plane.glb", "plane.obj", "plane.ply", "plane.png",
                                                     "predictions.json"]
    manifest = json.loads((out / "predictions.json").read_text())  # a colour model's files include its PLY
    assert manifest["outputs"]["plane"]["files"] == ["plane.obj", "plane.glb", "plane.ply", "plane.png"]
    ply = trimesh.load(out / "plane.ply", process=False)
    assert np.asarray(ply.visual.vertex_colors).shape == (642, 4)
