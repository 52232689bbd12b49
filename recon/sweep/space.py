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
and ``categorical`` (``choices``: a non-empty list of numbers, strings, booleans or null). Values are taken as
written, never converted: finite bounds, whole ones (and a whole ``step``) for ``int``, ``log`` true or false,
``sweep:`` settings of their own types. ``trainer.default_root_dir`` (each trial's run folder) is the sweep's own
and cannot be searched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import MedianPruner

SETTINGS = {"name", "trials", "seed", "jobs", "pruner", "enqueue", "fixed", "keep_checkpoints"}
FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}
# keys the sweep sets itself for every trial: a search over one would be overridden, every trial the same
PER_TRIAL = {"trainer.default_root_dir": "each trial's run folder, <sweep folder>/trial-<n>"}
EXAMPLE = "{type: float, low: 1.0e-5, high: 1.0e-3, log: true}"


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


def not_a_search_space(path: str | Path) -> str | None:
    """Why ``path``, a ``-c`` file not read as a search space, is none, where it may have been meant as one: YAML
    that does not parse, an empty file, or a mapping of dotted keys or distributions with an entry that is not
    one (raised as :class:`SearchSpaceError`, naming the key). None for what looks like an ordinary config."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError:
        return None  # recon fit reports a file it cannot read itself
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{path} is not valid YAML ({getattr(error, 'problem', None) or error}{where})"
    if not raw:
        return f"{path} is empty"
    if isinstance(raw, dict) and any("." in str(key) or _looks_like_distribution(value) for key, value in raw.items()):
        load_search_space(path)  # raises for the entry that is not a distribution
    return None


def _looks_like_distribution(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.keys() & {"type", "low", "high", "choices"})


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space file; raise :class:`SearchSpaceError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"{path}: no such search-space file")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SearchSpaceError(f"{path}: expected a mapping of config keys to distributions, got {type(raw).__name__}")
    settings = raw.pop("sweep", None)
    settings = {} if settings is None else settings  # an empty `sweep:` block
    if not isinstance(settings, dict):
        raise SearchSpaceError(f"{path}: sweep: expected a mapping of settings (some of {sorted(SETTINGS)}), got "
                               f"{settings!r}")
    if not set(settings) <= SETTINGS:
        raise SearchSpaceError(f"{path}: sweep: unknown settings {sorted(set(settings) - SETTINGS)}; expected some "
                               f"of {sorted(SETTINGS)}")
    _check_settings(path, settings)
    if not raw:
        raise SearchSpaceError(f"{path}: no key to search (expected e.g. 'model.lr: {EXAMPLE}')")
    for key in raw:
        if str(key) in PER_TRIAL:
            raise SearchSpaceError(f"{path}: {key}: the sweep sets it for every trial ({PER_TRIAL[str(key)]}), so "
                                   f"it cannot be searched")
    params = {str(key): parse_distribution(path, str(key), spec) for key, spec in raw.items()}
    space = SearchSpace(path=path, params=params, settings=settings)
    for i, values in enumerate(space.enqueued):
        _check_enqueued(space, i, values)
    try:
        MedianPruner(**(settings.get("pruner") or {}))
    except (TypeError, ValueError) as error:
        raise SearchSpaceError(f"{path}: sweep.pruner: not arguments of optuna.pruners.MedianPruner: {error}") from None
    return space


def parse_distribution(path: Path, key: str, spec: Any) -> BaseDistribution:
    """One entry (``{type: float, low: 1e-4, high: 1e-1, log: true}``) as an Optuna distribution."""
    where = f"{path}: {key}"
    if not isinstance(spec, dict):
        raise SearchSpaceError(f"{where}: expected a distribution such as {EXAMPLE} or {{type: categorical, "
                               f"choices: [...]}}, got {spec!r} (a value every trial shares goes in sweep.fixed)")
    if spec.get("type") not in FIELDS:
        got = f"type {spec['type']!r}" if "type" in spec else "no type"
        raise SearchSpaceError(f"{where}: expected {{type: float|int|categorical, ...}} (e.g. {EXAMPLE}), got {got} "
                               f"in {spec!r}")
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
    low, high = _number(where, "low", spec["low"], kind), _number(where, "high", spec["high"], kind)
    step = None if spec.get("step") is None else _number(where, "step", spec["step"], kind)
    if low > high:
        raise SearchSpaceError(f"{where}: low ({low}) > high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: log: true needs low > 0, got {low}")
    try:
        if kind == "float":
            return FloatDistribution(low, high, log=log, step=step)
        return IntDistribution(low, high, log=log, step=1 if step is None else step)
    except ValueError as error:  # Optuna's own checks (step with log, a range not divisible by step)
        raise SearchSpaceError(f"{where}: {error}") from None


def _number(where: str, name: str, value: Any, kind: str) -> float | int:
    """A distribution's ``low``, ``high`` or ``step``: a finite number, whole for type int. (A string that reads
    as one is taken: YAML reads ``1e-4``, without a dot, as a string.)"""
    expected = "a whole number" if kind == "int" else "a finite number"
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (kind == "int" and not number.is_integer()):
        raise SearchSpaceError(f"{where}: {name} must be {expected} for type {kind}, got {value!r}")
    return int(number) if kind == "int" else number


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    """The ``sweep:`` block's values have the types their options take (none is converted)."""
    name = settings.get("name")
    if name is not None and not (isinstance(name, str) and name):
        raise SearchSpaceError(f"{path}: sweep.name: expected a plain name (a string), got {name!r}")
    for key in ("trials", "jobs"):
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SearchSpaceError(f"{path}: sweep.{key}: expected a positive whole number, got {value!r}")
    seed = settings.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise SearchSpaceError(f"{path}: sweep.seed: expected a whole number from 0 to 2**32 - 1, got {seed!r}")
    for key, kind in (("enqueue", list), ("pruner", dict), ("fixed", dict)):
        if settings.get(key) is not None and not isinstance(settings[key], kind):
            expected = "a list of mappings of searched keys to values" if kind is list else "a mapping"
            raise SearchSpaceError(f"{path}: sweep.{key}: expected {expected}, got {settings[key]!r}")


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
