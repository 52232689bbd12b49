"""Real 2-process DDP on CPU (gloo) through the ``recon`` command: it trains, only rank 0 writes media, and the
test IoU equals the single-process IoU of the same checkpoint (no padded, repeated test items)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
