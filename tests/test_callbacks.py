"""The logging callbacks: voxel geometry, image grids, results files, and real fit + test runs whose files on
disk (run folder and offline W&B run) are inspected."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import trimesh
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from recon.callbacks import (
    MeshLogger,
    SilhouetteLogger,
    ValidationSamplesCallback,
    VoxelIoULogger,
    image_grid,
    results_markdown,
    voxel_centers,
    voxel_surface,
)
from recon.mesh import icosphere, voxelize
from recon.module import ReconModule
from recon.render import SoftRenderer, eye_from_angles

CATEGORIES = ["airplane", "chair"]


# ------------------------------------------------------------------------------------------ voxel geometry
def test_voxel_centers_follow_the_dataset_orientation():
    """An off-centre sphere voxelized by recon.mesh.voxelize comes back centred where it was, in mesh units."""
    vertices, faces = icosphere(3)
    center = torch.tensor([0.2, -0.15, 0.1])
    voxels = voxelize((vertices * 0.2 + center)[None], faces)[0]
    points = voxel_centers(voxels)
    assert len(points) == int(voxels.sum())
    np.testing.assert_allclose(points.mean(0), center.numpy(), atol=0.01)  # a third of a voxel (1/31)
    radius = np.linalg.norm(points - center.numpy(), axis=1)
    assert radius.max() < 0.2 + np.sqrt(3) / 2 / 31
    shell = voxel_centers(voxels, surface_only=True)
    assert 0 < len(shell) < len(points) and np.linalg.norm(shell - center.numpy(), axis=1).min() > 0.1


def test_voxel_surface_is_closed_outward_and_encloses_the_voxels():
    one = np.zeros((32, 32, 32), dtype=bool)
    one[0, 31, 0] = True  # y-index 0, x-index 31, z-index 31: the corner (+x, −y, +z)
    vertices, faces = voxel_surface(one)
    mesh = trimesh.Trimesh(vertices, faces)  # merges the quads' shared corners
    assert len(mesh.vertices) == 8 and len(mesh.faces) == 12 and mesh.is_watertight
    np.testing.assert_allclose(mesh.bounds, [[30.5 / 31 - 0.5, -0.5 - 0.5 / 31, 30.5 / 31 - 0.5],
                                             [0.5 + 0.5 / 31, 0.5 / 31 - 0.5, 0.5 + 0.5 / 31]], atol=1e-6)

    blob = np.random.default_rng(0).random((32, 32, 32)) < 0.3
    vertices, faces = voxel_surface(blob)
    # the divergence theorem over outward faces gives the filled volume exactly (voxel side 1/31)
    assert trimesh.Trimesh(vertices, faces, process=False).volume == pytest.approx(blob.sum() / 31**3, rel=1e-4)


def test_face_colours_become_the_mean_of_each_vertex_faces_for_the_scene():
    from recon.callbacks.meshes import point_set, vertex_colors

    faces = np.array([[0, 1, 2], [0, 2, 3]])
    colors = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(vertex_colors(faces, colors, 4), [[0.5, 0, 0.5], [1, 0, 0], [0.5, 0, 0.5], [0, 0, 1]])
    per_vertex = np.random.default_rng(0).random((4, 3))
    assert vertex_colors(faces, per_vertex, 4) is per_vertex
    points = point_set(np.zeros((4, 3)), np.ones((1, 3)), per_vertex)
    np.testing.assert_allclose(points[:4, 3:], per_vertex * 255)
    assert points[4, 3:].tolist() == [255, 140, 0]  # voxels keep their orange


def test_image_grid_lays_cells_out_row_by_row():
    rows = [[np.zeros((4, 4, 3)), np.ones((4, 4, 3))], [np.ones((4, 4, 3)), np.zeros((4, 4, 3))]]
    grid = np.asarray(image_grid(rows, scale=2, gap=1))
    assert grid.shape == (2 * (1 + 2 * 5), 2 * (1 + 2 * 5), 3)
    assert grid[2, 2].tolist() == [0, 0, 0] and grid[2, 12].tolist() == [255, 255, 255]
    assert grid[12, 2].tolist() == [255, 255, 255] and grid[0, 0].tolist() == [128, 128, 128]


class RecordingSamples(ValidationSamplesCallback):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.logged: list[dict[str, torch.Tensor]] = []

    def log_samples(self, trainer, pl_module, samples) -> None:
        self.logged.append(samples)


def run_validation(callback: ValidationSamplesCallback, batches: int = 3, rank_zero: bool = True, sanity: bool = False):
    trainer = SimpleNamespace(is_global_zero=rank_zero, sanity_checking=sanity)
    callback.on_validation_epoch_start(trainer, None)
    for index in range(batches):
        batch = {"images_a": torch.full((2, 4, 8, 8), float(index)), "category": torch.tensor([index, index]),
                 "name": ["ignored", "ignored"]}
        callback.on_validation_batch_end(trainer, None, None, batch, index)
    callback.on_validation_epoch_end(trainer, None)


def test_samples_are_the_first_items_every_n_validations_on_rank_zero_only():
    callback = RecordingSamples(every_n_epochs=2, num_samples=3)
    run_validation(callback, sanity=True)  # sanity checks neither log nor count
    for _ in range(5):
        run_validation(callback)
    assert len(callback.logged) == 3  # validations 0, 2 and 4
    first = callback.logged[0]
    assert first.keys() == {"images_a", "category"} and first["category"].tolist() == [0, 0, 1]
    assert first["images_a"].shape == (3, 4, 8, 8)

    resumed = RecordingSamples(every_n_epochs=2, num_samples=3)
    resumed.load_state_dict(callback.state_dict())  # 5 validations done: the next one (5) is skipped
    run_validation(resumed)
    run_validation(resumed)
    assert len(resumed.logged) == 1

    other_rank = RecordingSamples()
    run_validation(other_rank, rank_zero=False)
    assert other_rank.logged == [] and other_rank.state_dict() == {"validations": 1}


def test_results_markdown_has_a_row_per_category_and_the_mean():
    results = {"iou": {"airplane": 0.5, "chair": 0.25}, "items": {"airplane": 3, "chair": 1}, "num_items": 4,
               "miou": 0.375, "loss": 0.1, "loss_sil": None, "encoder": "BaselineEncoder", "checkpoint": None,
               "finished": "now"}
    text = results_markdown(results)  # results without PSNR (written before it existed): n/a
    assert "| airplane | 0.5000 | n/a | 3 |" in text and "| **mean** | **0.3750** | **n/a** | 4 |" in text
    assert "PSNR:" not in text
    results.update(psnr={"airplane": 21.5, "chair": 18.25}, mpsnr=19.875, mssim=0.8, psnr_colors="gray")
    text = results_markdown(results)
    assert "| airplane | 0.5000 | 21.50 | 3 |" in text and "| **mean** | **0.3750** | **19.88** | 4 |" in text
    assert "flat mid-grey" in text


# ----------------------------------------------------------------------------------- tiny training runs
class EllipsoidPairs(Dataset):
    """View pairs of random ellipsoids in the dataset's conventions (masks rendered, voxels voxelized)."""

    def __init__(self, count: int = 4, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        vertices, faces = icosphere(3)
        radii = 0.15 + 0.2 * torch.rand(count, 1, 3, generator=generator)
        meshes = vertices[None] * radii
        self.views_a = torch.randint(0, 24, (count,), generator=generator)
        self.views_b = (self.views_a + 6) % 24
        self.eyes_a = eye_from_angles(2.732, 30.0, -15.0 * self.views_a.float()).float()
        self.eyes_b = eye_from_angles(2.732, 30.0, -15.0 * self.views_b.float()).float()
        renderer = SoftRenderer(image_size=64)
        color = torch.rand(count, 3, 1, 1, generator=generator)
        with torch.no_grad():
            self.images_a, self.images_b = (self._images(renderer.silhouette(meshes, faces, eyes), color)
                                            for eyes in (self.eyes_a, self.eyes_b))
        self.voxels = voxelize(meshes, faces)
        self.category = torch.arange(count) % len(CATEGORIES)

    @staticmethod
    def _images(alpha: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        mask = (alpha > 0.5).float()[:, None]
        return torch.cat([mask * (1 - color), mask], dim=1)  # NMR: 1 − (colour over white); alpha = mask

    def __len__(self) -> int:
        return len(self.category)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        keys = ("images_a", "images_b", "eyes_a", "eyes_b", "views_a", "views_b", "voxels", "category")
        return {key: getattr(self, key)[index] for key in keys} | {"object_index": torch.tensor(index)}


class EllipsoidData(pl.LightningDataModule):
    category_names = CATEGORIES

    def __init__(self) -> None:
        super().__init__()
        self.data = EllipsoidPairs()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=1)  # two batches make the two silhouette rows

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=4)


@pytest.fixture
def quiet_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


def fit_and_test(root: Path, logger, sanity_steps: int = 0) -> dict[str, float]:
    """Two training steps, one validation run (2 batches of 1), one test batch of 4 items."""
    torch.manual_seed(0)
    # the default encoder: an encoder instance passed in Python lands in hparams, and CSVLogger would write
    # its weights into hparams.yaml (minutes); the CLI passes class_path/init_args instead
    module = ReconModule(schedule_step=None)
    callbacks = [SilhouetteLogger(num_samples=3), MeshLogger(num_samples=1), VoxelIoULogger()]
    trainer = pl.Trainer(max_steps=2, limit_val_batches=2, num_sanity_val_steps=sanity_steps,
                         accelerator="cpu", logger=logger, callbacks=callbacks, default_root_dir=root,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         log_every_n_steps=1)
    data = EllipsoidData()
    trainer.fit(module, datamodule=data)
    return trainer.test(module, datamodule=data, verbose=False)[0]


def check_run_folder(folder: Path, metrics: dict[str, float]) -> dict:
    """The files every logger setting writes into the run folder; returns results.json."""
    (grid_path,) = (folder / "media" / "silhouettes").glob("*.png")  # one validation run logged
    assert grid_path.name == "e000_s0000002.png"
    with Image.open(grid_path) as grid:  # 2 rows (of the 3 asked for: 2 batches) × 6 columns, 66 px, ×2
        assert grid.size == (2 * (2 + 6 * 66), 2 * (2 + 2 * 66)) and grid.mode == "RGB"
    (stamp,) = (folder / "media" / "meshes").iterdir()
    objs, glbs = sorted(stamp.glob("*.obj")), sorted(stamp.glob("*.glb"))
    assert [p.stem for p in objs] == [p.stem for p in glbs] and len(objs) == 1 and "00_airplane_00000_v" in objs[0].stem
    mesh = trimesh.load(objs[0], process=False, force="mesh")
    assert mesh.vertices.shape == (642, 3) and mesh.faces.shape == (1280, 3)
    scene = trimesh.load(glbs[0], process=False, force="mesh")  # the mesh, then the voxels' cubes beside it
    assert len(scene.vertices) > 642 and scene.vertices[642:, 0].min() > 0.5

    results = json.loads((folder / "results.json").read_text())
    assert results["iou"].keys() == set(CATEGORIES) and results["items"] == {"airplane": 2, "chair": 2}
    assert results["num_items"] == 4 and results["encoder"] == "BaselineEncoder"
    assert results["miou"] == pytest.approx(metrics["test/miou"])
    assert results["loss"] == pytest.approx(metrics["test/loss"])
    # no colour head: PSNR of the mesh painted flat grey, per category like the IoU
    assert results["psnr_colors"] == "gray" and results["psnr"].keys() == set(CATEGORIES)
    assert results["mpsnr"] == pytest.approx(metrics["test/psnr"]) and 0 < results["mpsnr"] < 100
    markdown = (folder / "results.md").read_text()
    assert all(f"| {name} |" in markdown for name in CATEGORIES) and "**mean**" in markdown
    return results


class _StepRecordingWandbLogger(WandbLogger):
    """A WandbLogger that also keeps each ``log_metrics`` call's keys and step."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.logged: list[tuple[set[str], int | None]] = []

    def log_metrics(self, metrics, step=None) -> None:
        self.logged.append((set(metrics), step))
        super().log_metrics(metrics, step)


@pytest.mark.slow
def test_offline_wandb_run_holds_grids_meshes_and_the_iou_table(tmp_path: Path, quiet_wandb: None):
    import wandb

    logger = _StepRecordingWandbLogger(offline=True, save_dir=str(tmp_path), project="recon-test")
    try:
        metrics = fit_and_test(tmp_path, logger)
        summary = dict(logger.experiment.summary)
    finally:
        wandb.finish()
    results = check_run_folder(tmp_path, metrics)  # WandbLogger: the run folder is its save_dir
    assert results["wandb_run"] == logger.version
    # a validation's media share the step of its metrics on the dashboard's step axis
    steps = {key: step for keys, step in logger.logged for key in keys}
    assert steps["val/silhouettes"] == steps["val/meshes"] == steps["val/miou"] == 1, steps
    assert steps["test/iou_table"] == steps["test/miou"], steps

    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    assert len(list((media / "images").rglob("*.png"))) == 1
    assert len(list((media / "object3D").rglob("*.glb"))) == 1
    assert len(list((media / "object3D").rglob("*.pts.json"))) == 1
    (table,) = (media / "table").rglob("*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == ["category", "iou", "psnr", "items"]
    assert [row[0] for row in content["data"]] == [*CATEGORIES, "mean"]
    assert content["data"][-1][1] == pytest.approx(results["miou"])
    for name in ("results.json", "results.md"):  # the W&B run's own copies: a later test rewrites the folder's
        saved = run / "files" / name
        assert not saved.is_symlink() and saved.read_text() == (tmp_path / name).read_text()
    assert summary["test/miou"] == pytest.approx(results["miou"]) and summary["test/encoder"] == "BaselineEncoder"
    assert summary["test/num_items"] == 4 and summary["val/silhouettes"]["_type"] == "image-file"
    assert summary["test/psnr"] == pytest.approx(results["mpsnr"])
    # offline, the summary lives in the run's record log (protobuf records, which `wandb sync` uploads); W&B's
    # service process may still be writing it out just after finish() returns on a busy machine
    record_log = run / f"run-{logger.version}.wandb"
    deadline = time.monotonic() + 60
    while b"test/num_items" not in record_log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert b"test/num_items" in record_log.read_bytes()


@pytest.mark.slow
def test_without_a_logger_files_land_in_default_root_dir(tmp_path: Path):
    metrics = fit_and_test(tmp_path / "run", logger=False, sanity_steps=1)  # the sanity check logs nothing
    check_run_folder(tmp_path / "run", metrics)
    assert not (tmp_path / "run" / "wandb").exists()


@pytest.mark.slow
def test_with_a_csv_logger_elsewhere_files_still_land_in_default_root_dir(tmp_path: Path):
    logger = CSVLogger(save_dir=tmp_path, name="csv")
    metrics = fit_and_test(tmp_path / "root", logger)
    check_run_folder(tmp_path / "root", metrics)
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()


def test_mesh_writer_removes_what_a_killed_run_was_writing(tmp_path):
    from recon.callbacks import MeshWriter

    out = tmp_path / "out"
    (out / "test" / "chair").mkdir(parents=True)
    dead = [out / ".img096.png.tmp-999999999", out / "test" / "chair" / ".00001_v00.obj.tmp-999999999"]
    staged = out / ".img095.tmp-999999999"  # a prediction's files being written together
    staged.mkdir()
    (staged / "img095.obj").write_text("whole")
    alive = out / f".img097.png.tmp-{os.getpid()}"  # a write in progress in a live process
    for path in (*dead, alive):
        path.write_text("half")
    (out / "predictions.json").write_text("{}")  # the manifest of the last predict into this folder
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path))
    writer = MeshWriter(dirpath=str(out), previews=False)
    writer.setup(trainer, None, "predict")
    assert [path.exists() for path in (*dead, staged)] == [False, False, False] and alive.exists()
    # the manifest stays until this predict writes a file (a predict refused before it, e.g. a checkpoint with NaN
    # weights, leaves the folder as it was), then goes: the outputs here are no longer (all) that predict's
    assert (out / "predictions.json").exists()
    from recon.mesh import icosphere
    from recon.models import PredictedMesh

    vertices, faces = icosphere(1)
    writer.write_on_batch_end(trainer, SimpleNamespace(faces=faces), PredictedMesh(vertices[None], None), None,
                              {"name": ["new"], "images": torch.zeros(1, 4, 64, 64)}, 0)
    assert not (out / "predictions.json").exists() and (out / "new.obj").is_file()


def test_a_predictions_files_replace_an_earlier_runs_together_or_not_at_all(tmp_path, monkeypatch):
    from recon import prediction
    from recon.mesh import icosphere

    vertices, faces = icosphere(1)
    old = {suffix: tmp_path / f"chair{suffix}" for suffix in (".obj", ".glb", ".ply", ".png")}
    for path in old.values():
        path.write_text("an earlier run's")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prediction, "save_image", killed)  # Ctrl-C while the preview is written, after the meshes
    image = torch.zeros(4, 64, 64)
    with pytest.raises(KeyboardInterrupt):
        prediction.write_prediction(tmp_path, "chair", vertices, faces, image, prediction.preview_renderer(64))
    assert all(path.read_text() == "an earlier run's" for path in old.values())  # all the earlier run's, still
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in old.values())  # nothing staged left
    monkeypatch.undo()

    written = prediction.write_prediction(tmp_path, "chair", vertices, faces, image, prediction.preview_renderer(64))
    assert written == [old[".obj"], old[".glb"], old[".png"]]
    assert all(path.read_bytes() != b"an earlier run's" for path in written)
    assert not old[".ply"].exists()  # no colours this time: the earlier coloured mesh is not this one
    prediction.write_prediction(tmp_path, "chair", vertices, faces)
    assert not old[".png"].exists() and sorted(p.name for p in tmp_path.iterdir()) == ["chair.glb", "chair.obj"]
