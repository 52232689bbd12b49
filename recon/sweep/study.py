"""The Optuna study of a sweep: created or continued, a seeded TPE sampler, a median pruner, and retries.

A trial that did not finish is marked failed and queued once more with the same values (Optuna's
``RetryHeartbeatStaleTrialCallback``, which keeps the chain in the new trial's ``retry_history``):
- one *interrupted* with the sweep (Ctrl-C, SIGTERM, its ``recon fit`` stopped by SIGINT or SIGTERM, or left
  running by a sweep process that no longer exists on this machine) is queued again every time: stopping a
  sweep is no fault of the trial, and a trial that is enqueued first (the published recipe) must not be lost to
  two Ctrl-Cs;
- one whose process failed on its own (crashed, killed with SIGKILL, no ``val/miou``) is retried once: a second
  such failure in its chain is final.

What every trial of a study shares, its search space and the ``recon fit`` config its trials' values go into, is
recorded in the study when it is made (:func:`check_definition`): a rerun with another space or other settings
would rank trials that are not comparable together, and is refused.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.pruners import MedianPruner
from optuna.samplers import TPESampler
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from recon.atomic import pid_alive
from recon.sweep.space import PER_TRIAL, SearchSpace
from recon.sweep.storage import open_storage

with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY = RetryHeartbeatStaleTrialCallback(max_retry=None)  # how often is decided here (retry_failed)

MAX_FAILURES = 1  # failures of a trial's values (interruptions aside) after which they are not tried again
INTERRUPTED = "interrupted"  # user attribute: the trial was stopped with its sweep, not failed on its own
SECONDS = "seconds"  # user attribute: how long a trial left running by a dead sweep ran (its folder's last write)
DEFINITION = "definition"  # study user attribute: what every trial shares (see check_definition)
ORPHAN_FIT_SECONDS = 10  # how long a rerun waits for the fit of a dead sweep's trial to end before cleaning up


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


class StudyMismatch(RuntimeError):
    """A rerun's search space or settings are not those the study's trials ran with (``changes`` says how)."""

    def __init__(self, changes: list[str]) -> None:
        super().__init__("; ".join(changes))
        self.changes = changes


def open_study(name: str, storage_url: str, space: SearchSpace, seed: int,
               definition: dict[str, Any] | None = None) -> optuna.Study:
    """Create the study ``name`` (maximising ``val/miou``) or continue it; raise :class:`StudyMismatch`, before
    anything is added to it, if its trials ran with another ``definition`` (:func:`study_definition`).

    The TPE sampler is seeded with ``seed`` plus the number of trials already in the study, so a fresh sweep
    is reproducible and a continued one does not redraw its first trials' values. ``constant_liar`` keeps
    processes that share the study from drawing the same values while their trials run.
    """
    storage = open_storage(storage_url, heartbeat=True)
    pruner = MedianPruner(**(space.settings.get("pruner") or {}))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                pruner=pruner)
    if definition is not None and (changes := check_definition(study, definition)):
        raise StudyMismatch(changes)
    existing = len(study.get_trials(deepcopy=False))
    sampler = TPESampler(seed=(seed + existing) % 2**32, constant_liar=True)
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
    trial.set_user_attr(SECONDS, None)
    if fit_pid is not None:
        trial.set_user_attr("fit_pid", fit_pid)


def mark_interrupted(trial: optuna.Trial) -> None:
    """``trial`` stopped because its sweep (or its ``recon fit``) was told to stop, not by a fault of its own."""
    trial.set_user_attr(INTERRUPTED, True)


def interrupted(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(INTERRUPTED))


def fail_orphans(study: optuna.Study) -> list[FrozenTrial]:
    """Fail the running trials whose sweep process on this machine no longer exists, as interrupted; return them.

    Their ``recon fit`` stops with its sweep (within a second, saving ``last.ckpt``): it is given
    ``ORPHAN_FIT_SECONDS`` to, so that what it leaves can be removed. Optuna ends the trial now; its ``seconds``
    user attribute is how long it ran, until its run folder's last write."""
    orphans = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        pid = attrs.get("sweep_pid")
        if attrs.get("host") == socket.gethostname() and not (isinstance(pid, int) and pid_alive(pid)):
            orphans.append(trial)
    deadline = time.monotonic() + ORPHAN_FIT_SECONDS
    for trial in orphans:
        fit_pid = trial.user_attrs.get("fit_pid")
        while isinstance(fit_pid, int) and pid_alive(fit_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        last = _last_write(trial.user_attrs.get("folder"))
        if last is not None and trial.datetime_start is not None:
            seconds = max(0.0, last - trial.datetime_start.timestamp())
            study._storage.set_trial_user_attr(trial._trial_id, SECONDS, round(seconds, 1))
        study.tell(trial.number, state=TrialState.FAIL)
    return orphans


def _last_write(folder: str | None) -> float | None:
    """When a file directly in the run folder ``folder`` (its fit.log, …) was last written, or None."""
    if not folder or not Path(folder).is_dir():
        return None
    times = [path.stat().st_mtime for path in Path(folder).iterdir() if path.is_file()]
    return max(times, default=None)


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



def study_definition(space: SearchSpace, fit_config: dict[str, Any]) -> dict[str, Any]:
    """What every trial of a study shares: the search space (each key's distribution) and ``fit_config``, the
    ``recon fit`` config that its trials' values go into, flattened to dotted keys (``trainer.max_steps``;
    ``trainer.callbacks[0].init_args.monitor``), less the keys the sweep sets per trial and the searched ones."""
    searched = set(space.params)
    fit = {key: _home_relative(value) for key, value in _flatten(json.loads(json.dumps(fit_config, default=str))).items()
           if key not in PER_TRIAL and not any(key == s or key.startswith((s + ".", s + "[")) for s in searched)}
    return {"space": {key: distribution_to_json(d) for key, d in space.params.items()}, "fit": fit}


def _home_relative(value: Any) -> Any:
    """A path below the home folder as ``~/…``: recon expands a leading ``~`` (``--data.path=~/data/x.h5``), and
    machines that share one study (a journal on a shared disk, a database) each expand it to their own home."""
    if not isinstance(value, str) or not value.startswith(os.sep):
        return value
    home = os.path.expanduser("~")  # without a trailing separator
    if home in ("", os.sep, "~"):
        return value
    if value == home:
        return "~"
    return "~" + value[len(home):] if value.startswith(home + os.sep) else value


def check_definition(study: optuna.Study, definition: dict[str, Any]) -> list[str]:
    """Record ``definition`` (:func:`study_definition`) in a study that has none, or no trial yet; for one that
    has, return how the rerun's differs (``trainer.max_steps 4 then, 2 now``), or [] if it does not.

    The settings both know are compared, and the shape of the rest (:func:`_reshaped`): a key that a newer recon
    added, or an older one had, is none of the user's doing; a group of settings where there was a value (a colour
    head), or a longer list (another callback), is. A study made before definitions were recorded gets the rerun's."""
    recorded = study.user_attrs.get(DEFINITION)
    if recorded is None or not study.get_trials(deepcopy=False):
        study.set_user_attr(DEFINITION, definition)
        return []
    changes = []
    old, new = recorded.get("space", {}), definition["space"]
    for key in [*new, *(key for key in old if key not in new)]:
        if key not in old:
            changes.append(f"{key} searched now, not then")
        elif key not in new:
            changes.append(f"{key} searched then, not now")
        elif json_to_distribution(old[key]) != json_to_distribution(new[key]):
            changes.append(f"{key} {_describe(json_to_distribution(old[key]))} then, "
                           f"{_describe(json_to_distribution(new[key]))} now")
    # (a study recorded by a recon that kept the home folder expanded compares as this one records)
    old_fit, new_fit = {key: _home_relative(value) for key, value in recorded.get("fit", {}).items()}, definition["fit"]
    changes += [f"{key} {_show(old_fit[key])} then, {_show(value)} now" for key, value in new_fit.items()
                if key in old_fit and old_fit[key] != value]
    changes += _reshaped(old_fit, new_fit)
    return changes


def _reshaped(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings whose shape changed, which comparing the keys both know misses: a value that became a
    group of settings or the other way round (``model.colors`` null then, a colour decoder now), and a list with
    more or fewer items (``trainer.callbacks``). A key that only one side has below a group both have (a setting
    a newer recon added) is not a change."""
    changes: dict[str, str] = {}
    for ours, theirs, now in ((new, old, True), (old, new, False)):
        for key in ours.keys() - theirs.keys():
            for prefix in _prefixes(key):
                if prefix in theirs:  # a value on one side, settings below it on the other
                    then, later = (_show(theirs[prefix]), "settings below it") if now else (
                        "settings below it", _show(theirs[prefix]))
                    changes.setdefault(prefix, f"{prefix} {then} then, {later} now")
                    break
                if prefix.endswith("]"):  # an item of a list: is the list longer on this side?
                    name = prefix[: prefix.rindex("[")]
                    counts = [len({k[len(name):].split("]")[0] for k in side if k.startswith(name + "[")})
                              for side in (old, new)]
                    if counts[0] != counts[1] and min(counts):  # (an empty list is a value: [] then)
                        changes.setdefault(name, f"{name} {counts[0]} items then, {counts[1]} now")
                        break
    return list(changes.values())


def _prefixes(key: str) -> list[str]:
    """The settings above ``key``, nearest first: ``a.b[0].c`` → ``a.b[0]``, ``a.b``, ``a``."""
    cuts = [i for i, char in enumerate(key) if char in ".["]
    return [key[:i] for i in reversed(cuts) if i > 0]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1]}}`` as ``{"a.b[0]": 1}``."""
    if isinstance(value, dict) and value:
        items = [(f"{prefix}.{key}" if prefix else str(key), item) for key, item in value.items()]
    elif isinstance(value, list) and value:
        items = [(f"{prefix}[{i}]", item) for i, item in enumerate(value)]
    else:
        return {prefix: value}
    return {key: leaf for name, item in items for key, leaf in _flatten(item, name).items()}


def _describe(distribution: BaseDistribution) -> str:
    """A distribution as the search-space file writes it: ``{type: float, low: 1e-05, high: 0.001, log: true}``."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return f"{{type: categorical, choices: {_show(list(distribution.choices))}}}"
    kind = "int" if isinstance(distribution, optuna.distributions.IntDistribution) else "float"
    fields = [f"type: {kind}", f"low: {distribution.low}", f"high: {distribution.high}"]
    fields += ["log: true"] if distribution.log else []
    if distribution.step is not None and not (kind == "int" and distribution.step == 1):
        fields.append(f"step: {distribution.step}")
    return "{" + ", ".join(fields) + "}"


def _show(value: Any) -> str:
    return json.dumps(value)
