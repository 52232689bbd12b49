"""``make reproduce-table PROFILE=smoke``: three encoders and the colour model, trained and tested through the real
CLI, one table."""

from __future__ import annotations

import csv
import math
import os
import subprocess
from pathlib import Path

import pytest

from recon.reproduce import load_profile

ROOT = Path(__file__).resolve().parents[1]


def test_profiles_name_existing_configs():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for name in ("quick", "paper", "smoke"):
            profile = load_profile(name)
            assert set(profile.encoders) == {"baseline", "resnet", "attention", "baseline+color"}
            assert profile.seeds
        assert len(load_profile("quick").seeds) >= 2  # a spread over seeds, not one draw
        with pytest.raises(FileNotFoundError, match="known profiles"):
            load_profile("nonexistent")
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_make_reproduce_table_smoke(tiny_h5, tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    command = ["make", "--no-print-directory", "reproduce-table", "PROFILE=smoke", f"DATA={tiny_h5}",
               f"TABLE_OUT={out}", f"TABLE_RUNS={runs}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with open(out / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["encoder"] for row in rows] == ["baseline", "resnet", "attention", "baseline+color"]
    for row in rows:
        assert math.isfinite(float(row["mean_loss"])) and float(row["mean_loss"]) > 0
        assert 0 <= float(row["mean_iou"]) <= 1
        assert row["airplane"] and row["chair"]
        assert 0 < float(row["mean_psnr"]) < 100
    assert [row["psnr_colors"] for row in rows] == ["gray", "gray", "gray", "predicted"]
    markdown = (out / "table.md").read_text()
    assert "Published figures (not our runs)" in markdown and "SoftRas, silhouette" in markdown
    assert "| PSNR (dB) |" in markdown and "(gray)" in markdown
    assert "encoder comparison" in done.stdout

    # A second call reuses the finished runs instead of training again.
    fit_marks = {p: p.stat().st_mtime for p in runs.rglob("fit.done")}
    assert len(fit_marks) == 4
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert {p: p.stat().st_mtime for p in runs.rglob("fit.done")} == fit_marks
