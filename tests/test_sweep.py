"""``recon sweep``: real Optuna studies whose trials are real ``recon fit`` processes on the tiny file.

Each trial is 2-4 steps; the whole file is a dozen short fits. No mocks: the pruning, the retry of a killed
trial and the sharing of a study between processes all happen for real.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml

from recon.atomic import pid_alive
from recon.sweep import main as sweep_main
from recon.sweep.fit_args import check_fit_args
from recon.sweep.space import load_search_space
from recon.sweep.storage import open_storage
from recon.sweep.study import open_study, retry_failed, study_definition

pytestmark = pytest.mark.slow

DEFAULT = "configs/default.yaml"
# Trials 0 and 1 train sensibly; trial 2's learning rate wrecks the mesh in two steps (val/miou ~0.05 against
# ~0.16), so the median pruner, live from the third trial on, stops it at its first validation.
PRUNING_SPACE = {
    "sweep": {"name": "tiny", "pruner": {"n_startup_trials": 2, "n_warmup_steps": 0},
              "enqueue": [{"model.lr": 1.0e-4}, {"model.lr": 2.0e-4}, {"model.lr": 1.0}]},
    "model.lr": {"type": "float", "low": 1.0e-5, "high": 1.0, "log": True},
}
LR_SPACE = {"model.lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True}}


def write_space(tmp_path: Path, space: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def sweep_args(space: Path, flags: list[str], root: Path, *extra: str) -> list[str]:
    return ["-c", DEFAULT, "-c", str(space), *flags, "--sweep.root", str(root), *extra]


def read_trials(folder: Path) -> list[dict[str, str]]:
    with open(folder / "trials.csv", newline="") as file:
        return list(csv.DictReader(file))


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def wandb_config_item(key: str, value: object) -> bytes:
    """A W&B config entry as it lies in an offline run's ``.wandb`` log: the protobuf ``ConfigItem``
    (field 1: the key; field 16: the value as JSON)."""
    text = json.dumps(value).encode()
    return b"\n" + bytes([len(key)]) + key.encode() + b"\x82\x01" + bytes([len(text)]) + text


def wait_for_fit_pid(driver: subprocess.Popen, folder: Path, name: str, timeout: float = 240, number: int = 0) -> int:
    """The process id of trial ``number``'s ``recon fit``, as the sweep records it in the study, once it has
    started (a retry starts with the attributes of the trial it repeats: a process id of its own, then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None:
        if (folder / "study.journal").is_file():
            trials = optuna.load_study(study_name=name, storage=open_storage(str(folder / "study.journal"))).trials
            if len(trials) > number and trials[number].user_attrs.get("fit_pid") not in (
                    None, *(trial.user_attrs.get("fit_pid") for trial in trials[:number])):
                return trials[number].user_attrs["fit_pid"]
        time.sleep(0.5)
    raise AssertionError(f"the sweep never started trial {number}'s recon fit")


def val_miou_by_step(run: Path) -> dict[int, float]:
    """``val/miou`` per global step from the run's CSVLogger file (its fit's: version 0; a test logs another)."""
    metrics = run / "logs" / "version_0" / "metrics.csv"
    with open(metrics, newline="") as file:
        return {int(row["step"]): float(row["val/miou"]) for row in csv.DictReader(file) if row.get("val/miou")}


def test_sweep_writes_its_results_prunes_a_bad_region_and_best_yaml_retrains_the_best_trial(shrink_flags, tmp_path):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, PRUNING_SPACE)
    flags = shrink_flags({"trainer.max_steps": 4})
    assert sweep_main(sweep_args(space, flags, root, "--sweep.trials", "3", "--test-best")) == 0

    folder = root / "tiny"
    for name in ("summary.md", "trials.csv", "best.yaml", "study.journal", "history.png", "parallel_coordinates.png"):
        assert (folder / name).is_file(), name
    rows = read_trials(folder)
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert [float(row["model.lr"]) for row in rows] == [1.0e-4, 2.0e-4, 1.0]
    assert [row["state"] for row in rows] == ["complete", "complete", "pruned"]
    assert rows[2]["last_step"] == "2"  # stopped at its first validation, not trained to step 4
    assert float(rows[2]["val_miou"]) < min(float(rows[0]["val_miou"]), float(rows[1]["val_miou"]))
    assert "pruned" in (folder / "summary.md").read_text()

    best = max(rows[:2], key=lambda row: float(row["val_miou"]))
    for number, row in enumerate(rows):
        run = folder / f"trial-{number}"
        assert Path(row["folder"]) == run and (run / "config.yaml").is_file()
        records = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))  # by start time: the fit's, then a test's
        assert len(records) == (2 if str(number) == best["trial"] else 1)
        data = records[0].read_bytes()
        assert b"sweep-tiny" in data and f"tiny-trial-{number}".encode() in data  # group and run name
        assert wandb_config_item("model.lr", float(row["model.lr"])) in data  # the trial's value in its config
        # --sweep.keep_checkpoints best (the default): a finished trial keeps its best.ckpt only, a pruned one none
        kept = sorted(path.name for path in (run / "checkpoints").glob("*.ckpt"))
        assert kept == (["best.ckpt"] if row["state"] == "complete" else []), (number, kept)

    # --test-best tested the best trial's best.ckpt once, on the test split, into that trial's folder
    tested = json.loads((folder / "test-best.json").read_text())
    assert tested["trial"] == int(best["trial"]) and tested["checkpoint"].endswith("best.ckpt")
    assert 0 <= tested["miou"] <= 1 and (folder / f"trial-{best['trial']}" / "config-test.yaml").is_file()

    # best.yaml is the best trial's whole config: with the default config first it retrains that trial exactly
    # (after --test-best too: the test's config, with its checkpoint and options, is not the trial's record)
    refit = tmp_path / "refit"
    subprocess.run([sys.executable, "-m", "recon", "fit", "-c", DEFAULT, "-c", str(folder / "best.yaml"),
                    f"--trainer.default_root_dir={refit}"], env=child_env(), check=True, capture_output=True)
    expected = val_miou_by_step(folder / f"trial-{best['trial']}")
    assert len(expected) == 2  # validations at steps 2 and 4
    assert val_miou_by_step(refit) == expected
    assert max(expected.values()) == pytest.approx(float(best["val_miou"]), abs=1e-6)


def test_a_killed_trial_is_retried_once_and_a_rerun_adds_trials_to_the_same_study_two_at_once(shrink_flags, tmp_path):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "resume"}, **LR_SPACE})
    args = sweep_args(space, shrink_flags(), root)
    folder = root / "resume"
    driver = subprocess.Popen([sys.executable, "-m", "recon", "sweep", *args, "--sweep.trials", "1"],
                              env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        fit_pid = wait_for_fit_pid(driver, folder, "resume")
        os.kill(fit_pid, signal.SIGKILL)
        _, errors = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 0, errors.decode()[-3000:]
    assert b"Traceback" not in errors  # the failed trial is one warning naming its fit.log

    first = read_trials(folder)
    assert [(row["trial"], row["state"], row["retry_of"]) for row in first] == [("0", "fail", ""), ("1", "complete", "0")]
    assert first[1]["model.lr"] == first[0]["model.lr"]  # the retry repeats the killed trial's values

    # The rerun continues the study: two more trials, run at once (--sweep.jobs 2).
    assert sweep_main([*args, "--sweep.trials", "3", "--sweep.jobs", "2", "--sweep.keep_checkpoints", "all"]) == 0
    again = read_trials(folder)
    assert [row["trial"] for row in again] == ["0", "1", "2", "3"] and again[:2] == first
    assert [row["state"] for row in again[2:]] == ["complete", "complete"]
    assert all((folder / f"trial-{n}" / "config.yaml").is_file() for n in (2, 3))
    for n in (2, 3):  # --sweep.keep_checkpoints all
        assert sorted(path.name for path in (folder / f"trial-{n}" / "checkpoints").glob("*.ckpt")) == [
            "best.ckpt", "last.ckpt"]
    trials = optuna.load_study(study_name="resume", storage=open_storage(str(folder / "study.journal"))).trials
    assert trials[2].datetime_start < trials[3].datetime_complete and trials[3].datetime_start < trials[2].datetime_complete


def test_ctrl_c_stops_the_sweep_and_its_trial_in_one_message_and_a_rerun_runs_the_trial_again(shrink_flags, tmp_path):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "stop"}, **LR_SPACE})
    folder = root / "stop"
    # Ctrl-C in a terminal: SIGINT to the whole process group, the sweep and its trial's recon fit
    args = sweep_args(space, shrink_flags(), root, "--sweep.trials", "1")
    driver = subprocess.Popen([sys.executable, "-m", "recon", "sweep", *args], env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        fit_pid = wait_for_fit_pid(driver, folder, "stop")
        os.killpg(driver.pid, signal.SIGINT)
        out, errors = driver.communicate(timeout=120)
    finally:
        driver.kill()
    printed = (out + errors).decode()
    assert driver.returncode == 130, printed[-3000:]
    assert "sweep stop interrupted; the same command continues it" in printed
    assert "Traceback" not in printed  # Optuna's warning names the trial, without the sweep's own frames
    with pytest.raises(ProcessLookupError):
        os.kill(fit_pid, 0)  # the trial's process ended with the sweep
    assert [(row["trial"], row["state"]) for row in read_trials(folder)] == [("0", "interrupted")]

    assert sweep_main(args) == 0  # the same command continues the sweep
    rows = read_trials(folder)
    assert [(row["trial"], row["state"], row["retry_of"]) for row in rows] == [("0", "interrupted", ""),
                                                                              ("1", "complete", "0")]
    assert rows[1]["model.lr"] == rows[0]["model.lr"]  # the interrupted trial's values, run again


def wait_until_training(log: Path, timeout: float = 240) -> None:
    """Until the trial's fit trains (the model summary is printed as the fit starts), and a little more."""
    deadline = time.monotonic() + timeout
    while "Total params" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)


def test_ctrl_c_pressed_again_while_the_sweep_stops_loses_neither_the_enqueued_trial_nor_disk(shrink_flags, tmp_path):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "again", "enqueue": [{"model.lr": 2.0e-4}]}, **LR_SPACE})
    folder = root / "again"
    long_fit = shrink_flags({"trainer.max_steps": 10_000, "trainer.val_check_interval": 10_000})
    driver = subprocess.Popen([sys.executable, "-m", "recon", "sweep", *sweep_args(space, long_fit, root)],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for_fit_pid(driver, folder, "again")
        wait_until_training(folder / "trial-0" / "fit.log")
        for _ in range(3):  # an impatient Ctrl-C, Ctrl-C, Ctrl-C: the later ones land while the sweep stops
            os.killpg(driver.pid, signal.SIGINT)
            time.sleep(0.4)
        out, errors = driver.communicate(timeout=120)
    finally:
        driver.kill()
    printed = (out + errors).decode()
    assert driver.returncode == 130, printed[-3000:]
    assert "Traceback" not in printed and "sweep again interrupted; the same command continues it" in printed
    rows = read_trials(folder)
    assert [(row["trial"], row["state"], float(row["model.lr"])) for row in rows] == [("0", "interrupted", 2.0e-4)]
    checkpoints = folder / "trial-0" / "checkpoints"
    assert not checkpoints.exists() or sorted(path.name for path in checkpoints.iterdir()) == []
    # the published recipe runs again at the next run
    study = optuna.load_study(study_name="again", storage=open_storage(str(folder / "study.journal")))
    assert retry_failed(study) == [0] and study.trials[1].params == {"model.lr": 2.0e-4}


def gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` has ended (or is a zombie nobody reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not pid_alive(pid)


def test_a_killed_sweep_takes_its_trial_with_it_and_a_rerun_runs_that_trial_again(shrink_flags, tmp_path):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "orphan"}, **LR_SPACE})
    folder = root / "orphan"
    long_fit = shrink_flags({"trainer.max_steps": 10_000, "trainer.val_check_interval": 10_000})
    args = sweep_args(space, long_fit, root, "--sweep.trials", "1")
    driver = subprocess.Popen([sys.executable, "-m", "recon", "sweep", *args], env=child_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        fit_pid = wait_for_fit_pid(driver, folder, "orphan")
        log = folder / "trial-0" / "fit.log"
        wait_until_training(log)
        driver.kill()  # kill -9: no handler runs in the sweep
        driver.wait()
        assert gone(fit_pid, timeout=60), "the trial's recon fit outlived its killed sweep"
    finally:
        driver.kill()
    fit_log = log.read_text()
    assert "recon fit: interrupted; exit status 143" in fit_log  # stopped as SIGTERM stops a fit: cleanly
    checkpoints = folder / "trial-0" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()  # saved as it stopped

    # The rerun, the same command (a study's settings are its own), fails the orphaned trial as interrupted,
    # removes its checkpoints and runs its values again (stopped here, once that trial's fit has started).
    rerun = subprocess.Popen([sys.executable, "-m", "recon", "sweep", *args], env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for_fit_pid(rerun, folder, "orphan", number=1)
        os.killpg(rerun.pid, signal.SIGINT)
        _, errors = rerun.communicate(timeout=120)
    finally:
        rerun.kill()
    assert rerun.returncode == 130, errors.decode()[-3000:]
    assert "trials [0] were left running by a sweep process that is gone: marked interrupted" in errors.decode()
    rows = read_trials(folder)
    assert [(row["trial"], row["state"], row["retry_of"]) for row in rows] == [("0", "interrupted", ""),
                                                                              ("1", "interrupted", "0")]
    assert rows[1]["model.lr"] == rows[0]["model.lr"]
    assert sorted(path.name for path in checkpoints.iterdir()) == []  # 2 × ~300 MiB for a real model


def test_two_processes_share_one_study_without_losing_or_duplicating_a_trial(shrink_flags, tmp_path):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "shared"}, **LR_SPACE})
    args = sweep_args(space, shrink_flags(), root, "--sweep.trials", "3")
    drivers = [subprocess.Popen([sys.executable, "-m", "recon", "sweep", *args, "--sweep.seed", str(seed)],
                                env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for seed in (0, 1)]
    try:
        for driver in drivers:
            _, errors = driver.communicate(timeout=600)
            assert driver.returncode == 0, errors.decode()[-3000:]
    finally:
        for driver in drivers:
            driver.kill()

    folder = root / "shared"
    trials = optuna.load_study(study_name="shared", storage=open_storage(str(folder / "study.journal"))).trials
    numbers = [trial.number for trial in trials]
    assert numbers == list(range(len(trials))) and len(trials) >= 3
    assert all(trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for trial in trials)
    assert len({trial.user_attrs["sweep_pid"] for trial in trials}) == 2  # both processes ran trials
    assert len({trial.user_attrs["fit_pid"] for trial in trials}) == len(trials)
    assert sorted(p.name for p in folder.glob("trial-*")) == sorted(f"trial-{n}" for n in numbers)
    assert [int(row["trial"]) for row in read_trials(folder)] == numbers


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"model.no_such_key": {"type": "float", "low": 0.1, "high": 1.0}}, "model.no_such_key"),
        ({"model.lr": {"type": "float", "low": 1.0e-2, "high": 1.0e-4}}, "low (0.01) > high (0.0001)"),
        ({"model.color_loss": {"type": "categorical", "choices": []}}, "choices must be a non-empty list"),
        ({"trainer.max_steps": {"type": "categorical", "choices": [4, "many"]}}, "trainer.max_steps"),
        ({"model.lr": {"type": "float", "low": float("nan"), "high": 1.0e-3}},
         "model.lr: low must be a finite number for type float, got nan"),
        ({"model.lr": {"type": "float", "low": 1.0e-5, "high": float("inf")}},
         "model.lr: high must be a finite number for type float, got inf"),
        ({"data.batch_size": {"type": "int", "low": 2, "high": 8, "step": 1.5}},
         "data.batch_size: step must be a whole number for type int, got 1.5"),
        ({"model.lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": "yes-please"}},
         "model.lr: log must be true or false, got 'yes-please'"),
        ({"sweep": {"trials": True}, **LR_SPACE}, "sweep.trials: expected a positive whole number, got True"),
        ({"sweep": {"seed": "abc"}, **LR_SPACE}, "sweep.seed: expected a whole number from 0 to 2**32 - 1, got 'abc'"),
        ({"sweep": {"name": 5}, **LR_SPACE}, "sweep.name: expected a plain name (a string), got 5"),
        ({"sweep": {"name": ["a"]}, **LR_SPACE}, "sweep.name: expected a plain name (a string), got ['a']"),
        ({"sweep": [], **LR_SPACE}, "sweep: expected a mapping of settings"),
        ({"trainer.default_root_dir": {"type": "categorical", "choices": ["a", "b"]}},
         "trainer.default_root_dir: the sweep sets it for every trial"),
    ],
    ids=["unknown-key", "low-above-high", "empty-choices", "value-recon-fit-rejects", "nan-low", "infinite-high",
         "fractional-int-step", "log-not-a-boolean", "trials-a-boolean", "seed-not-a-number", "name-a-number",
         "name-a-list", "sweep-a-list", "a-key-the-sweep-sets"],
)
def test_a_bad_search_space_fails_with_one_message_before_any_trial(space, message, shrink_flags, tmp_path, capsys):
    root = tmp_path / "sweeps"
    path = write_space(tmp_path, {"sweep": {"name": "bad"}, **space})
    assert sweep_main(sweep_args(path, shrink_flags(), root)) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "recon sweep: error: " in error and message in error and str(path) in error
    assert "Seed set to" not in error  # the check only parses: it seeds nothing
    assert not root.exists()  # no study, no trial folder


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-c", "{tmp}/spcae.yaml"], "-c {tmp}/spcae.yaml: no such file"),
        (["--sweep.storage", "{tmp}/notes.txt/study.journal"], "{tmp}/notes.txt is a file, not a folder"),
        (["--sweep.storage", "{tmp}"], "{tmp}: is a folder; give the journal file's name"),
        (["--sweep.storage", "{tmp}/absent/study.journal"], "the journal file's folder {tmp}/absent does not exist"),
        (["--sweep.storage", "postgresq://me:secret@localhost/db"],
         "--sweep.storage postgresq://me:***@localhost/db: cannot open it (NoSuchModuleError: "),
        (["--sweep.storage", "sqlite:///{tmp}/absent/study.db"], "cannot open it (OperationalError: "),
        (["--sweep.name", "../beside"], "sweep name '../beside' (--sweep.name, or sweep.name in the space): expected"),
        (["--sweep.root", "{tmp}/notes.txt/sweeps"],
         "--sweep.root {tmp}/notes.txt/sweeps: {tmp}/notes.txt is a file, not a folder, so the sweep folder"),
        (["--sweep.storage", "{tmp}/notes.txt"],
         "--sweep.storage {tmp}/notes.txt: not an Optuna journal file (its first line is not a journal record)"),
    ],
    ids=["missing-config", "journal-below-a-file", "journal-is-a-folder", "journal-folder-missing",
         "mistyped-scheme", "unreachable-database", "name-with-a-path", "root-below-a-file", "storage-not-a-journal"],
)
def test_a_bad_command_line_fails_with_one_message_before_any_trial(extra, message, shrink_flags, tmp_path, capsys):
    root = tmp_path / "sweeps"
    (tmp_path / "notes.txt").write_text("mine")
    path = write_space(tmp_path, LR_SPACE)
    extra = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
    assert sweep_main(sweep_args(path, shrink_flags(), root, *extra)) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert error.startswith("recon sweep: error: ") and message.replace("{tmp}", str(tmp_path)) in error, error
    assert "Traceback" not in error and "secret" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "space.yaml"]  # no study, folder or file


def test_a_config_recon_ships_that_the_working_folder_lacks_is_refused_naming_recons_copy(shrink_flags, tmp_path,
                                                                                         capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: `-c configs/default.yaml` names nothing
    path = write_space(tmp_path, LR_SPACE)
    assert sweep_main(sweep_args(path, shrink_flags(), tmp_path / "sweeps")) == 2
    error = " ".join(capsys.readouterr().err.split())
    shipped = Path(__file__).resolve().parents[1] / DEFAULT
    assert error == (f"recon sweep: error: -c {DEFAULT}: no such file; recon ships {DEFAULT} as {shipped}: give that "
                     "path, or run from the repository's root")
    assert not (tmp_path / "sweeps").exists()


def test_trials_that_keep_failing_stop_the_sweep_with_the_fits_own_error(shrink_flags, tmp_path, capsys):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "broken"}, **LR_SPACE})
    missing = tmp_path / "moved.h5"  # a data file moved away: every trial's recon fit refuses it in one line
    args = sweep_args(space, shrink_flags({"data.path": missing, "data.synthesize": None}), root, "--sweep.trials", "1")
    assert sweep_main(args) == 1
    error = " ".join(capsys.readouterr().err.split())
    expected = f"the last: {missing}: no such file"
    assert f"recon sweep: error: sweep broken: trials [0, 1] failed in a row; see their fit.log in {root / 'broken'}; " \
           f"{expected}" in error, error[-3000:]
    assert [row["state"] for row in read_trials(root / "broken")] == ["fail", "fail"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model.lr: {type: float, low: 1.0e-5, high: 1.0e-3\n",
         "found none: {path} is not valid YAML (expected ',' or '}', but got '<stream end>' at line 2, column 1)"),
        ("", "found none: {path} is empty"),
        ("model.sigma: 1.0e-4\nmodel.lr: {type: float, low: 1.0e-5, high: 1.0e-3}\n",
         "{path}: model.sigma: expected a distribution such as {type: float, low: 1.0e-5, high: 1.0e-3, log: true}"),
        ("model.lr: {low: 1.0e-5, high: 1.0e-3}\n",
         "{path}: model.lr: expected {type: float|int|categorical, ...} (e.g. {type: float, low: 1.0e-5, high: "
         "1.0e-3, log: true}), got no type"),
    ],
    ids=["yaml-syntax-error", "empty", "a-plain-value", "no-type"],
)
def test_a_search_space_file_that_is_none_says_what_is_wrong_with_it(text, message, shrink_flags, tmp_path, capsys):
    root = tmp_path / "sweeps"
    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert sweep_main(sweep_args(path, shrink_flags(), root)) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert error.startswith("recon sweep: error: ") and message.replace("{path}", str(path)) in error, error
    assert not root.exists()


def test_a_rerun_with_other_settings_than_the_study_s_trials_is_refused_in_one_line(shrink_flags, tmp_path, capsys):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "fixed"}, **LR_SPACE})
    folder = root / "fixed"
    folder.mkdir(parents=True)
    journal = str(folder / "study.journal")
    # a study whose trials ran 4 steps, as `recon sweep ... --trainer.max_steps 4` would have made it
    loaded = load_search_space(space)
    earlier = check_fit_args(["-c", DEFAULT, *shrink_flags({"trainer.max_steps": 4})], loaded)
    study = open_study("fixed", journal, loaded, 0, study_definition(loaded, earlier))
    study.tell(study.ask(), 0.5)

    assert sweep_main(sweep_args(space, shrink_flags(), root, "--sweep.trials", "2")) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert error.startswith("recon sweep: error: sweep fixed: its trials ran with another search space or other "
                            "settings than this command's (trainer.max_steps 4 then, 2 now); give another "
                            f"--sweep.name for a new study, or remove {folder} to start this one over"), error
    assert len(optuna.load_study(study_name="fixed", storage=open_storage(journal)).trials) == 1
    assert not list(folder.glob("trial-*")) and not (folder / "trials.csv").exists()  # no trial, no table


def _one_finished_trial(folder: Path, run: Path) -> None:
    """The study ``tested`` in ``folder``, with one complete trial whose run folder is ``run``."""
    study = optuna.create_study(study_name="tested", storage=open_storage(str(folder / "study.journal")),
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"model.lr": 1.0e-4}, value=0.5, user_attrs={"folder": str(run)},
        distributions={"model.lr": optuna.distributions.FloatDistribution(1.0e-5, 1.0e-3, log=True)}))


@pytest.mark.parametrize("checkpoint", [None, b"not a checkpoint"], ids=["no-best-ckpt", "recon-test-fails"])
def test_test_best_that_cannot_test_the_best_trial_says_why_in_one_line(checkpoint, shrink_flags, tmp_path, capsys):
    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "tested"}, **LR_SPACE})
    folder = root / "tested"
    run = folder / "trial-0"
    (run / "checkpoints").mkdir(parents=True)
    if checkpoint is not None:
        (run / "checkpoints" / "best.ckpt").write_bytes(checkpoint)
    _one_finished_trial(folder, run)

    assert sweep_main(sweep_args(space, shrink_flags(), root, "--sweep.trials", "1", "--test-best")) == 1
    error = " ".join(capsys.readouterr().err.split())
    expected = (f"--test-best: {run}/checkpoints/best.ckpt: the best trial, 0, has no best.ckpt" if checkpoint is None
                else "--test-best: recon test of trial 0 failed (exit status 1: ")
    assert f"recon sweep: error: {expected}" in error and "Traceback" not in error, error
    assert (folder / "trials.csv").is_file()  # the tables are written all the same


_STOPPABLE_TEST = """
import signal, sys, time
from pathlib import Path
marker = Path(sys.argv[1])
def stop(signum, frame):
    marker.write_text(signal.Signals(signum).name)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
marker.write_text("started")
time.sleep(60)
"""


def test_sigterm_to_a_sweep_during_test_best_stops_its_recon_test_as_a_sigterm_would(shrink_flags, tmp_path,
                                                                                      monkeypatch, capsys):
    """The best trial's ``recon test`` gets the SIGTERM (it stops between batches, exit status 143) and the sweep
    waits for it, rather than killing it; ``test-best.json`` is not written, so the same command tests it again.
    The test process here is a stand-in that records the signal it got."""
    from recon.sweep import command

    root = tmp_path / "sweeps"
    space = write_space(tmp_path, {"sweep": {"name": "tested"}, **LR_SPACE})
    folder = root / "tested"
    run = folder / "trial-0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"a checkpoint")
    _one_finished_trial(folder, run)
    marker, started = tmp_path / "signal.txt", []
    real_popen = subprocess.Popen

    def stand_in(args, **kwargs):
        assert args[1:4] == ["-m", "recon", "test"]
        process = real_popen([sys.executable, "-c", _STOPPABLE_TEST, str(marker)], **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(command.subprocess, "Popen", stand_in)

    def signal_once_started() -> None:
        deadline = time.monotonic() + 60
        while not (marker.is_file() and marker.read_text() == "started") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_once_started, daemon=True).start()
    assert sweep_main(sweep_args(space, shrink_flags(), root, "--sweep.trials", "1", "--test-best")) == 130
    (process,) = started
    assert process.poll() == 143 and marker.read_text() == "SIGTERM"  # stopped by the signal, not killed
    assert not (folder / "test-best.json").exists()
    assert "sweep tested interrupted; the same command continues it" in " ".join(capsys.readouterr().err.split())
