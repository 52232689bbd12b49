"""Real 2-process DDP on CPU (gloo) through the ``recon`` command: it trains, only rank 0 writes media, and the
test IoU equals the single-process IoU of the same checkpoint (no padded, repeated test items)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _recon(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "recon", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_ddp_fit_and_test_match_single_process(shrink_flags, tmp_path):
    run = tmp_path / "run"
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
    full_test = {"trainer.limit_test_batches": None, "data.eval_batch_size": 5}
    _recon(["fit", "-c", str(CONFIGS / "default.yaml"), *shrink_flags(), *ddp], tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()

    # Only rank 0 has a W&B run and writes media: one offline run, one silhouette grid per validation.
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    grids = list(run.rglob("media/silhouettes/*.png"))
    assert len(grids) == 1, grids

    results = {}
    for name, extra in (("ddp", ddp), ("single", ["--trainer.accelerator=cpu", "--trainer.devices=1"])):
        out = tmp_path / name
        _recon(["test", "-c", str(CONFIGS / "default.yaml"), *shrink_flags(full_test), *extra,
                f"--trainer.default_root_dir={out}", f"--ckpt_path={last}"], tmp_path)  # fmt: skip
        results[name] = json.loads((out / "results.json").read_text())  # the run folder: W&B's save_dir

    ddp_result, single = results["ddp"], results["single"]
    assert single["num_items"] == 2 * 24  # every view of the 1 test object of each of the 2 categories
    assert ddp_result["num_items"] == single["num_items"]  # no item repeated to pad the shards
    assert ddp_result["split_items"] == single["split_items"] == 2 * 24  # the whole split: not a partial test
    assert "Partial test" not in (tmp_path / "ddp" / "results.md").read_text()
    assert ddp_result["items"] == single["items"]
    assert ddp_result["miou"] == pytest.approx(single["miou"], abs=1e-6)
    for category, value in single["iou"].items():
        assert ddp_result["iou"][category] == pytest.approx(value, abs=1e-6)
    assert ddp_result["loss"] == pytest.approx(single["loss"], rel=1e-5)

    # Predict: each process writes its share of the images; the manifest (rank 0) lists all of them.
    photos, predicted = tmp_path / "photos", tmp_path / "predicted"
    photos.mkdir()
    for index in range(3):
        image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        image.paste((40 * index, 90, 160, 255), (16, 16 + index, 48, 48))
        image.save(photos / f"photo{index}.png")
    _recon(["predict", "-c", str(CONFIGS / "default.yaml"), *shrink_flags({"data.eval_batch_size": 1}), *ddp,
            f"--ckpt_path={last}", f"--data.predict_images={photos}", f"--export.dirpath={predicted}"], tmp_path)
    manifest = json.loads((predicted / "predictions.json").read_text())
    assert manifest["predicted"] == manifest["images"] == 3
    assert sorted(manifest["outputs"]) == ["photo0", "photo1", "photo2"]
    assert all((predicted / file).stat().st_size > 0 for output in manifest["outputs"].values()
               for file in output["files"])


def _ddp_fit(shrink_flags, run: Path) -> subprocess.Popen:
    """A 2-process fit that validates and saves at every second step, in a session of its own (a terminal's Ctrl-C
    reaches every process of its group; a scheduler's SIGTERM may too)."""
    flags = shrink_flags({"trainer.max_steps": 400, "trainer.limit_val_batches": 1, "trainer.logger": "false",
                          "trainer.default_root_dir": run})
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "recon", "fit", "-c", str(CONFIGS / "default.yaml"), "-c",
                             str(CONFIGS / "trainer" / "ddp_cpu.yaml"), *flags], env=env, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for(condition, fit: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert fit.poll() is None and time.monotonic() < deadline, f"the fit ended or took too long before {what}"
        time.sleep(0.02)


def _ended(fit: subprocess.Popen) -> str:
    try:
        return fit.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        os.killpg(fit.pid, signal.SIGKILL)
        fit.wait()
        pytest.fail("the fit hung after the signal")


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"])
def test_a_signal_while_a_ddp_fit_writes_a_checkpoint_stops_both_processes_with_the_signals_status(sig, status,
                                                                                                   shrink_flags,
                                                                                                   tmp_path):
    """Rank 0 writes checkpoints while rank 1 waits in the barrier after the save. SIGTERM then hung both for good
    (Lightning broadcast inside its signal handler); a Ctrl-C, held by rank 0 until its file was whole, ended in a
    gloo traceback and exit status 1, rank 1 having stopped at once."""
    import torch

    checkpoints = tmp_path / "run" / "checkpoints"
    fit = _ddp_fit(shrink_flags, tmp_path / "run")
    _wait_for(lambda: checkpoints.is_dir() and any(checkpoints.glob(".*.tmp-*")), fit, "a checkpoint write")
    os.killpg(fit.pid, sig)
    errors = _ended(fit)
    assert fit.returncode == status, errors[-3000:]
    assert errors.strip().splitlines()[-1] == f"recon fit: interrupted; exit status {status}"
    assert "Traceback" not in errors
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] >= 2


@pytest.mark.slow
def test_a_ddp_process_killed_mid_fit_ends_the_run_in_one_line(shrink_flags, tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    fit = _ddp_fit(shrink_flags, tmp_path / "run")
    _wait_for(lambda: (checkpoints / "last.ckpt").is_file(), fit, "the first last.ckpt")
    rank1 = subprocess.run(["pgrep", "-P", str(fit.pid)], capture_output=True, text=True).stdout.split()
    assert len(rank1) == 1, rank1  # the launcher (rank 0) started one process: rank 1
    os.kill(int(rank1[0]), signal.SIGKILL)
    errors = _ended(fit)
    assert fit.returncode == 1 and "Traceback" not in errors, errors[-3000:]
    last = errors.strip().splitlines()[-1]
    assert last.startswith("recon fit: error: another process of this multi-process run ended (killed, or see its "
                           "output above): ") and "by peer" in last
    assert last.endswith("`--ckpt_path last` continues the fit from its last.ckpt")
