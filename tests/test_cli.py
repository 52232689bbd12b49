"""The ``recon`` command end to end (fit → test → predict, resume, config composition) and its PNG inputs."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Callback
from PIL import Image

from recon.callbacks import ModelCheckpoint
from recon.callbacks.interrupt import forget_interrupts
from recon.cli import _finish_wandb_run, main, run_cli
from recon.datamodules.images import ImageFolderDataset, find_images, output_names, unreadable, view_from_image

# Lightning 2.6 itself calls jsonargparse's deprecated add_instantiator: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEFAULT = str(CONFIGS / "default.yaml")


@pytest.fixture(autouse=True)
def _bare_argv(monkeypatch):
    """LightningCLI warns when given args while sys.argv holds pytest's own flags."""
    monkeypatch.setattr(sys, "argv", ["recon"])


def _rows(run: Path, version: int = 0) -> list[dict[str, str]]:
    with open(run / "logs" / f"version_{version}" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def _write_pngs(h5_path: Path, folder: Path) -> list[str]:
    """Two dataset views as a user would have them: RGBA PNG (normal colours) and a non-square RGB PNG."""
    folder.mkdir()
    with h5py.File(h5_path, "r") as file:
        image = file["test/images"][0, 3]  # (4, 64, 64) uint8, NMR convention
    rgb = 255 - image[:3]  # NMR stores 1 − (colour over white)
    rgba = np.concatenate([rgb, image[3:]]).transpose(1, 2, 0)
    Image.fromarray(rgba, "RGBA").resize((96, 96)).save(folder / "plane.png")
    Image.fromarray(rgb.transpose(1, 2, 0), "RGB").resize((80, 60)).save(folder / "plane photo.png")
    return ["plane", "plane photo"]


def _without_test_objects_of(source: Path, path: Path, category: str) -> Path:
    """A copy of the views file ``source`` whose test split holds no object of ``category``."""
    from recon.datamodules.h5 import ViewsWriter, read_info

    info = read_info(source)
    drop = info.category_names.index(category)
    with h5py.File(source, "r") as file, ViewsWriter(path, info.categories, source="synthetic",
                                                    layout=info.layout) as writer:
        for split in ("train", "val", "test"):
            group = file[split]
            keep = np.flatnonzero((group["category"][:] != drop) | (split != "test"))
            writer.append(split, group["images"][keep], group["voxels"][keep], group["category"][keep],
                          [name.decode() for name in group["object_id"][keep]])
    return path


@pytest.mark.slow
def test_fit_then_test_then_predict(shrink_flags, tiny_h5, tmp_path, capsys):
    run = tmp_path / "run"
    main(["fit", "-c", DEFAULT, *shrink_flags()])
    checkpoints = run / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file() and (checkpoints / "best.ckpt").is_file()
    assert (run / "config.yaml").is_file()  # the run folder (the W&B logger's save_dir)
    (wandb_run,) = (run / "wandb").glob("offline-run-*")  # W&B is on and offline by default
    assert (wandb_run / "files" / "recon-config.yaml").is_file()  # each W&B run keeps its own resolved config
    validation = [row for row in _rows(run) if row.get("val/miou")]
    assert validation and 0 <= float(validation[-1]["val/miou"]) <= 1
    # plain hyperparameters: the checkpoint opens without unpickling code
    checkpoint = torch.load(checkpoints / "best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["encoder"]["class_path"] == "recon.models.BaselineEncoder"
    assert checkpoint["hyper_parameters"]["category_names"] == ["airplane", "chair"]  # linked from the data

    export = tmp_path / "export"
    cli = run_cli(["test", "-c", DEFAULT, *shrink_flags(), f"--ckpt_path={checkpoints / 'best.ckpt'}",
                f"--export.dirpath={export}"])  # fmt: skip
    results = stored = json.loads((run / "results.json").read_text())
    # the test's config is saved beside the fit's, which stays the record of how the run was trained
    fit_config, test_config = (yaml.safe_load((run / name).read_text()) for name in ("config.yaml", "config-test.yaml"))
    assert fit_config["ckpt_path"] is None and "verbose" not in fit_config
    assert test_config["ckpt_path"] == str(checkpoints / "best.ckpt") and "verbose" in test_config
    assert stored["data"] == str(tiny_h5) and stored["data_source"] == "synthetic"  # where the numbers come from
    assert stored["global_step"] == 2 and stored["checkpoint"].endswith("best.ckpt")  # the tested checkpoint's step
    assert set(results["iou"]) == {"airplane"}  # 2 batches × 2 items: the first object's first 4 views
    # of the split's 2 objects × 24 views: a partial test, said in the results and on the console
    assert results["num_items"] == 4 and results["split_items"] == 48
    assert "**Partial test:** scored 4 of the test split's 48 items" in (run / "results.md").read_text()
    assert "recon test: scored 4 of the test split's 48 items" in capsys.readouterr().err
    assert math.isfinite(results["miou"]) and 0 <= results["miou"] <= 1
    assert math.isfinite(results["loss"]) and results["loss"] > 0
    assert math.isfinite(float(cli.trainer.callback_metrics["test/iou_airplane"]))
    exported = sorted(p.name for p in (export / "test" / "airplane").glob("*.obj"))
    assert exported == [f"00000_v{view:02d}.obj" for view in range(4)]  # one mesh per (object, view)
    assert results["categories_without_items"] == [] and results["voxel_size"] == 32

    # A validate of part of what it evaluates says so (shrink_flags: 2 batches of 2 of the 4 val items; here 1).
    for limit, said in ((None, False), (1, True)):
        main(["validate", "-c", DEFAULT, *shrink_flags({"trainer.limit_val_batches": limit}),
              f"--ckpt_path={checkpoints / 'best.ckpt'}", f"--trainer.default_root_dir={tmp_path / 'validated'}"])
        assert ("recon validate: --trainer.limit_val_batches 1: scores 2 of the 4 val items it evaluates; its numbers "
                "are not the whole split's" in capsys.readouterr().err) is said

    # A test split without one of the categories: its mean is over the others, said before and in the results.
    lacking = _without_test_objects_of(tiny_h5, tmp_path / "no-test-chair.h5", "chair")
    main(["test", "-c", DEFAULT, *shrink_flags({"data.path": lacking, "trainer.limit_test_batches": None}),
          f"--ckpt_path={checkpoints / 'best.ckpt'}", f"--trainer.default_root_dir={tmp_path / 'lacking'}"])
    assert (f"{lacking}: its 'test' split holds no object of chair: mean IoU is over the other 1 category"
            in capsys.readouterr().err)
    results = json.loads((tmp_path / "lacking" / "results.json").read_text())
    assert results["categories_without_items"] == ["chair"] and set(results["iou"]) == {"airplane"}
    assert "**Categories without test items:** chair" in (tmp_path / "lacking" / "results.md").read_text()

    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"  # a mistyped image path: one line, before any run folder or W&B run
    flags = shrink_flags({"trainer.default_root_dir": str(elsewhere)})
    assert main(["predict", "-c", DEFAULT, *flags, f"--ckpt_path={checkpoints / 'last.ckpt'}",
                 f"--data.predict_images={tmp_path / 'imgs' / '*.png'}"]) == 1
    assert f"recon predict: error: no images match '{tmp_path / 'imgs' / '*.png'}'" in capsys.readouterr().err
    assert not elsewhere.exists()
    notes = tmp_path / "notes.png"  # matches, but no image: refused before the run folder too
    notes.write_text("not an image")
    assert main(["predict", "-c", DEFAULT, *flags, f"--ckpt_path={checkpoints / 'last.ckpt'}",
                 f"--data.predict_images={notes}"]) == 1
    assert f"recon predict: error: no readable image matches '{notes}'" in capsys.readouterr().err
    assert not elsewhere.exists()

    names = _write_pngs(tiny_h5, tmp_path / "images")
    cut = tmp_path / "images" / "cut short.png"  # one damaged file among them is skipped, not fatal
    cut.write_bytes((tmp_path / "images" / "plane.png").read_bytes()[:300])
    out = tmp_path / "predicted"
    capsys.readouterr()
    main(["predict", "-c", DEFAULT, *shrink_flags(), f"--ckpt_path={checkpoints / 'last.ckpt'}",
          f"--data.predict_images={tmp_path / 'images' / '*.png'}", f"--export.dirpath={out}"])  # fmt: skip
    for name in names:
        for suffix in (".obj", ".glb", ".png"):
            assert (out / f"{name}{suffix}").stat().st_size > 0
    assert not list(out.glob("cut short.*"))
    assert (out / "skipped.txt").read_text().startswith(f"{cut}\tcannot read it as an image (")
    printed = capsys.readouterr().out
    assert f"skipped {cut}: cannot read it as an image" in printed
    assert "skipped 1 unusable images (unreadable, or with no object)" in printed
    with Image.open(out / "plane.png") as preview:
        assert preview.size == (5 * 128, 128)  # the input, then four views of the mesh
    manifest = json.loads((out / "predictions.json").read_text())  # written last: what this predict wrote
    assert manifest["checkpoint"] == str(checkpoints / "last.ckpt")
    assert manifest["predicted"] == manifest["images"] == len(names)
    assert sorted(manifest["outputs"]) == sorted(names)
    assert manifest["outputs"]["plane"] == {"image": str(tmp_path / "images" / "plane.png"),
                                            "files": ["plane.obj", "plane.glb", "plane.png"]}
    assert manifest["skipped"] == [{"image": str(cut), "reason": manifest["skipped"][0]["reason"]}]
    # A predict of only the first batch says so, and its manifest lists what it wrote.
    main(["predict", "-c", DEFAULT, *shrink_flags(), f"--ckpt_path={checkpoints / 'last.ckpt'}",
          f"--data.predict_images={tmp_path / 'images' / '*.png'}", f"--export.dirpath={out}",
          "--trainer.limit_predict_batches=1", "--data.eval_batch_size=1"])  # fmt: skip
    assert f"predicted 1 of the {len(names)} images (--trainer.limit_predict_batches)" in capsys.readouterr().out
    manifest = json.loads((out / "predictions.json").read_text())
    assert manifest["predicted"] == 1 and list(manifest["outputs"]) == ["plane photo"]  # its file sorts first

    # Predicting into the images' own folder would write plane.png's preview over plane.png: refused, photos kept.
    photo = (tmp_path / "images" / "plane.png").read_bytes()
    for dirpath, message in ((tmp_path / "images", ".png over the input image"),
                             (tmp_path / "images" / "plane.png" / "out", "is a file, not a folder")):
        assert main(["predict", "-c", DEFAULT, *shrink_flags(), f"--ckpt_path={checkpoints / 'last.ckpt'}",
                     f"--data.predict_images={tmp_path / 'images'}", f"--export.dirpath={dirpath}"]) == 1
        assert message in capsys.readouterr().err
    assert (tmp_path / "images" / "plane.png").read_bytes() == photo
    assert not list((tmp_path / "images").glob("*.obj"))


def _wandb_run_ids(run: Path) -> list[str]:
    """The W&B run id of each offline-run folder in ``run``, oldest first."""
    return [path.name.rsplit("-", 1)[1] for path in sorted((run / "wandb").glob("offline-run-*"))]


@pytest.mark.slow
def test_resume_from_last_continues_at_the_saved_step_with_its_schedule(shrink_flags, tmp_path, capsys, recwarn,
                                                                        monkeypatch):
    run = tmp_path / "run"
    flags = {"model.schedule_step": 3, "model.sigma": 1e-4, "model.lr": 1e-4}
    main(["fit", "-c", DEFAULT, *shrink_flags(flags)])
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2 and _wandb_run_ids(run) == [saved["recon_wandb_run"]]
    older = shutil.copy(run / "checkpoints" / "last.ckpt", tmp_path / "step-2.ckpt")  # a copy kept aside
    capsys.readouterr()
    cli = run_cli(["fit", "-c", DEFAULT, *shrink_flags({**flags, "trainer.max_steps": 4}), "--ckpt_path=last"])
    # the resumed fit goes on logging to the W&B run that saved the checkpoint (offline: a second folder of that run)
    assert _wandb_run_ids(run) == [saved["recon_wandb_run"]] * 2
    assert f"recon fit: continuing W&B run {saved['recon_wandb_run']}, the run that saved last.ckpt" in (
        capsys.readouterr().err)
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]  # the run's own folder
    assert cli.trainer.global_step == 4
    assert isinstance(cli.trainer.checkpoint_callback, ModelCheckpoint)  # last.ckpt at every validation
    steps = {int(row["step"]): row for row in _rows(run, version=1) if row.get("train/loss")}
    assert sorted(steps) == [2, 3]  # two more steps, numbered from the saved step: not a fresh run
    assert float(steps[2]["train/sigma"]) == pytest.approx(1e-4)
    assert float(steps[3]["train/sigma"]) == pytest.approx(3e-5)  # σ follows global_step after the resume
    assert float(steps[2]["train/lr"]) == pytest.approx(1e-4)
    assert float(steps[3]["train/lr"]) == pytest.approx(3e-5)  # and the restored LambdaLR drops the lr at the same step
    assert "other settings than its run's" not in capsys.readouterr().err  # resumed as it was trained: nothing to say
    # the run's record of how it trained: config.yaml the resumed fit's, the earlier one kept beside it
    def trainer_setting(name: str, key: str) -> object:
        return yaml.safe_load((run / name).read_text())["trainer"][key]

    assert trainer_setting("config-until-step2.yaml", "max_steps") == 2
    assert trainer_setting("config.yaml", "max_steps") == 4

    # Resumed with another lr and λ_lap: the λ applies, the lr cannot (Adam's state brings the run's), and one line
    # says which; the next checkpoint records the lr the run really has. (Without W&B this time: the checkpoint
    # still names the run's W&B run, for a later resume with W&B.)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    main(["fit", "-c", DEFAULT, *shrink_flags({**flags, "model.lr": 1e-2, "model.lambda_lap": 0.02,
                                                "trainer.max_steps": 5, "data.batch_size": 4}), "--ckpt_path=last"])
    err = capsys.readouterr().err
    assert (f"recon fit: resuming {run / 'checkpoints' / 'last.ckpt'} with other settings than its run's: lambda_lap "
            "0.005 → 0.02 applies from step 4 on; lr 0.01 is not used (the run's 0.0001 is restored with its "
            "optimizer)") in err
    # another batch per step (here data.batch_size; or the same batch on another number of processes) is said too
    assert (f"recon fit: resuming {run / 'checkpoints' / 'last.ckpt'}, trained on 2 (1 process × 2) view pairs a "
            "step, on 4 (1 process × 4) from step 4 on, with the run's lr; the rest of the epoch in progress is drawn "
            "anew") in err
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 5 and saved["hyper_parameters"]["lambda_lap"] == 0.02
    assert _wandb_run_ids(run) == [saved["recon_wandb_run"]] * 2
    assert saved["hyper_parameters"]["lr"] == 1e-4 and saved["lr_schedulers"][0]["base_lrs"] == [1e-4]
    assert yaml.safe_load((run / "config-until-step4.yaml").read_text())["model"]["lambda_lap"] == 0.005
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["lambda_lap"] == 0.02

    # From the copy of step 2, behind the run's last.ckpt (step 5): the W&B run has logged steps 2-4 already, so
    # this fit logs to a W&B run of its own
    monkeypatch.delenv("WANDB_MODE")
    main(["fit", "-c", DEFAULT, *shrink_flags({**flags, "trainer.max_steps": 3}), f"--ckpt_path={older}"])
    assert (f"recon fit: {older} is at step 2, and W&B run {saved['recon_wandb_run']}, which saved it, went on to "
            f"step 5 ({run / 'checkpoints' / 'last.ckpt'}): this fit logs to a new W&B run") in capsys.readouterr().err
    *continued, new = _wandb_run_ids(run)
    assert continued == [saved["recon_wandb_run"]] * 2 and new != saved["recon_wandb_run"]
    # the settings that trained steps 4-5, replaced by this fit from step 2: kept under the step they reached
    assert trainer_setting("config-until-step5.yaml", "max_steps") == 5
    assert trainer_setting("config.yaml", "max_steps") == 3
    main(["fit", "-c", DEFAULT, *shrink_flags(flags)])  # a new run into the folder: the earlier run's records go
    assert sorted(path.name for path in run.glob("config*.yaml")) == ["config.yaml"]
    main(["fit", "-c", DEFAULT, *shrink_flags(flags), "--ckpt_path=last"])  # resumed as it was trained
    assert sorted(path.name for path in run.glob("config*.yaml")) == ["config.yaml"]


class _SigtermDuringStep(Callback):
    """Sends this process a real SIGTERM (or ``signum``) inside training step ``step``, or inside batch
    ``validation_batch`` of the validation at that step (as a scheduler ending the job would)."""

    def __init__(self, step: int, validation_batch: int | None = None, signum: int = signal.SIGTERM) -> None:
        self.step, self.validation_batch, self.signum = step, validation_batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.validation_batch is None:
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.global_step == self.step and batch_idx == self.validation_batch:
            os.kill(os.getpid(), self.signum)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_a_fit_resumed_mid_epoch_trains_on_the_batches_of_the_uninterrupted_run(shrink_flags, tmp_path, recwarn,
                                                                                 ctrl_c_before_step):
    """Batches of 1 from the tiny file's 4 training objects: 4 batches an epoch. Ctrl-C during step 2's backward
    saves last.ckpt at step 3 (the step finished), mid-epoch, where a validation is due; resumed there, the fit
    validates (before, that validation was skipped), then goes on with the epoch's fourth batch (a plain loader
    would start the epoch over: its first three batches twice, its last never), until a SIGTERM during that batch,
    the epoch's last, saves at step 4. Then fits that max_steps ends
    between validations, mid-epoch (step 5) and at an epoch's end (step 8), each resumed: the last.ckpt written as
    the fit ends holds the epoch it stopped in, not the next one (its ``epoch`` then ran one further ahead at every
    such resume, and the resumed epochs lost batches)."""
    from recon.cli import ReconCLI

    whole, parted = tmp_path / "whole", tmp_path / "parted"
    flags = {"data.batch_size": 1, "trainer.max_steps": 9, "trainer.val_check_interval": 3}
    main(["fit", "-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": whole})])
    previous = signal.getsignal(signal.SIGINT)
    forget_interrupts()
    try:
        cli = ReconCLI(args=["-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": parted})], run=False)
        cli.trainer.callbacks.append(ctrl_c_before_step(2, during="backward"))  # inside step 2's backward
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after the interrupt's checkpoint
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        signal.signal(signal.SIGINT, previous)
        forget_interrupts()
    _finish_wandb_run()
    assert torch.load(parted / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3

    def resumed_until_sigterm(sigterm: Callback) -> None:  # a resume of the whole budget that a SIGTERM stops
        previous_term = signal.getsignal(signal.SIGTERM)
        try:
            cli = ReconCLI(args=["-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": parted})],
                           run=False)
            cli.trainer.callbacks.append(sigterm)
            with pytest.raises(SystemExit):
                cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path="last")
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            forget_interrupts()
        _finish_wandb_run()

    # resumed, then SIGTERM (a scheduler) during the epoch's last batch: saved at step 4 with the epoch completed but
    # its batch counters still at its end (before: the resumed fit's next epoch ended 4 batches early)
    resumed_until_sigterm(_SigtermDuringStep(3))
    assert torch.load(parted / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    for steps, epoch in ((5, 1), (6, 1), (8, 2), (9, 2)):  # 5: epoch 1's first batch done; 8: epoch 1 done
        # (to step 6: a SIGTERM during the validation there, after its first batch, saves step 6; before, the
        # resumed fit took that validation for done and never ran it)
        if steps != 6:
            main(["fit", "-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": parted,
                                                       "trainer.max_steps": steps}), "--ckpt_path=last"])
        else:
            resumed_until_sigterm(_SigtermDuringStep(6, validation_batch=0))
        saved = torch.load(parted / "checkpoints" / "last.ckpt", weights_only=True)
        assert (saved["global_step"], saved["epoch"]) == (steps, epoch)
    expected = {int(row["step"]): float(row["train/loss"]) for row in _rows(whole) if row.get("train/loss")}
    resumed = {int(row["step"]): float(row["train/loss"]) for version in (1, 2, 3, 4, 5)
               for row in _rows(parted, version) if row.get("train/loss")}
    assert sorted(resumed) == list(range(3, 9)) and sorted(expected) == list(range(9))
    validations = sorted((int(row["step"]), float(row["val/loss"])) for version in range(6)
                         for row in _rows(parted, version) if row.get("val/loss"))
    assert validations == sorted((int(row["step"]), float(row["val/loss"])) for row in _rows(whole)
                                 if row.get("val/loss")) and len(validations) == 3
    # the interrupted fit logged its steps up to the one the Ctrl-C came in, that one included
    assert {int(row["step"]): float(row["train/loss"]) for row in _rows(parted) if row.get("train/loss")} == {
        0: expected[0], 1: expected[1], 2: expected[2]}
    assert resumed == {step: expected[step] for step in resumed}
    assert torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["loops"] == saved["loops"]
    assert not [w for w in recwarn if "not resumable" in str(w.message)]  # Lightning's mid-epoch warning


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_validation_interrupted_part_of_the_way_runs_again_whole_when_resumed(shrink_flags, tmp_path, signum):
    """4 validation batches of 1 item; the fit stopped at its validation of step 2 as the third batch begins (Ctrl-C:
    inside it, SIGTERM: after it) and resumed. Lightning then "finished" that validation: it ran as many batches fewer
    as were done (from the first: 2 of the 4 items), the metrics of those done being in no checkpoint, and logged its
    val/loss and val/miou, which chose best.ckpt, as the validation's."""
    from recon.cli import ReconCLI

    whole, parted = tmp_path / "whole", tmp_path / "parted"
    flags = {"data.batch_size": 1, "data.eval_batch_size": 1, "trainer.limit_val_batches": 4, "trainer.max_steps": 4}
    main(["fit", "-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": whole})])
    previous = signal.getsignal(signum)
    try:
        cli = ReconCLI(args=["-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": parted})], run=False)
        cli.trainer.callbacks.append(_SigtermDuringStep(2, validation_batch=2, signum=signum))
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after the interrupt's checkpoint
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        signal.signal(signum, previous)
        forget_interrupts()
    _finish_wandb_run()
    assert torch.load(parted / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    main(["fit", "-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": parted}), "--ckpt_path=last"])

    def validations(rows):
        return sorted((int(row["step"]), float(row["val/loss"]), float(row["val/miou"])) for row in rows
                      if row.get("val/loss"))

    assert not validations(_rows(parted))  # stopped inside its first validation
    assert validations(_rows(parted, version=1)) == validations(_rows(whole)) and len(validations(_rows(whole))) == 2


@pytest.mark.slow
@pytest.mark.parametrize("config", [
    {"trainer.val_check_interval": 1.0, "trainer.check_val_every_n_epoch": 1},
    {"trainer.limit_val_batches": 0, "trainer.check_val_every_n_epoch": 1},
    {"trainer.val_check_interval": 3, "trainer.check_val_every_n_epoch": 1},
    {"trainer.limit_train_batches": 3},
    {"trainer.accumulate_grad_batches": 2, "trainer.val_check_interval": 1},
    {"data.num_workers": 2},
], ids=["validation-once-an-epoch", "no-validation", "validation-every-3-batches-of-each-epoch",
        "3-batches-an-epoch", "accumulate-2-batches", "worker-processes"])
def test_a_fit_resumed_at_an_epochs_end_or_inside_one_goes_on_as_the_uninterrupted_run(shrink_flags, tmp_path,
                                                                                      config):
    """4 batches an epoch; fits that max_steps ends at step 4, 5, 8 and 9, each resumed from the last (epoch ends and
    insides, by config). Validating once an epoch or never, Lightning saves at each epoch's end (also where max_steps
    ended the epoch early); validating within epochs, recon saves as the fit ends. Before: resumed under max_steps,
    Lightning's epoch-end checkpoints trained another epoch's batches (and an epoch stopped early was never
    finished); a resume that begins a new epoch logged every step one late where the config validates within
    epochs; the loader skipped the wrong number of batches where limit_train_batches shortens the epoch, and none
    with accumulate_grad_batches (Lightning then ended the epoch before its last batches); and with worker processes
    the first resumed epoch drew the first epoch's view pairs."""
    whole, parted = tmp_path / "whole", tmp_path / "parted"
    flags = {"data.batch_size": 1, "trainer.max_steps": 9, **config}
    main(["fit", "-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": whole})])
    for leg, steps in enumerate((4, 5, 8, 9)):
        main(["fit", "-c", DEFAULT, *shrink_flags({**flags, "trainer.default_root_dir": parted,
                                                   "trainer.max_steps": steps}), *(["--ckpt_path=last"] * (leg > 0))])
        assert torch.load(parted / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps

    def logged(rows):
        return sorted((key, int(row["step"]), float(value)) for row in rows for key, value in row.items()
                      if key in ("train/loss", "val/loss", "epoch") and value)

    assert logged(row for version in range(4) for row in _rows(parted, version)) == logged(_rows(whole))
    assert torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["loops"] == \
        torch.load(parted / "checkpoints" / "last.ckpt", weights_only=True)["loops"]


@pytest.mark.slow
def test_a_new_fit_into_a_folder_with_a_run_says_it_replaces_that_runs_checkpoints(shrink_flags, tmp_path, capsys):
    checkpoints = tmp_path / "run" / "checkpoints"
    assert main(["fit", "-c", DEFAULT, *shrink_flags()]) == 0
    assert "an earlier run's checkpoints" not in capsys.readouterr().err  # a first run: nothing to say
    assert main(["fit", "-c", DEFAULT, *shrink_flags()]) == 0  # no --ckpt_path: a new run, as asked
    err = capsys.readouterr().err
    assert (f"recon fit: {checkpoints} holds an earlier run's checkpoints, which this new run replaces as it saves "
            "its own; --ckpt_path last continues that run instead") in err
    first, second = _wandb_run_ids(tmp_path / "run")  # a new run is a new W&B run
    assert first != second and torch.load(checkpoints / "last.ckpt", weights_only=True)["recon_wandb_run"] == second
    # a fit that starts from a checkpoint copied from another run folder starts a W&B run of its own there
    other = tmp_path / "other"
    assert main(["fit", "-c", DEFAULT, *shrink_flags({"trainer.default_root_dir": other, "trainer.max_steps": 3}),
                 f"--ckpt_path={checkpoints / 'last.ckpt'}"]) == 0
    assert _wandb_run_ids(other) not in ([first], [second]) and len(_wandb_run_ids(other)) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_a_checkpoint_of_another_model_is_named_not_dumped(shrink_flags, tmp_path, capsys):
    # A baseline run, then the ResNet config pointed at it: resuming its last.ckpt is refused in one line that
    # names both models (not Lightning's traceback listing every tensor), and the checkpoint is left as it was;
    # testing a checkpoint file builds the checkpoint's own model (Lightning's rule), and one line says so.
    run = tmp_path / "run"
    resnet = str(CONFIGS / "encoder" / "resnet.yaml")
    assert main(["fit", "-c", DEFAULT, *shrink_flags()]) == 0
    last = run / "checkpoints" / "last.ckpt"
    saved, wandb_runs = last.read_bytes(), set((run / "wandb").glob("offline-run-*"))
    capsys.readouterr()
    assert main(["fit", "-c", DEFAULT, "-c", resnet, *shrink_flags({"trainer.max_steps": 4}), "--ckpt_path=last"]) == 1
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recon fit: error")]
    assert f"{last} holds another model (encoder BaselineEncoder(dim=512)" in error
    assert "than this config builds (encoder ResNetEncoder(dim=512)" in error and "Traceback" not in error
    assert last.read_bytes() == saved
    assert set((run / "wandb").glob("offline-run-*")) == wandb_runs  # refused before the run (and W&B's) started

    for ckpt_path in (last, "last"):  # the run's `last` is its last.ckpt file, as for fit
        assert main(["test", "-c", DEFAULT, "-c", resnet, *shrink_flags(), f"--ckpt_path={ckpt_path}"]) == 0
        err = capsys.readouterr().err
        assert f"recon test: the model is built from {last}'s saved settings, not the config's: encoder " \
               "ResNetEncoder → BaselineEncoder" in err
    assert json.loads((run / "results.json").read_text())["checkpoint"].endswith("last.ckpt")
    capsys.readouterr()
    assert main(["test", "-c", DEFAULT, *shrink_flags(), f"--ckpt_path={last}"]) == 0
    assert "saved settings" not in capsys.readouterr().err  # the config's own model: nothing to say


@pytest.mark.slow
def test_a_checkpoint_file_that_is_missing_cut_short_or_another_file_is_one_line_before_the_run(shrink_flags,
                                                                                               tmp_path, capsys):
    assert main(["fit", "-c", DEFAULT, *shrink_flags()]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    copied = tmp_path / "copied" / "checkpoints"  # a run folder copied between machines, its last.ckpt cut short
    copied.mkdir(parents=True)
    (copied / "last.ckpt").write_bytes(last.read_bytes()[:4_000_000])
    shutil.copy(last.with_name("best.ckpt"), copied / "best.ckpt")
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    middle = tmp_path / "zeroed.ckpt"  # a copy damaged in the middle: torch would read it without a word
    data = bytearray(last.read_bytes())
    data[len(data) // 2:len(data) // 2 + 100_000] = bytes(100_000)
    middle.write_bytes(bytes(data))
    weights = tmp_path / "weights.pt"  # the model's weights alone, saved with torch.save
    torch.save(torch.load(last, weights_only=True)["state_dict"], weights)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("photo.png", b"not a checkpoint")
    cases = [
        ("test", middle, f"{middle}: damaged: its part "),
        ("test", weights, f"{weights}: a torch file, but not a checkpoint of a run (it has no state_dict and "
                          "pytorch-lightning_version: e.g. a model's weights saved with torch.save); give one that "
                          "recon fit saved, such as RUN/checkpoints/best.ckpt"),
        ("validate", archive, f"{archive}: not a checkpoint (a zip archive, but not one torch wrote: it holds no "
                              "data.pkl); copy it again or give another checkpoint"),
        ("test", "best", f"--ckpt_path best: there is no {tmp_path / 'refused' / 'checkpoints' / 'best.ckpt'}; point "
                         "--trainer.default_root_dir at a trained run, or give the checkpoint file (--ckpt_path "
                         "RUN/checkpoints/best.ckpt)"),
        ("test", image, f"{image}: truncated, damaged or not a checkpoint (a .ckpt is a zip archive, and this file "
                        "has no zip directory; 2 KiB); copy it again or give another checkpoint"),
        ("test", tmp_path / "nothere.ckpt", f"--ckpt_path {tmp_path / 'nothere.ckpt'}: no such checkpoint file"),
        ("validate", last.parent, f"--ckpt_path {last.parent}: is a folder; expected a checkpoint file, such as "
                                  f"{last}"),
        ("fit", "last", f"{copied / 'last.ckpt'}: truncated, damaged or not a checkpoint (a .ckpt is a zip archive, "
                        "and this file has no zip directory; 3.8 MiB); copy it again or give another checkpoint (this "
                        "folder also holds best.ckpt)"),
    ]
    for command, ckpt_path, expected in cases:
        capsys.readouterr()
        run = copied.parent if ckpt_path == "last" else tmp_path / "refused"
        assert main([command, "-c", DEFAULT, *shrink_flags({"trainer.default_root_dir": run}),
                     f"--ckpt_path={ckpt_path}"]) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith(f"recon {command}: error: {expected}") and "Traceback" not in err
        assert not (tmp_path / "refused").exists() and sorted(p.name for p in copied.parent.iterdir()) == [
            "checkpoints"]  # no run folder, config, log or W&B run
    # `best` outside the fit that saved it: the run folder's best.ckpt, as `last` is its last.ckpt
    assert main(["test", "-c", DEFAULT, *shrink_flags(), "--ckpt_path=best"]) == 0
    # a test of no batch: Lightning ends it with status 0 and no word
    capsys.readouterr()
    assert main(["test", "-c", DEFAULT, *shrink_flags(), "--ckpt_path=last", "--trainer.limit_test_batches=0"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "recon test: error: --trainer.limit_test_batches 0: recon test would score no item; leave it out for every "
        "batch, or give a number of batches or a fraction above 0")
    assert main(["validate", "-c", DEFAULT, *shrink_flags(), "--ckpt_path=last", f"--export.dirpath={tmp_path / 'm'}",
                 "--trainer.limit_val_batches=1"]) == 0
    assert (f"recon validate: --export.dirpath {tmp_path / 'm'} is not used: validate writes no meshes"
            in capsys.readouterr().err)
    assert yaml.safe_load((tmp_path / "run" / "config-test.yaml").read_text())["ckpt_path"] == str(
        last.with_name("best.ckpt"))


def _printed_config(*args: str, capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("encoder", "class_path"),
    [("baseline", "BaselineEncoder"), ("resnet", "ResNetEncoder"), ("attention", "AttentionEncoder")],
)
def test_encoder_configs_compose_over_the_default(encoder, class_path, capsys):
    config = _printed_config("-c", DEFAULT, "-c", str(CONFIGS / "encoder" / f"{encoder}.yaml"), capsys=capsys)
    assert config["model"]["encoder"]["class_path"] == f"recon.models.{class_path}"
    assert config["data"]["path"] == "data/synthetic.h5"  # the rest of the default is kept


def test_the_default_config_is_read_first_from_the_repository_root(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    bare = _printed_config(capsys=capsys)  # `recon fit` alone: the main job's recipe
    assert bare == _printed_config("-c", DEFAULT, capsys=capsys)
    assert bare["trainer"]["max_steps"] == 1000 and bare["trainer"]["default_root_dir"] == "runs/default"
    resnet = _printed_config("-c", str(CONFIGS / "encoder" / "resnet.yaml"), capsys=capsys)  # composes over it
    assert resnet["model"]["encoder"]["class_path"] == "recon.models.ResNetEncoder"
    assert resnet["trainer"]["max_steps"] == 1000 and resnet["data"]["path"] == "data/synthetic.h5"


def test_elsewhere_recon_reads_the_recipe_it_ships_and_names_the_configs_it_ships(capsys, monkeypatch, tmp_path):
    """From a folder without configs/default.yaml, ``recon fit`` trains the same recipe (the classes' own defaults
    would be another run: Lightning's checkpoints, no W&B, no step limit), says so, and a ``-c configs/…`` that
    recon ships but this folder lacks is refused with where recon's copy is."""
    monkeypatch.chdir(ROOT)
    here = _printed_config(capsys=capsys)
    monkeypatch.chdir(tmp_path)
    elsewhere = _printed_config(capsys=capsys)
    assert elsewhere == here and elsewhere["trainer"]["max_steps"] == 1000
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"recon: no configs/default.yaml in this folder; reading the recipe recon ships, {DEFAULT}")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", "configs/encoder/resnet.yaml", "--print_config"])
    assert exit_info.value.code == 2
    assert (f"File does not exist: '{tmp_path / 'configs/encoder/resnet.yaml'}'; recon ships "
            f"configs/encoder/resnet.yaml as {CONFIGS / 'encoder' / 'resnet.yaml'}: give that path, or run from the "
            "repository's root") in capsys.readouterr().err
    (tmp_path / "configs").mkdir()  # a folder's own recipe is read instead of recon's, without a word
    (tmp_path / "configs" / "default.yaml").write_text("trainer:\n  max_steps: 7\n")
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    printed = capsys.readouterr()
    assert yaml.safe_load(printed.out)["trainer"]["max_steps"] == 7 and "recipe recon ships" not in printed.err


def test_every_shipped_config_is_installed_with_the_package():
    """A wheel (``pip install .``) carries configs/ as recon/configs: every folder of it must be a listed package."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"]["recon.configs"] == "configs"
    folders = {path.parent.relative_to(ROOT / "configs") for path in (ROOT / "configs").rglob("*.yaml")}
    for folder in folders:
        package = ".".join(("recon", "configs", *folder.parts))
        assert package in setup["packages"] and setup["package-data"][package] == ["*.yaml"], package


def test_a_leading_tilde_in_a_path_setting_is_the_home_folder(tiny_h5, tmp_path, monkeypatch):
    """The shell leaves the ~ of ``--data.path=~/x.h5`` (and a config file's) as it is: recon expands it, rather than
    refuse a file that exists or make a folder named ``~`` in the working folder."""
    from recon.cli import ReconCLI

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(tiny_h5, home / "views.h5")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    cli = ReconCLI(args=["-c", str(ROOT / DEFAULT),
                         "--data.path=~/views.h5", "--trainer.default_root_dir=~/runs/a", "--trainer.logger=false",
                         "--export.dirpath=~/meshes"], run=False)
    assert cli.datamodule.path == str(home / "views.h5") and cli.trainer.default_root_dir == str(home / "runs" / "a")
    assert cli.config.export.dirpath == str(home / "meshes") and not (tmp_path / "~").exists()


def test_the_colour_head_reads_the_encoders_dim_through_a_link(tiny_h5):
    from recon.cli import ReconCLI

    cli = ReconCLI(args=["-c", DEFAULT, "-c", str(CONFIGS / "experiment" / "color.yaml"),
                         "--model.encoder.init_args.dim=96", f"--data.path={tiny_h5}", "--trainer.logger=false"],
                   run=False)
    assert cli.model.generator.encoder.dim == 96 and cli.model.generator.colors.latent_dim == 96


def test_paper_recipe_and_trainer_presets_validate(capsys):
    recipe = _printed_config("-c", DEFAULT, "-c", str(CONFIGS / "experiment" / "softras.yaml"), capsys=capsys)
    assert recipe["data"]["batch_size"] == 64 and recipe["trainer"]["max_steps"] == 250_000
    assert recipe["model"]["schedule_step"] == 150_000 and recipe["model"]["schedule_gamma"] == 0.3
    for preset, accelerator in (("cpu", "cpu"), ("gpu", "gpu"), ("ddp", "gpu")):
        files = ["-c", DEFAULT, "-c", str(CONFIGS / "trainer" / f"{preset}.yaml")]
        assert _printed_config(*files, capsys=capsys)["trainer"]["accelerator"] == accelerator
    color = _printed_config("-c", DEFAULT, "-c", str(CONFIGS / "experiment" / "color.yaml"), capsys=capsys)
    assert color["model"]["colors"]["class_path"] == "recon.models.ColorDecoder"
    assert color["model"]["encoder"]["class_path"] == "recon.models.BaselineEncoder"  # kept from the default
    assert _printed_config("-c", DEFAULT, capsys=capsys)["model"]["colors"] is None  # silhouette-only by default
    data = _printed_config("-c", DEFAULT, "-c", str(CONFIGS / "data" / "shapenet.yaml"), capsys=capsys)
    assert data["data"]["path"] == "data/shapenet.h5" and data["data"]["synthesize"] is False


@pytest.mark.slow
def test_console_entry_point_runs(shrink_flags, tmp_path):
    # The installed `recon` script, as the Makefile and the README call it: exit status 0 after a real fit
    # (a console script passes main()'s return value to sys.exit, so anything but 0/None there fails here).
    script = Path(sys.executable).parent / "recon"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "fit" in result.stdout and "predict" in result.stdout
    fit = subprocess.run([str(script), "fit", "-c", DEFAULT, *shrink_flags({"trainer.max_steps": 1})],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_MODE": "offline"})
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert "wandb: WARNING" not in fit.stdout + fit.stderr  # a fresh run prints none of W&B's setup warnings
    assert "LeafSpec" not in fit.stderr  # nor the deprecation Lightning's own code triggers in torch
    assert "litlogger" not in fit.stdout + fit.stderr  # nor Lightning's advertisement for another logger
    assert "GPU available" in fit.stdout + fit.stderr  # while its other start-up lines stay


# ------------------------------------------------------------------------------ predict inputs (PNG)


def test_rgba_png_becomes_an_inverted_premultiplied_view_with_its_alpha_as_mask():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = (255, 0, 0)  # pure red where the object is
    rgba[16:48, 16:48, 3] = 255
    rgba[:8, :8, :3] = 0  # black but transparent: background, must vanish
    view = view_from_image(Image.fromarray(rgba, "RGBA"))
    assert view.shape == (4, 64, 64) and view.dtype == torch.float32
    inside, outside = view[:, 32, 32], view[:, 2, 2]
    torch.testing.assert_close(inside, torch.tensor([0.0, 1.0, 1.0, 1.0]))  # 1 − red = (0, 1, 1); mask 1
    torch.testing.assert_close(outside, torch.zeros(4))  # NMR background: all zeros


def test_rgb_png_gets_a_mask_from_non_white_pixels_and_any_size_is_resized():
    rgb = np.full((60, 120, 3), 255, dtype=np.uint8)  # wide, white background
    rgb[20:40, 40:80] = (0, 0, 255)
    view = view_from_image(Image.fromarray(rgb, "RGB"))
    assert view.shape == (4, 64, 64)
    mask = view[3]
    # padded to a 120x120 square and halved: the 40x20 block becomes ~20x10 pixels in the middle
    assert mask[32, 32] == 1 and mask[5, 32] == 0 and mask[32, 5] == 0
    assert 150 < float(mask.sum()) < 250
    torch.testing.assert_close(view[:3, 32, 32], torch.tensor([1.0, 1.0, 0.0]))  # 1 − blue


def test_folder_or_glob_lists_pngs_and_missing_ones_are_a_clear_error(tmp_path):
    (tmp_path / "b").mkdir()
    square = Image.new("RGB", (10, 10), "white")
    square.paste((0, 0, 0), (3, 3, 7, 7))  # a black square on white
    for name in ("one.png", "two.png", "b/one.png", "three.JPG", "four.webp", "five.tif"):
        square.save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in find_images(tmp_path)] == [  # a photo folder's JPEGs, WebPs and TIFFs too
        "five.tif", "four.webp", "one.png", "three.JPG", "two.png"]
    dataset = ImageFolderDataset(str(tmp_path / "**" / "*.png"))
    assert len(dataset) == 3 and sorted(dataset.names) == ["one", "one-1", "two"]
    item = dataset[0]
    assert item["images"].shape == (4, 64, 64) and isinstance(item["name"], str)
    with pytest.raises(FileNotFoundError, match="no images match"):
        find_images(tmp_path / "missing" / "*.png")
    square.save(tmp_path / "[a].png")  # a file named as it is, not read as a glob
    assert find_images(tmp_path / "[a].png") == [tmp_path / "[a].png"]


def _disc(size=64, colour=(40, 90, 160), background=(255, 255, 255), alpha=True):
    """An (H, W, 4 or 3) uint8 image: a disc of radius size/3 at the centre, a bar below it on the left (so that a
    rotation shows), on ``background`` (transparent where ``alpha``)."""
    y, x = np.mgrid[:size, :size]
    inside = ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2) | (
        (y > 0.88 * size) & (y < 0.95 * size) & (x > 0.1 * size) & (x < 0.4 * size))
    rgb = np.where(inside[..., None], np.array(colour, np.uint8), np.array(background, np.uint8))
    if not alpha:
        return rgb
    return np.concatenate([rgb, (inside * 255).astype(np.uint8)[..., None]], -1)


def _mask_error(image: Image.Image) -> float:
    """Pixels whose mask differs from the transparent-background disc's (at the image's size) by more than 0.5, over
    the disc's area."""
    reference = view_from_image(Image.fromarray(_disc(image.width), "RGBA"))[3]
    return float(((view_from_image(image)[3] - reference).abs() > 0.5).sum() / reference.sum())


def _saved(image: Image.Image, path: Path, **options) -> Image.Image:
    image.save(path, **options)
    loaded = Image.open(path)
    loaded.load()
    return loaded


@pytest.mark.parametrize("case", ["opaque-rgba-off-white", "jpeg-on-grey", "colour-key-rgb", "colour-key-grey",
                                  "colour-key-16-bit"])
def test_an_image_without_usable_alpha_is_cut_out_against_its_own_background(tmp_path, case):
    # Each of these once became a mask covering the whole frame (the object's mesh from a silhouette of a square):
    # an RGBA image whose alpha is opaque everywhere, a photo whose background is not pure white, a PNG whose
    # transparency is a colour key (tRNS) rather than a channel.
    if case == "opaque-rgba-off-white":
        image = Image.fromarray(_disc(background=(236, 236, 232), alpha=False), "RGB").convert("RGBA")
    elif case == "jpeg-on-grey":  # a photo's size: its ringing around edges is a fraction of the model's pixel
        image = _saved(Image.fromarray(_disc(256, background=(230, 230, 230), alpha=False), "RGB"),
                       tmp_path / "a.jpg", quality=85)
    elif case == "colour-key-rgb":
        image = _saved(Image.fromarray(_disc(background=(0, 0, 0), alpha=False), "RGB"), tmp_path / "a.png",
                       transparency=(0, 0, 0))
    elif case == "colour-key-grey":
        image = _saved(Image.fromarray(_disc(background=(0, 0, 0), alpha=False), "RGB").convert("L"),
                       tmp_path / "a.png", transparency=0)
    else:
        grey = (_disc(background=(0, 0, 0), alpha=False)[..., 2].astype(np.uint16) * 257)
        image = _saved(Image.fromarray(grey), tmp_path / "a.png", transparency=0)
        assert image.mode.startswith("I") and "transparency" in image.info
    assert _mask_error(image) < 0.03


def test_a_photos_exif_orientation_is_applied(tmp_path):
    upright = Image.fromarray(_disc(256, alpha=False), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": how a phone held upright stores its pixels
    stored = _saved(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "phone.jpg", quality=95, exif=exif)
    assert _mask_error(stored) < 0.03
    assert _mask_error(stored.transpose(Image.Transpose.ROTATE_90)) > 0.05  # the bar shows a rotation


def test_an_image_with_no_background_to_cut_the_object_from_is_skipped(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(tmp_path / "clutter.png")  # a photo without a plain background
    filled = _disc(alpha=True)
    filled[..., 3] = 255
    filled[0, 0, 3] = 0  # alpha, but the object fills the frame
    Image.fromarray(filled, "RGBA").save(tmp_path / "filled.png")
    Image.new("RGBA", (20, 20), (200, 30, 30, 255)).save(tmp_path / "plain.png")  # opaque, one colour: nothing
    Image.fromarray(_disc(), "RGBA").save(tmp_path / "disc.png")
    assert unreadable(tmp_path / "clutter.png").startswith("no object to cut out: it has no alpha and no plain "
                                                           "background (only ")
    assert unreadable(tmp_path / "filled.png").startswith("no object to cut out: its mask covers 100% of the image")
    assert unreadable(tmp_path / "plain.png").startswith("no object in it: its mask is empty")
    assert unreadable(tmp_path / "disc.png") is None
    assert ImageFolderDataset(tmp_path).names == ["disc"]


def test_the_previews_input_panel_shows_the_background_the_model_took_as_a_checkerboard():
    from recon.mesh import icosphere
    from recon.prediction import preview_renderer, render_preview

    vertices, faces = icosphere(1)
    view = view_from_image(Image.fromarray(_disc(), "RGBA"))
    panel = np.asarray(render_preview(vertices * 0.4, faces, view, preview_renderer()))[:, :128]
    np.testing.assert_allclose(panel[64, 64], (40, 90, 160), atol=1)  # the object, in its own colour
    corners = {tuple(panel[y, x]) for y, x in ((2, 2), (2, 10), (10, 2), (10, 10))}
    assert corners == {(237, 237, 237), (204, 204, 204)}  # background: both shades of the checkerboard


def test_sixteen_bit_grey_reads_as_grey_and_images_without_an_object_are_skipped(tmp_path):
    # A 16-bit grey PNG: a dark square on white. PIL's convert("RGBA") clips such values at 255 (all white: an
    # empty mask), and an empty mask gives a mesh of nothing: such an image is skipped, with its reason.
    grey = np.full((40, 40), 65535, dtype=np.uint16)
    grey[10:30, 10:30] = 12000
    Image.fromarray(grey).save(tmp_path / "deep.png")
    Image.new("RGBA", (20, 20), (200, 30, 30, 0)).save(tmp_path / "transparent.png")
    Image.new("RGB", (1, 1), "white").save(tmp_path / "white.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")
        view = view_from_image(image)
    assert view[3, 32, 32] == 1 and view[3, 2, 2] == 0  # the square is the object, the white its background
    torch.testing.assert_close(view[:3, 32, 32], torch.full((3,), 1 - 12000 / 65535))
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.names == ["deep"]
    assert [(file.name, reason.split(":")[0]) for file, reason in dataset.skipped] == [
        ("transparent.png", "no object in it"), ("white.png", "no object in it")]


@pytest.mark.parametrize("alpha", [True, False], ids=["rgba", "rgb"])
def test_a_large_photo_is_shrunk_first_and_gives_the_same_view(alpha):
    # 1280×960, an object of colour (20, 30, 40) filling 50% × 50% of it: on white, or transparent over pure red
    # (which must not bleed into the object's edge). Such photos are shrunk by a box filter first (memory).
    colour = np.array([20, 30, 40], dtype=np.uint8)
    rgba = np.zeros((960, 1280, 4), dtype=np.uint8)
    rgba[...] = (255, 0, 0, 0) if alpha else (255, 255, 255, 255)
    rgba[240:720, 320:960] = [*colour, 255]
    image = Image.fromarray(rgba, "RGBA") if alpha else Image.fromarray(rgba[..., :3], "RGB")
    view = view_from_image(image)
    # padded to 1280², the object covers 640 × 480 of it
    assert float(view[3].mean()) == pytest.approx(640 * 480 / 1280**2, abs=0.005)
    seen = view[3] > 0.1
    colours = view[:3, seen] / view[3, seen]  # un-premultiplied inverted colour wherever the object shows
    torch.testing.assert_close(colours, torch.tensor(1 - colour / 255, dtype=torch.float32)[:, None].expand_as(colours),
                               atol=0.02, rtol=0)


def test_output_names_never_share_a_name():
    # chair.png beside chair.jpg must not take the name of chair-1.png, whose outputs it would replace
    files = [Path(name) for name in ("a/chair-1.png", "a/chair.jpg", "a/chair.png", "b/chair.png", "b/chair-2.png")]
    names = output_names(files)
    assert names == ["chair-1", "chair", "chair-3", "chair-4", "chair-2"]
    assert len(set(names)) == len(files)


def test_wandb_run_names_tell_encoders_and_colour_models_apart(monkeypatch):
    from jsonargparse import Namespace

    from recon.cli import _name_wandb_run

    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    monkeypatch.delenv("WANDB_TAGS", raising=False)
    names = []
    for model in (
        Namespace(encoder=Namespace(class_path="recon.models.ResNetEncoder")),
        Namespace(encoder=Namespace(class_path="recon.models.BaselineEncoder")),
        Namespace(encoder=Namespace(class_path="recon.models.BaselineEncoder"),
                  colors=Namespace(class_path="recon.models.ColorDecoder")),
    ):
        config = Namespace(model=model, data=Namespace(path="data/synthetic.h5"), seed_everything=3)
        init_args = Namespace(name=None, group=None, tags=None)
        _name_wandb_run(init_args, config)
        names.append(init_args.name)
        assert init_args.group == "synthetic"
        assert init_args.tags[1:] == ["synthetic"]
    assert names == ["resnet-synthetic-s3", "baseline-synthetic-s3", "baseline+color-synthetic-s3"]


def test_the_wandb_folder_exists_before_its_run_starts(shrink_flags, tmp_path):
    # W&B warns "git root <folder> does not exist" at the start of a run whose folder is not there yet (inside a
    # git checkout with a remote, as a user's clone): every fresh run folder would print it.
    from lightning.pytorch.loggers import WandbLogger

    from recon.cli import ReconCLI

    cli = ReconCLI(args=["-c", DEFAULT, *shrink_flags()], run=False)
    (logger,) = [lg for lg in cli.trainer.loggers if isinstance(lg, WandbLogger)]
    assert Path(logger.save_dir) == tmp_path / "run" and (tmp_path / "run").is_dir()
    assert not (tmp_path / "run" / "wandb").exists()  # the folder only: no W&B run was started


@pytest.mark.parametrize(
    ("given", "chosen"),
    [("chair", ["chair"]), ("chair, airplane", ["airplane", "chair"]), ("[chair]", ["chair"]),
     # YAML 1.1 reads an unquoted 03001627 (chair's synset: a leading 0, digits 0-7) as the octal number 787351
     ("03001627", ["chair"]), ("[03001627]", ["chair"]), ("[2691156, 03001627]", ["airplane", "chair"])],
)
def test_categories_are_a_list_a_comma_separated_string_or_unquoted_synsets(tiny_h5, given, chosen):
    from recon.cli import ReconCLI

    cli = ReconCLI(args=["-c", DEFAULT, f"--data.path={tiny_h5}", "--trainer.logger=false",
                         f"--data.categories={given}"], run=False)
    assert [cli.datamodule.category_names[i] for i in cli.datamodule.selected_category_indices] == chosen


def test_a_command_line_mistake_is_its_message_not_the_usage_of_every_option(tmp_path, capsys):
    for args, expected in (([], 'Parser key "model.lr":'), (["--trainer.max_stepz", "3"], "unrecognized arguments")):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "-c", DEFAULT, "--model.lr", "abc" if not args else "0.001", *args,
                  f"--trainer.default_root_dir={tmp_path / 'run'}"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"recon fit: error: {expected}"), err
        assert "usage:" not in err and len(err.splitlines()) <= 3 and "`recon fit --help` lists every option" in err
    assert main(["fit", "-c", DEFAULT, "--data.categories=[]", f"--trainer.default_root_dir={tmp_path / 'run'}"]) == 1
    assert capsys.readouterr().err.strip() == ("recon fit: error: categories names no category; give names or "
                                               "synsets (chair, 03001627), or leave it out (null) for all")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_fit_that_ends_before_its_first_validation_says_so(shrink_flags, tmp_path, capsys):
    assert main(["fit", "-c", DEFAULT, *shrink_flags({"trainer.max_steps": 1, "trainer.logger": "false"})]) == 0
    assert ("recon fit: --trainer.max_steps 1 ends before the first validation (every 2 steps): no val/miou and no "
            "best.ckpt") in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt"]
    main(["fit", "-c", DEFAULT, *shrink_flags({"trainer.logger": "false"})])  # validates at step 2: no notice
    assert "ends before the first validation" not in capsys.readouterr().err


def test_the_progress_bar_counts_steps_and_a_named_bar_is_kept(shrink_flags, capsys):
    # A run bounded by max_steps leaves max_epochs at -1, which Lightning's own bar shows as "Epoch 0/-2".
    from lightning.pytorch.callbacks import TQDMProgressBar

    from recon.callbacks import StepProgressBar
    from recon.cli import ReconCLI

    assert main(["fit", "-c", DEFAULT, *shrink_flags({"trainer.enable_progress_bar": "true"})]) == 0
    printed = capsys.readouterr().out
    assert "Epoch 0 · step 2/2" in printed and "/-2" not in printed
    cli = ReconCLI(args=["-c", DEFAULT, *shrink_flags({"trainer.enable_progress_bar": "true"})], run=False)
    assert type(cli.trainer.progress_bar_callback) is StepProgressBar
    cli = ReconCLI(args=["-c", DEFAULT, *shrink_flags({"trainer.enable_progress_bar": "true",
                                                         "trainer.callbacks+": "TQDMProgressBar"})], run=False)
    assert type(cli.trainer.progress_bar_callback) is TQDMProgressBar
