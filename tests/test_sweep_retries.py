"""Which failed sweep trials run again: a real Optuna study in memory, trials failed the ways a sweep fails them."""

from __future__ import annotations

import optuna
import pytest

from recon.sweep.report import trial_rows
from recon.sweep.study import INTERRUPTED, retry_failed, retry_of


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
