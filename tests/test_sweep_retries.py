"""Which failed sweep trials run again: a real Optuna study in memory, trials failed the ways a sweep fails them;
and which reruns may continue a study (one in a journal file)."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from recon.sweep.report import trial_rows
from recon.sweep.runner import end_orphans
from recon.sweep.space import SearchSpace, load_search_space
from recon.sweep.storage import open_storage
from recon.sweep.study import (
    DEFINITION,
    INTERRUPTED,
    StudyMismatch,
    open_study,
    retry_failed,
    retry_of,
    study_definition,
)


def _fail(study: optuna.Study, *, interrupted: bool) -> optuna.trial.FrozenTrial:
    """Run the study's next trial (a queued retry first, as Optuna does) and fail it: stopped with its sweep or on
    its own (a crash, SIGKILL)."""
    trial = study.ask({"model.lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
    trial.set_user_attr(INTERRUPTED, interrupted)
    trial.set_user_attr("folder", f"runs/trial-{trial.number}")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return study.trials[trial.number]


@pytest.fixture
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))


def test_an_interrupted_trial_runs_again_however_often_it_is_interrupted(study):
    first = _fail(study, interrupted=True)
    for attempt in range(1, 4):
        assert retry_failed(study) == [attempt - 1]
        again = _fail(study, interrupted=True)
        assert again.params == first.params and retry_of(again) == attempt - 1  # the same values, chained
    assert [row["state"] for row in trial_rows(study)[1]] == ["interrupted"] * 4


def test_values_that_fail_on_their_own_twice_are_not_tried_again(study):
    first = _fail(study, interrupted=False)  # crashed
    assert retry_failed(study) == [0]
    assert _fail(study, interrupted=True).params == first.params  # stopped with the sweep: does not count
    assert retry_failed(study) == [1]
    assert _fail(study, interrupted=False).params == first.params  # the second failure of its own is final
    assert retry_failed(study) == []
    assert retry_failed(study) == []  # and nothing is queued twice
    assert [row["state"] for row in trial_rows(study)[1]] == ["fail", "interrupted", "fail"]


def test_a_failed_trial_is_queued_once(study):
    _fail(study, interrupted=True)
    assert retry_failed(study) == [0]
    assert retry_failed(study) == []  # already retried: its retry is waiting
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert [(row["state"], row["retry_of"], row["folder"]) for row in trial_rows(study)[1]] == [
        ("interrupted", "", "runs/trial-0"), ("waiting", 0, "")]  # no folder of its own yet


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_a_trial_left_running_by_a_killed_sweep_is_interrupted_its_checkpoints_removed_its_time_its_own(
        study, tmp_path):
    trial = study.ask({"model.lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
    folder = tmp_path / "trial-0"
    (folder / "checkpoints").mkdir(parents=True)
    dead = _dead_pid()
    for name in ("best.ckpt", "last.ckpt", f".last.ckpt.tmp-{dead}"):  # and a save the kill cut short
        (folder / "checkpoints" / name).write_bytes(b"weights")
    log = folder / "fit.log"
    log.write_text("recon fit: interrupted; exit status 143\n")
    start = study.trials[0].datetime_start.timestamp()
    os.utime(log, (start + 7, start + 7))  # the fit's last word, 7 s into the trial: then the sweep was killed
    trial.set_user_attr("folder", str(folder))
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("sweep_pid", dead)  # kill -9: no handler of the sweep ran

    assert end_orphans(study) == [0]
    assert sorted(path.name for path in (folder / "checkpoints").iterdir()) == []  # ~300 MiB each
    rows = trial_rows(study)[1]
    assert [(row["state"], row["seconds"]) for row in rows] == [("interrupted", "7.0")]  # not until this rerun
    assert retry_failed(study) == [0]
    assert trial_rows(study)[1][1]["seconds"] == ""  # the retry waits: no time of its own yet


def test_a_trial_left_running_keeps_its_checkpoints_with_keep_checkpoints_all(study, tmp_path):
    trial = study.ask({"model.lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    trial.set_user_attr("folder", str(tmp_path))
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("sweep_pid", _dead_pid())
    assert end_orphans(study, keep_checkpoints="all") == [0]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def _space(tmp_path: Path, text: str) -> SearchSpace:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_search_space(path)


LR = "model.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\n"
FIT = {"trainer": {"max_steps": 4, "default_root_dir": "runs/a", "callbacks": [{"init_args": {"monitor": "val/miou"}}]},
       "model": {"lr": 1.0e-4, "sigma": 1.0e-4, "colors": None}}


def _with(config: dict, key: str, value: object) -> dict:
    config = copy.deepcopy(config)
    *parents, last = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[last] = value
    return config


def test_a_rerun_with_another_space_or_other_settings_is_refused_before_anything_is_added_to_the_study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = str(tmp_path / "study.journal")
    space = _space(tmp_path, "sweep: {enqueue: [{model.lr: 1.0e-4}]}\n" + LR)
    study = open_study("s", url, space, 0, study_definition(space, FIT))
    study.tell(study.ask(), 0.5)  # the enqueued trial ran

    # the same command, or one that changes only what every trial sets itself or searches, continues the study
    # (and a setting that only one side has, below settings both have: one a newer recon added)
    for fit in (FIT, _with(FIT, "trainer.default_root_dir", "runs/b"), _with(FIT, "model.lr", 1.0),
                _with(FIT, "model.added", 3),
                _with(FIT, "trainer.callbacks", [{"init_args": {"monitor": "val/miou", "added": True}}])):
        assert len(open_study("s", url, space, 0, study_definition(space, fit)).trials) == 1

    refused = [
        (space, _with(FIT, "trainer.max_steps", 2), ["trainer.max_steps 4 then, 2 now"]),
        (space, _with(FIT, "trainer.callbacks", [{"init_args": {"monitor": "val/loss"}}]),
         ['trainer.callbacks[0].init_args.monitor "val/miou" then, "val/loss" now']),
        # a colour head where there was none, another callback: trials that cannot be ranked with the others
        (space, _with(FIT, "model.colors", {"class_path": "recon.models.ColorDecoder"}),
         ["model.colors null then, settings below it now"]),
        (space, _with(FIT, "trainer.callbacks", [{"init_args": {"monitor": "val/miou"}}, {"class_path": "Stop"}]),
         ["trainer.callbacks 1 items then, 2 now"]),
        (_space(tmp_path, LR + "model.sigma: {type: float, low: 1.0e-5, high: 1.0e-3}\n"), FIT,
         ["model.sigma searched now, not then"]),
        (_space(tmp_path, "model.lr: {type: float, low: 1.0e-6, high: 1.0e-3, log: true}\n"), FIT,
         ["model.lr {type: float, low: 1e-05, high: 0.001, log: true} then, "
          "{type: float, low: 1e-06, high: 0.001, log: true} now"]),
        (_space(tmp_path, "model.sigma: {type: float, low: 1.0e-5, high: 1.0e-3}\n"),
         FIT, ["model.sigma searched now, not then", "model.lr searched then, not now"]),
    ]
    for other, fit, changes in refused:
        with pytest.raises(StudyMismatch) as error:
            open_study("s", url, other, 0, study_definition(other, fit))
        assert error.value.changes == changes
    assert len(optuna.load_study(study_name="s", storage=open_storage(url)).trials) == 1  # nothing enqueued


def test_machines_whose_home_folders_differ_share_one_study_through_a_path_below_home(tmp_path, monkeypatch):
    """recon expands the ~ of ``--data.path=~/data/x.h5``; each machine sharing a study expands it to its own home."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = str(tmp_path / "study.journal")
    space = _space(tmp_path, LR)

    def fit(path: str) -> dict:
        return {**FIT, "data": {"path": path}}

    monkeypatch.setenv("HOME", "/home/alice")
    study = open_study("s", url, space, 0, study_definition(space, fit("/home/alice/data/x.h5")))
    study.tell(study.ask(), 0.5)
    monkeypatch.setenv("HOME", "/home/bob/")
    assert len(open_study("s", url, space, 0, study_definition(space, fit("/home/bob/data/x.h5"))).trials) == 1
    for path, change in (("/home/bob/data/y.h5", '"~/data/x.h5" then, "~/data/y.h5" now'),
                         ("/home/bobby/data/x.h5", '"~/data/x.h5" then, "/home/bobby/data/x.h5" now')):
        with pytest.raises(StudyMismatch) as error:
            open_study("s", url, space, 0, study_definition(space, fit(path)))
        assert error.value.changes == [f"data.path {change}"]

    # a study whose definition was recorded with the home folder expanded (recon before this) continues as well
    study.set_user_attr(DEFINITION, {**study.user_attrs[DEFINITION], "fit": {"data.path": "/home/alice/data/x.h5"}})
    monkeypatch.setenv("HOME", "/home/alice")
    assert len(open_study("s", url, space, 0, study_definition(space, fit("/home/alice/data/x.h5"))).trials) == 1
    monkeypatch.setenv("HOME", "/home/bob")
    with pytest.raises(StudyMismatch):  # recorded expanded, it is alice's own path: bob's reads as another file
        open_study("s", url, space, 0, study_definition(space, fit("/home/bob/data/x.h5")))


def test_a_study_with_no_trial_yet_takes_the_rerun_s_settings(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = str(tmp_path / "study.journal")
    space = _space(tmp_path, LR)
    open_study("s", url, space, 0, study_definition(space, FIT))  # then stopped before its first trial
    study = open_study("s", url, space, 0, study_definition(space, _with(FIT, "trainer.max_steps", 2)))
    study.tell(study.ask(), 0.5)
    with pytest.raises(StudyMismatch, match="trainer.max_steps 2 then, 4 now"):
        open_study("s", url, space, 0, study_definition(space, FIT))
