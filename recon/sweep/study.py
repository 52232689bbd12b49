"""The Optuna study of a sweep: created or continued, a seeded TPE sampler, a median pruner, and retries.

A trial that did not finish is marked failed and queued once more with the same values (Optuna's
``RetryHeartbeatStaleTrialCallback``, which keeps the chain in the new trial's ``retry_history``):
- one *interrupted* with the sweep (Ctrl-C, SIGTERM, its ``recon fit`` stopped by SIGINT or SIGTERM, or left
  running by a sweep process that no longer exists on this machine) is queued again every time: stopping a
  sweep is no fault of the trial, and a trial that is enqueued first (the published recipe) must not be lost to
  two Ctrl-Cs;
- one whose process failed on its own (crashed, killed with SIGKILL, no ``val/miou``) is retried once: a second
  such failure in its chain is final.
"""

from __future__ import annotations

import copy
import os
import socket
import warnings
from dataclasses import dataclass

import optuna
from optuna.pruners import MedianPruner
from optuna.samplers import TPESampler
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from recon.atomic import pid_alive
from recon.sweep.space import SearchSpace
from recon.sweep.storage import open_storage

with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY = RetryHeartbeatStaleTrialCallback(max_retry=None)  # how often is decided here (retry_failed)

MAX_FAILURES = 1  # failures of a trial's values (interruptions aside) after which they are not tried again
INTERRUPTED = "interrupted"  # user attribute: the trial was stopped with its sweep, not failed on its own


@dataclass(frozen=True)
class TrialCounts:
    """Trials of a study by state: finished (complete or pruned), running, waiting, failed."""

    finished: int
    running: int
    waiting: int
    failed: int


def count_trials(study: optuna.Study) -> TrialCounts:
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    return TrialCounts(
        finished=sum(state in (TrialState.COMPLETE, TrialState.PRUNED) for state in states),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        failed=states.count(TrialState.FAIL),
    )


def open_study(name: str, storage_url: str, space: SearchSpace, seed: int) -> optuna.Study:
    """Create the study ``name`` (maximising ``val/miou``) or continue it.

    The TPE sampler is seeded with ``seed`` plus the number of trials already in the study, so a fresh sweep
    is reproducible and a continued one does not redraw its first trials' values. ``constant_liar`` keeps
    processes that share the study from drawing the same values while their trials run.
    """
    storage = open_storage(storage_url, heartbeat=True)
    pruner = MedianPruner(**(space.settings.get("pruner") or {}))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                pruner=pruner)
    existing = len(study.get_trials(deepcopy=False))
    sampler = TPESampler(seed=seed + existing, constant_liar=True)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    for values in space.enqueued:
        study.enqueue_trial(values, skip_if_exists=True)
    return study


def claim(trial: optuna.Trial, fit_pid: int | None = None) -> None:
    """Record which process runs ``trial``, so a later sweep can tell a trial whose process died. (A retry starts
    with its failed trial's attributes: it is not interrupted until it is.)"""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("sweep_pid", os.getpid())
    trial.set_user_attr(INTERRUPTED, False)
    if fit_pid is not None:
        trial.set_user_attr("fit_pid", fit_pid)


def mark_interrupted(trial: optuna.Trial) -> None:
    """``trial`` stopped because its sweep (or its ``recon fit``) was told to stop, not by a fault of its own."""
    trial.set_user_attr(INTERRUPTED, True)


def interrupted(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(INTERRUPTED))


def fail_orphans(study: optuna.Study) -> list[int]:
    """Fail the running trials whose sweep process on this machine no longer exists, as interrupted; return their
    numbers."""
    orphans = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        pid = attrs.get("sweep_pid")
        if attrs.get("host") == socket.gethostname() and not (isinstance(pid, int) and pid_alive(pid)):
            study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
            study.tell(trial.number, state=TrialState.FAIL)
            orphans.append(trial.number)
    return orphans


def retry_failed(study: optuna.Study) -> list[int]:
    """Queue once more every failed trial that has not been retried yet, unless its values have failed more than
    ``MAX_FAILURES`` times on their own (interrupted trials do not count); return the trials queued."""
    trials = study.get_trials(deepcopy=False)
    by_number = {trial.number: trial for trial in trials}
    retried = {number for trial in trials if (number := retry_of(trial)) is not None}
    queued = []
    for trial in trials:
        if trial.state != TrialState.FAIL or trial.number in retried:
            continue
        chain = [by_number[n] for n in retry_history(trial) if n in by_number] + [trial]
        if sum(not interrupted(t) for t in chain) <= MAX_FAILURES:
            RETRY(study, copy.deepcopy(trial))  # it appends to the retry_history it is given: not the study's own
            queued.append(trial.number)
    return queued


def retry_history(trial: FrozenTrial) -> list[int]:
    """The failed trials that ``trial`` repeats, first to last (Optuna's ``retry_history``)."""
    return list(trial.system_attrs.get("retry_history") or [])


def retry_of(trial: FrozenTrial) -> int | None:
    """The number of the failed trial that ``trial`` repeats, or None (the chain is Optuna's ``retry_history``)."""
    history = retry_history(trial)
    return history[-1] if history else None

