"""``recon sweep``'s command line: its own ``--sweep.*`` options apart from the configs and flags of ``recon fit``.

``recon sweep -c configs/default.yaml -c configs/sweep/recipe.yaml --sweep.trials 20 [--trainer.max_steps 500]``:
every ``-c`` file and flag that is not a sweep option goes, in order, to each trial's ``recon fit``. The
search-space file among the ``-c`` files is recognised by its content (a ``sweep:`` block, or only
distributions) and never reaches ``recon fit``: in its place each trial gets the file's ``sweep.fixed``
settings, then its own values last. Options on the command line win over the file's ``sweep:`` block.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from recon.atomic import file_above
from recon.shipped import shipped_hint
from recon.sweep.space import SearchSpace, SearchSpaceError, is_search_space, load_search_space, not_a_search_space
from recon.sweep.storage import JOURNAL, is_rdb, journal_problem, not_a_journal

DEFAULT_TRIALS = 10
CONFIG_FLAGS = ("-c", "--config")
KEEP_CHECKPOINTS = ("best", "all")


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep: the study's name and size, processes at once, sampler seed, storage and folders."""

    name: str
    trials: int
    jobs: int
    seed: int
    storage: str | None  # an RDB URL or a journal file; None: <folder>/study.journal
    root: Path
    test_best: bool
    keep_checkpoints: str = "best"  # "best": a complete trial's best.ckpt only; "all": every trial's, as written

    @property
    def folder(self) -> Path:
        return self.root / self.name


@dataclass(frozen=True)
class SweepCommand:
    """A parsed ``recon sweep``: its options, its search space, and the arguments every trial's ``recon fit`` gets."""

    options: SweepOptions
    space: SearchSpace
    fit_args: list[str]


def fit_flag(key: str, value: Any) -> str:
    """``--key=value`` as ``recon fit`` reads it (YAML scalars: ``null``, ``true``, ``1e-05``)."""
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    return f"--{key}={text.removesuffix('...').strip()}"


def option_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recon sweep", allow_abbrev=False,
        usage="recon sweep -c CONFIG [-c CONFIG ...] -c SEARCH_SPACE [--sweep.* ...] [--test-best] [recon fit flags]",
        description="Hyperparameter search with Optuna: every trial a `recon fit` in runs/sweeps/<name>/trial-<n>. "
        "Other -c files and flags go to each trial's `recon fit`.",
    )
    parser.add_argument("--sweep.name", dest="name", help="study name and folder (default: the search-space file's stem)")
    parser.add_argument("--sweep.trials", dest="trials", type=int, help=f"the study's size in finished trials (default {DEFAULT_TRIALS})")
    parser.add_argument("--sweep.jobs", dest="jobs", type=int, help="trial processes at once on this machine (default 1)")
    parser.add_argument("--sweep.seed", dest="seed", type=int, help="seed of the TPE sampler (default 0)")
    parser.add_argument("--sweep.storage", dest="storage",
                        help="RDB URL (postgresql://...) or journal file shared by several processes or machines "
                        "(default <folder>/study.journal)")
    parser.add_argument("--sweep.root", dest="root", default="runs/sweeps", help="parent of the sweep folder (default runs/sweeps)")
    parser.add_argument("--test-best", dest="test_best", action="store_true", help="test the best trial once, at the end")
    parser.add_argument("--sweep.keep_checkpoints", dest="keep_checkpoints", choices=KEEP_CHECKPOINTS,
                        help="best: once a trial ends, keep only a complete trial's best.ckpt (a pruned, failed or "
                        "interrupted trial's checkpoints are removed; each is ~300 MiB); all: keep every checkpoint "
                        "(default: best)")
    return parser


def parse_command(argv: Sequence[str]) -> SweepCommand:
    """Split ``argv`` into sweep options, the search space and ``recon fit``'s arguments; check the options."""
    own, fit_args, spaces, configs = [], [], [], []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name = token.split("=", 1)[0]
        if name.startswith("--sweep.") or name in ("--test-best", "-h", "--help"):
            takes_value = "=" not in token and name not in ("--test-best", "-h", "--help")
            own += tokens[i : i + (2 if takes_value else 1)]
            i += 2 if takes_value else 1
            continue
        if name in CONFIG_FLAGS:
            path = token.split("=", 1)[1] if "=" in token else (tokens[i + 1] if i + 1 < len(tokens) else "")
            step = 1 if "=" in token else 2
            # recon fit would refuse a missing file too, but "no search space found" would come first and hide it
            # (a config given inline, as jsonargparse allows, is left to it)
            if not Path(path).is_file() and not any(mark in path for mark in "{:\n"):
                raise SearchSpaceError(f"{name} {path}: no such file{shipped_hint(path)}" if path
                                       else f"{name} names no file")
            space = _read_space(path)
            if space is None and Path(path).is_file():
                configs.append(path)
            if space is None:
                fit_args += tokens[i : i + step]
            else:
                spaces.append(space)
                fit_args += [fit_flag(key, value) for key, value in space.fixed.items()]
            i += step
            continue
        fit_args.append(token)
        i += 1
    parsed = option_parser().parse_args(own)
    if len(spaces) != 1:
        found = ", ".join(str(space.path) for space in spaces) or "none"
        # none: say what keeps a -c file that may have been meant as the search space from being one
        reasons = [] if spaces else list(filter(None, (not_a_search_space(path) for path in configs)))
        raise SearchSpaceError(f"expected one search-space file among the -c files (e.g. "
                               f"-c configs/sweep/recipe.yaml), found {found}{': ' if reasons else ''}"
                               f"{'; '.join(reasons)}")
    space = spaces[0]
    settings = space.settings
    options = SweepOptions(
        name=parsed.name or settings.get("name") or space.path.stem,
        trials=_positive("--sweep.trials", parsed.trials if parsed.trials is not None else settings.get("trials", DEFAULT_TRIALS)),
        jobs=_positive("--sweep.jobs", parsed.jobs if parsed.jobs is not None else settings.get("jobs", 1)),
        seed=parsed.seed if parsed.seed is not None else settings.get("seed", 0),
        storage=parsed.storage,
        root=Path(parsed.root).expanduser(),
        test_best=parsed.test_best,
        keep_checkpoints=parsed.keep_checkpoints or settings.get("keep_checkpoints", "best"),
    )
    if not options.name or options.name in (".", "..") or "/" in options.name or "\\" in options.name:
        raise SearchSpaceError(f"sweep name {options.name!r} (--sweep.name, or sweep.name in the space): expected a "
                               f"plain name, which becomes the study's name and its folder below {options.root}")
    if not 0 <= options.seed < 2**32:
        raise SearchSpaceError(f"--sweep.seed must be a whole number from 0 to 2**32 - 1, got {options.seed}")
    if problem := _folder_problem(options.folder):
        raise SearchSpaceError(f"--sweep.root {options.root}: {problem}")
    if options.storage is not None and not is_rdb(options.storage):
        problem = journal_problem(Path(options.storage).expanduser().resolve())
        if problem:
            raise SearchSpaceError(f"--sweep.storage {problem}")
    elif options.storage is None and (problem := not_a_journal(options.folder / JOURNAL)):
        raise SearchSpaceError(f"{problem}; move it away to start the study {options.name} afresh")
    if options.keep_checkpoints not in KEEP_CHECKPOINTS:
        raise SearchSpaceError(f"sweep.keep_checkpoints must be one of {list(KEEP_CHECKPOINTS)}, got "
                               f"{options.keep_checkpoints!r}")
    return SweepCommand(options=options, space=space, fit_args=fit_args)


def _read_space(path: str) -> SearchSpace | None:
    """The search space in ``path``, or None for an ordinary config (left for ``recon fit`` to read)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None  # recon fit reports a missing or malformed config itself
    return load_search_space(path) if is_search_space(raw) else None


def _folder_problem(folder: Path) -> str | None:
    """Why the sweep folder cannot be made at ``folder`` (a file there or above it), or None."""
    below = folder if folder.exists() and not folder.is_dir() else file_above(folder)
    if below is not None:
        return f"{below} is a file, not a folder, so the sweep folder {folder} cannot be made"
    return None


def _positive(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SearchSpaceError(f"{option} must be a positive whole number, got {value!r}")
    return value
