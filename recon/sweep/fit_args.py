"""Each trial's ``recon fit`` arguments, checked before the first trial by ``recon fit``'s own parser.

The search space's keys are not checked against a list kept here: the LightningCLI parser of ``recon fit`` is
built and parses the sweep's configs plus every key at the ends of its range and with each of its choices,
without instantiating anything, so a key or value ``recon fit`` would reject fails in a second, not after
hours of trials.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from typing_extensions import override

from recon.cli import ReconCLI
from recon.sweep.options import fit_flag
from recon.sweep.space import SearchSpace, SearchSpaceError

CALLBACK = "recon.sweep.callback.SweepTrial"


class _ParseOnlyCLI(ReconCLI):
    """``recon fit``'s parser and config, nothing instantiated."""

    @override
    def _set_seed(self) -> None:  # parsing only: no "Seed set to …" line per probe, the process's RNGs untouched
        pass

    @override
    def before_instantiate_classes(self) -> None:
        pass

    @override
    def instantiate_classes(self) -> None:
        pass


def parse_fit_args(args: Sequence[str]) -> dict[str, Any]:
    """Parse ``args`` as ``recon fit`` would and return the config it resolves (as its ``config.yaml`` records it);
    raise ``ValueError`` with the parser's message if it rejects them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "args given while sys.argv has others": intended here
            cli = _ParseOnlyCLI(args=list(args), run=False,
                                parser_kwargs={"exit_on_error": False})
    except Exception as error:  # jsonargparse's ArgumentError, or a config file that cannot be read
        raise ValueError(str(error).strip()) from None
    except SystemExit as error:  # defensive: a parser that exits instead of raising
        raise ValueError(f"recon fit exited with status {error.code}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skip_none, which newer jsonargparse calls skip_unset, as Lightning passes it
        return yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))


def check_fit_args(fit_args: Sequence[str], space: SearchSpace) -> dict[str, Any]:
    """Raise :class:`SearchSpaceError` (naming the file and key) unless ``recon fit`` accepts the configs and
    every probe of the search space: both ends of each range, each choice. Return the config of the configs and
    flags alone, which every trial's values go into."""
    try:
        config = parse_fit_args(fit_args)
    except ValueError as error:
        raise SearchSpaceError(f"`recon fit` rejects the sweep's configs and flags: {error}") from None
    for probe in space.probes():
        try:
            parse_fit_args([*fit_args, *(fit_flag(key, value) for key, value in probe.items())])
        except ValueError:
            _raise_for_culprit(fit_args, space, probe)
    return config


def _raise_for_culprit(fit_args: Sequence[str], space: SearchSpace, probe: dict[str, Any]) -> None:
    for key, value in probe.items():
        try:
            parse_fit_args([*fit_args, fit_flag(key, value)])
        except ValueError as error:
            raise SearchSpaceError(f"{space.path}: {key}: `recon fit` rejects {key}={value!r}: {error}") from None
    raise SearchSpaceError(f"{space.path}: `recon fit` rejects the values {probe} together")


def trial_args(
    fit_args: Sequence[str], values: dict[str, Any], folder: Path, storage: str, study_name: str, number: int,
    pruner: dict[str, Any] | None = None,
) -> list[str]:
    """``recon fit``'s arguments for one trial: the sweep's, then the trial's values, its run folder and the
    :class:`~recon.sweep.callback.SweepTrial` callback that reports to the study (appended to the configs' own)."""
    callback = {"class_path": CALLBACK,
                "init_args": {"storage": storage, "study_name": study_name, "trial_number": number,
                              "pruner": pruner or {}}}
    return [
        *fit_args,
        *(fit_flag(key, value) for key, value in values.items()),
        f"--trainer.default_root_dir={folder}",
        f"--trainer.callbacks+={json.dumps(callback)}",
    ]
