"""A sweep's search space: config keys of ``recon fit`` mapped to Optuna distributions, read from YAML.

A search-space file (``configs/sweep/*.yaml``) has one entry per searched key, plus an optional ``sweep:``
block of settings that ``recon fit`` never sees::

    sweep:
      name: recipe                  # the study and its folder runs/sweeps/<name>; default: the file's stem
      trials: 20                    # the study's size: finished (complete or pruned) trials
      seed: 0                       # the TPE sampler's seed
      jobs: 1                       # trial processes at once on this machine
      pruner: {n_startup_trials: 5, n_warmup_steps: 0}   # optuna.pruners.MedianPruner's arguments
      enqueue:                      # trials run first, before the sampler draws (e.g. the published recipe)
        - {model.lr: 1.0e-4}
      fixed: {trainer.max_steps: 300}   # settings of every trial, applied where this file stands among the -c files
    model.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    data.batch_size: {type: int, low: 8, high: 64, step: 8}
    model.color_loss: {type: categorical, choices: [l1, l2]}

Distributions: ``float`` (``low``, ``high``, ``log``, ``step``), ``int`` (``low``, ``high``, ``log``, ``step``)
and ``categorical`` (``choices``: a non-empty list of numbers, strings, booleans or null).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import MedianPruner

SETTINGS = {"name", "trials", "seed", "jobs", "pruner", "enqueue", "fixed", "keep_checkpoints"}
FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}


class SearchSpaceError(ValueError):
    """A search-space file that cannot be searched; the message names the file, the key and what was expected."""


@dataclass(frozen=True)
class SearchSpace:
    """The searched keys (in file order) with their distributions, and the file's ``sweep:`` settings."""

    path: Path
    params: dict[str, BaseDistribution]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def enqueued(self) -> list[dict[str, Any]]:
        return list(self.settings.get("enqueue") or [])

    @property
    def fixed(self) -> dict[str, Any]:
        return dict(self.settings.get("fixed") or {})

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw every key's value for ``trial`` (or take the values it was enqueued with)."""
        return {key: _suggest(trial, key, distribution) for key, distribution in self.params.items()}

    def probes(self) -> list[dict[str, Any]]:
        """Values that together touch every end of every range and every choice: what ``recon fit`` must accept."""
        ends = {key: _ends(distribution) for key, distribution in self.params.items()}
        count = max((len(values) for values in ends.values()), default=0)
        return [{key: values[i % len(values)] for key, values in ends.items()} for i in range(count)]


def is_search_space(raw: Any) -> bool:
    """Whether a parsed ``-c`` file is a search space: it has a ``sweep:`` block, or every entry is a distribution."""
    if not isinstance(raw, dict) or not raw:
        return False
    if "sweep" in raw:
        return True
    return all(isinstance(value, dict) and "type" in value for value in raw.values())


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space file; raise :class:`SearchSpaceError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"{path}: no such search-space file")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SearchSpaceError(f"{path}: expected a mapping of config keys to distributions, got {type(raw).__name__}")
    settings = raw.pop("sweep", None) or {}
    if not isinstance(settings, dict) or not set(settings) <= SETTINGS:
        unknown = sorted(set(settings) - SETTINGS) if isinstance(settings, dict) else settings
        raise SearchSpaceError(f"{path}: sweep: unknown settings {unknown}; expected some of {sorted(SETTINGS)}")
    if not raw:
        raise SearchSpaceError(f"{path}: no key to search (expected e.g. 'model.lr: {{type: float, low: 1.0e-5, high: 1.0e-3}}')")
    params = {str(key): parse_distribution(path, str(key), spec) for key, spec in raw.items()}
    space = SearchSpace(path=path, params=params, settings=settings)
    for i, values in enumerate(space.enqueued):
        _check_enqueued(space, i, values)
    try:
        MedianPruner(**(settings.get("pruner") or {}))
    except (TypeError, ValueError) as error:
        raise SearchSpaceError(f"{path}: sweep.pruner: not arguments of optuna.pruners.MedianPruner: {error}") from None
    if not isinstance(space.settings.get("fixed", {}) or {}, dict):
        raise SearchSpaceError(f"{path}: sweep.fixed: expected a mapping of config keys to values")
    return space


def parse_distribution(path: Path, key: str, spec: Any) -> BaseDistribution:
    """One entry (``{type: float, low: 1e-4, high: 1e-1, log: true}``) as an Optuna distribution."""
    where = f"{path}: {key}"
    if not isinstance(spec, dict) or spec.get("type") not in FIELDS:
        raise SearchSpaceError(f"{where}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
    kind = spec["type"]
    unknown = set(spec) - FIELDS[kind] - {"type"}
    if unknown:
        raise SearchSpaceError(f"{where}: unknown fields {sorted(unknown)} for type {kind}; expected {sorted(FIELDS[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}: choices must be a non-empty list, got {choices!r}")
        bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
        if bad:
            raise SearchSpaceError(f"{where}: choices must be numbers, strings, booleans or null, got {bad!r}")
        return CategoricalDistribution(choices)
    if "low" not in spec or "high" not in spec:
        raise SearchSpaceError(f"{where}: type {kind} needs low and high")
    number = float if kind == "float" else int
    try:
        low, high = number(spec["low"]), number(spec["high"])
        step = None if spec.get("step") is None else number(spec["step"])
    except (TypeError, ValueError) as error:
        raise SearchSpaceError(f"{where}: low, high and step must be {kind} numbers: {error}") from None
    if kind == "int" and any(isinstance(spec.get(k), float) and not float(spec[k]).is_integer() for k in ("low", "high")):
        raise SearchSpaceError(f"{where}: type int needs whole low and high, got {spec['low']!r}, {spec['high']!r}")
    if low > high:
        raise SearchSpaceError(f"{where}: low ({low}) > high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: log: true needs low > 0, got {low}")
    try:
        if kind == "float":
            return FloatDistribution(low, high, log=log, step=step)
        return IntDistribution(low, high, log=log, step=1 if step is None else step)
    except ValueError as error:  # Optuna's own checks (step with log, a range not divisible by step)
        raise SearchSpaceError(f"{where}: {error}") from None


def _suggest(trial: optuna.Trial, key: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(key, distribution.low, distribution.high, log=distribution.log, step=distribution.step)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, log=distribution.log, step=distribution.step)
    return trial.suggest_categorical(key, distribution.choices)


def _ends(distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _check_enqueued(space: SearchSpace, index: int, values: Any) -> None:
    where = f"{space.path}: sweep.enqueue[{index}]"
    if not isinstance(values, dict):
        raise SearchSpaceError(f"{where}: expected a mapping of searched keys to values, got {values!r}")
    for key, value in values.items():
        if key not in space.params:
            raise SearchSpaceError(f"{where}: {key} is not a searched key; expected some of {list(space.params)}")
        distribution = space.params[key]
        try:
            inside = distribution._contains(distribution.to_internal_repr(value))
        except (TypeError, ValueError):
            inside = False
        if not inside:
            raise SearchSpaceError(f"{where}: {key}: {value!r} lies outside {distribution}")
