"""``recon sweep``: hyperparameter search with Optuna, every trial a tracked ``recon fit`` run.

Modules: :mod:`~recon.sweep.space` (the search-space file), :mod:`~recon.sweep.options` (the command line),
:mod:`~recon.sweep.fit_args` (each trial's ``recon fit`` arguments, checked by its parser),
:mod:`~recon.sweep.storage` and :mod:`~recon.sweep.study` (the Optuna study, retries),
:mod:`~recon.sweep.runner` (a trial as a process), :mod:`~recon.sweep.callback` (the trial's side: pruning,
W&B), :mod:`~recon.sweep.report` (summary, table, best config, plots), :mod:`~recon.sweep.command` (``main``).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """``recon sweep`` (``argv``: the arguments after ``sweep``)."""
    from recon.sweep.command import main as run  # imported here: a trial's process loads only the callback

    return run(argv)
