"""``make reproduce-table PROFILE=smoke``: three encoders and the colour model, trained and tested through the real
CLI, one table."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from recon import reproduce
from recon.published import PUBLISHED
from recon.reproduce import CATEGORIES, ENTRY, RunInterrupted, TableProfile, load_profile, render_markdown, summarize
from recon.reproduce import main as reproduce_main

ROOT = Path(__file__).resolve().parents[1]


def test_profiles_name_existing_configs(capsys):
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
        with pytest.raises(SystemExit) as exit_info:  # `make reproduce-table PROFILE=quik`: a usage error
            reproduce_main(["--profile", "quik", "--runs", "unused"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "error: configs/table/quik.yaml: no such table profile; known profiles: paper, quick, smoke" in err
        assert "Traceback" not in err
    finally:
        os.chdir(cwd)


def test_elsewhere_the_profiles_and_their_configs_are_the_ones_recon_ships(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a folder without configs/: a user's project, or a script's working folder
    profile = load_profile("smoke")
    named = {"configs/default.yaml": profile.configs[0], "configs/trainer/cpu.yaml": profile.configs[1],
             "configs/experiment/color.yaml": profile.encoders["baseline+color"]}
    for relative, config in named.items():
        assert Path(config).is_absolute() and config.endswith(relative), config
        assert Path(config).read_text() == (ROOT / relative).read_text()
    with pytest.raises(SystemExit):
        reproduce_main(["--profile", "quik", "--runs", "unused"])
    err = capsys.readouterr().err
    assert "configs/table/quik.yaml: no such table profile; known profiles: paper, quick, smoke" in err
    monkeypatch.chdir(ROOT)  # the repository's root: its own files, by the relative paths runs record
    assert load_profile("smoke").configs == ["configs/default.yaml", "configs/trainer/cpu.yaml"]


@pytest.mark.parametrize(("text", "expected"), [
    ("configs: [configs/default.yaml]\nencoders: [baseline]\nseeds: [0]\n", "encoders is ['baseline']; expected a "
     "mapping of row names to encoder configs"),
    ("configs: [configs/default.yaml]\nencoders: {b: configs/encoder/baseline.yaml}\nseeds: 0\n",
     "seeds is 0; expected a list of integers"),
    ("configs: configs/default.yaml\nencoders: {b: configs/encoder/baseline.yaml}\nseeds: [0]\n",
     "configs is 'configs/default.yaml'; expected a list of config files"),
    ("configs: [configs/default.yaml\n", "not a YAML table profile"),
], ids=["encoders-list", "seeds-int", "configs-string", "yaml-error"])
def test_a_malformed_profile_is_one_line_naming_it(tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(ROOT)
    profile = tmp_path / "mine.yaml"
    profile.write_text(text)
    with pytest.raises(ValueError, match=f"^{profile}: ") as error:
        load_profile(str(profile))
    assert expected in str(error.value)


def test_a_finished_run_of_other_settings_is_refused_not_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    run = runs / "smoke" / "baseline-seed0"
    run.mkdir(parents=True)
    args = ["--profile", "smoke", "--runs", str(runs), "--out", str(tmp_path / "out"), "--encoders", "baseline",
            "--data", "data/x.h5"]
    common = ["-c", "configs/default.yaml", "-c", "configs/trainer/cpu.yaml", "-c", "configs/encoder/baseline.yaml",
              "--seed_everything", "0", "--trainer.default_root_dir", str(run), *load_profile("smoke").args,
              "--data.path", "data/x.h5", "--data.synthesize", "false"]
    result = {"encoder_name": "baseline", "seed": 0, "loss": 0.3, "miou": 0.4, "iou": {"chair": 0.4},
              "train_seconds": 6.0}
    (run / ENTRY).write_text(json.dumps({**result, "command": common}))
    assert reproduce_main(args) == 0  # the same table: reused
    assert reproduce_main([*args, "--", "--trainer.max_steps=8"]) == 1  # a longer budget: not beside the 2-step row
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {run}: finished with other settings than this table's (then: -; now: --trainer.max_steps=8); " \
           "--redo (REDO=1) trains it again" in err


def test_redo_clears_every_run_first_and_an_interrupted_redo_continues_without_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    folders = [runs / "smoke" / f"{encoder}-seed0" for encoder in ("baseline", "resnet")]
    for folder in folders:
        (folder / "checkpoints").mkdir(parents=True)
        for name in (ENTRY, "fit.done", "results.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
            (folder / name).write_text("{}")
    started = []

    def interrupted(profile, encoder, seed, root, data, redo, extra):
        started.append(encoder)
        raise RunInterrupted(root / f"{encoder}-seed{seed}", 130)

    monkeypatch.setattr(reproduce, "run_encoder", interrupted)
    monkeypatch.setattr(reproduce, "generate_data", lambda profile, encoder, root, extra: started.append("data"))
    args = ["--profile", "smoke", "--runs", str(runs), "--out", str(tmp_path / "out"), "--encoders", "baseline",
            "resnet", "--redo"]
    assert reproduce_main(args) == 130 and started == ["data", "baseline"]  # the data before any run is timed
    assert [sorted(p.name for p in folder.rglob("*") if p.is_file()) for folder in folders] == [[], []]
    assert "the same command without --redo (REDO=1) continues the table" in " ".join(capsys.readouterr().err.split())


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    taken = tmp_path / "results.txt"
    taken.write_text("mine")
    monkeypatch.setattr(reproduce, "run_encoder", lambda *args: pytest.fail("a run started"))
    for flag, path in (("--out", taken), ("--runs", taken / "runs")):
        with pytest.raises(SystemExit) as exit_info:
            reproduce_main(["--profile", "smoke", flag, str(path)])
        assert exit_info.value.code == 2
        assert f"error: {flag} {path}: " in capsys.readouterr().err


def test_the_terminal_table_shows_whole_names_and_numbers():
    from rich.console import Console

    from recon.reproduce import encoder_table

    runs = [{"encoder_name": name, "seed": seed, "loss": 0.3, "miou": 0.4, "mpsnr": 15.2, "psnr_colors": "gray",
             "iou": dict.fromkeys(CATEGORIES, 0.4), "train_seconds": 60.0, "data": "d/synthetic.h5",
             "data_source": "synthetic"} for name in ("baseline", "baseline+color") for seed in (0, 1)]
    console = Console(width=120, record=True)
    console.print(encoder_table(TableProfile("quick", [], {}, [0, 1], []), summarize(runs)))
    text = console.export_text()
    assert "baseline+color " in text and "0.4000 ± 0.0000" in text and "15.20 ± 0.00 (gray)" in text
    assert "…" not in text and "data: synthetic.h5 (synthetic)" in text
    # an 80-column terminal: every column whole, each mean above its spread
    console = Console(width=80, record=True)
    console.print(encoder_table(TableProfile("quick", [], {}, [0, 1], []), summarize(runs), console.width))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80 and "train min" in "\n".join(lines) and "…" not in "\n".join(lines)
    (row,) = [index for index, line in enumerate(lines) if line.startswith("│ baseline+color ")]
    assert [cell.strip() for cell in lines[row].split("│")[2:4]] == ["0.3000", "0.4000"]
    assert [cell.strip() for cell in lines[row + 1].split("│")[2:4]] == ["± 0.0000", "± 0.0000"]


def test_published_figures_are_sourced_means_only():
    run = {"encoder_name": "baseline", "seed": 0, "loss": 0.3, "miou": 0.4, "iou": dict.fromkeys(CATEGORIES, 0.4),
           "train_seconds": 60.0}
    markdown = render_markdown(TableProfile("unit", [], {}, [0], []), summarize([run]))
    published = markdown.split("## Published figures (not our runs)")[1].split("\n\n")[1].splitlines()
    assert published[0] == "| method | mean IoU | source |"
    rows = published[2:]
    assert rows == [f"| {f.method} | {f.mean_iou:.4f} | {f.source} |" for f in PUBLISHED]
    for figure in PUBLISHED:
        assert 0 < figure.mean_iou < 1 and figure.source.strip()
    # one mean per method: no per-category published figure appears anywhere
    assert all(row.count("|") == 4 for row in rows)


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


@pytest.mark.slow
def test_ctrl_c_stops_the_table_after_its_run_saves_and_the_same_command_resumes_that_run(tiny_h5, tmp_path):
    import signal
    import sys
    import time

    import torch

    out, runs = tmp_path / "results", tmp_path / "runs"
    base = [sys.executable, "-m", "recon.reproduce", "--profile", "smoke", "--data", str(tiny_h5), "--out", str(out),
            "--runs", str(runs), "--encoders", "baseline", "--"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    run = runs / "smoke" / "baseline-seed0"
    last = run / "checkpoints" / "last.ckpt"
    # Ctrl-C in a terminal: SIGINT to the table's process group, while its fit trains
    table = subprocess.Popen([*base, "--trainer.max_steps=100000"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not last.is_file() and time.monotonic() < deadline and table.poll() is None:
            time.sleep(0.5)
        time.sleep(1)
        os.killpg(table.pid, signal.SIGINT)
        printed, errors = table.communicate(timeout=120)
    finally:
        table.kill()
    assert table.returncode == 130, errors[-3000:]
    assert "Traceback" not in printed + errors
    assert f"interrupted: {run}: Ctrl-C; the same command continues the table" in errors
    assert not (run / "fit.done").exists() and not (out / "table.csv").exists()
    first_attempt = json.loads((run / "fit.partial").read_text())["train_seconds"]
    assert first_attempt > 0
    step = torch.load(last, weights_only=True)["global_step"]
    assert step >= 2

    # The same command (here with a budget two steps past the saved one) resumes the run and writes the table.
    done = subprocess.run([*base, f"--trainer.max_steps={step + 2}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    fit = json.loads((run / "fit.done").read_text())
    assert fit["resumed"] is True and fit["train_seconds"] > first_attempt  # both attempts' time: the table's
    assert not (run / "fit.partial").exists()
    assert torch.load(last, weights_only=True)["global_step"] == step + 2
    assert (out / "table.csv").is_file()


def test_a_table_killed_mid_fit_adds_that_attempt_to_the_training_time(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    profile = load_profile("smoke")
    run = tmp_path / "smoke" / "baseline-seed0"
    last = run / "checkpoints" / "last.ckpt"

    class Killed(BaseException):  # kill -9 of the table: nothing after the fit's start runs
        pass

    def killed(command, env, run_dir):
        last.parent.mkdir(parents=True)
        last.write_text("saved")  # the fit saves last.ckpt as it stops, 100 s into its training
        started = json.loads((run / "fit.partial").read_text())["started"]
        os.utime(last, (started + 100, started + 100))
        raise Killed

    monkeypatch.setattr(reproduce, "_run", killed)
    with pytest.raises(Killed):
        reproduce.run_encoder(profile, "baseline", 0, tmp_path / "smoke", None, False, [])

    def finishes(command, env, run_dir):
        if command[3] == "test":
            (run / "results.json").write_text(json.dumps({"loss": 0.5, "miou": 0.2, "iou": {}}))

    monkeypatch.setattr(reproduce, "_run", finishes)
    results = reproduce.run_encoder(profile, "baseline", 0, tmp_path / "smoke", None, False, [])
    assert results["resumed"] is True and results["train_seconds"] >= 100  # the killed attempt's 100 s counted
    assert not (run / "fit.partial").exists()


def test_an_interrupted_run_is_not_resumed_with_another_data_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    run = runs / "smoke" / "baseline-seed0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_text("saved")
    args = ["--profile", "smoke", "--runs", str(runs), "--out", str(tmp_path / "out"), "--encoders", "baseline"]
    common = ["-c", "configs/default.yaml", "-c", "configs/trainer/cpu.yaml", "-c", "configs/encoder/baseline.yaml",
              "--seed_everything", "0", "--trainer.default_root_dir", str(run), *load_profile("smoke").args,
              "--data.path", "data/a.h5", "--data.synthesize", "false", "--trainer.max_steps=100"]
    (run / "fit.partial").write_text(json.dumps({"train_seconds": 30.0, "command": common}))  # Ctrl-C'd at step 40
    commands = []

    def finishes(command, env, run_dir):
        commands.append(command[3:])
        if command[3] == "test":
            (run / "results.json").write_text(json.dumps({"loss": 0.5, "miou": 0.2, "iou": {}}))

    monkeypatch.setattr(reproduce, "_run", finishes)
    assert reproduce_main([*args, "--data", "data/b.h5", "--", "--trainer.max_steps=100"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {run}: interrupted with other settings than this table's (then: data/a.h5; now: data/b.h5)" in err
    assert commands == [] and json.loads((run / "fit.partial").read_text())["train_seconds"] == 30.0
    # the same data with another budget resumes it
    assert reproduce_main([*args, "--data", "data/a.h5", "--", "--trainer.max_steps", "50"]) == 0
    assert commands[0][-2:] == ["--ckpt_path", "last"]
    assert json.loads((run / "fit.done").read_text())["train_seconds"] >= 30.0


def test_a_fit_refused_before_it_starts_leaves_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)

    def refused(command, env, run_dir):  # `recon fit: error: nope.h5: no such file`, before any run folder
        raise SystemExit("command failed with exit status 1")

    monkeypatch.setattr(reproduce, "_run", refused)
    with pytest.raises(SystemExit):
        reproduce.run_encoder(load_profile("smoke"), "baseline", 0, tmp_path / "smoke", "nope.h5", False, [])
    assert not (tmp_path / "smoke" / "baseline-seed0").exists()


def test_the_data_a_table_generates_is_made_before_its_first_run_is_timed(tmp_path, monkeypatch, capsys):
    # a missing synthetic file was generated by the first fit, inside the training time of that row only
    monkeypatch.chdir(tmp_path)  # the profile's data/smoke.h5, relative to the working folder
    profile = load_profile("smoke")
    reproduce.generate_data(profile, "baseline", tmp_path / "runs", ["--data.synth_val=2"])
    printed = capsys.readouterr().out
    assert "data/smoke.h5: missing; generating the synthetic dataset there (13 categories × 2 train, 2 val" in printed
    with h5py.File(tmp_path / "data" / "smoke.h5") as handle:
        assert handle["val"]["images"].shape[0] == 13 * 2  # the table's own flags apply
    assert not (tmp_path / "runs").exists()  # no run folder, no W&B run: the config is only resolved
    made = (tmp_path / "data" / "smoke.h5").stat().st_mtime_ns
    reproduce.generate_data(profile, "baseline", tmp_path / "runs", [])  # there: left as it is
    assert (tmp_path / "data" / "smoke.h5").stat().st_mtime_ns == made and "generating" not in capsys.readouterr().out
    reproduce.generate_data(profile, "baseline", tmp_path / "runs", ["--data.path=nowhere/x.h5",
                                                                     "--data.synthesize=false"])
    assert not (tmp_path / "nowhere").exists()  # a file the fit would not generate: the fit says so, not this


def test_a_table_of_finished_runs_is_printed_again_without_reading_or_making_data(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    run = runs / "smoke" / "baseline-seed0"
    run.mkdir(parents=True)
    common = reproduce._command(load_profile("smoke"), "baseline", 0, run, None, [])
    (run / ENTRY).write_text(json.dumps({"encoder_name": "baseline", "seed": 0, "loss": 0.3, "miou": 0.4,
                                         "iou": {"chair": 0.4}, "train_seconds": 6.0, "command": common}))
    monkeypatch.setattr(reproduce, "generate_data", lambda *args: pytest.fail("made the data of a finished table"))
    args = ["--profile", "smoke", "--runs", str(runs), "--out", str(tmp_path / "out"), "--encoders", "baseline"]
    assert reproduce_main(args) == 0 and (tmp_path / "out" / "table.csv").is_file()


def test_each_command_is_shown_as_it_runs_brackets_included(tmp_path, capsys):
    # rich took `[chair,airplane]` for markup and showed `--data.categories=`: not the command that ran
    reproduce._run([sys.executable, "-c", "pass", "--data.categories=[chair,airplane]"], dict(os.environ), tmp_path)
    assert "$ pass --data.categories=[chair,airplane]" in capsys.readouterr().err
