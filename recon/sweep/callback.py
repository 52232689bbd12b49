"""``SweepTrial``: the link from one trial's ``recon fit`` process to its Optuna trial.

The sweep starts every trial as its own ``recon fit`` process and appends this callback to its configs. It
is Optuna's own Lightning pruning callback (``optuna_integration.PyTorchLightningPruningCallback``) with two
changes a separate process needs: it reports ``val/miou`` at the **global step** of each validation (validations
fall within one epoch when ``val_check_interval`` is shorter than an epoch, where the epoch would repeat), and
a pruned trial **stops training** (``trainer.should_stop``) instead of raising inside ``fit``, so the process
exits cleanly with its checkpoints and W&B run closed. It records each report, and where it was pruned, in
``<run folder>/sweep-trial.json``, which the sweep reads when the process ends. It also writes the trial's
number and values into each W&B run's config (the dashboard's parallel-coordinates view) and names the run
``<study>-trial-<n>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from optuna.pruners import MedianPruner
from optuna_integration import PyTorchLightningPruningCallback
from typing_extensions import override

from recon.atomic import write_text
from recon.sweep.storage import open_storage

RESULT = "sweep-trial.json"


class SweepTrial(PyTorchLightningPruningCallback):
    """Report ``monitor`` to trial ``trial_number`` of study ``study_name`` in ``storage``; stop when pruned.

    Args:
        storage: the study's storage (an RDB URL or a journal file), as the sweep names it.
        study_name: the study.
        trial_number: this process's trial.
        pruner: the arguments of the study's ``optuna.pruners.MedianPruner`` (a pruner is not kept in the
            storage, so each trial's process builds the sweep's own).
        monitor: the metric reported and pruned on (maximised).
    """

    def __init__(
        self, storage: str, study_name: str, trial_number: int, pruner: dict[str, Any] | None = None,
        monitor: str = "val/miou",
    ) -> None:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage),
                                  pruner=MedianPruner(**(pruner or {})))
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_number)
        super().__init__(optuna.trial.Trial(study, trial_id), monitor)
        self.trial_number = trial_number
        self.study_name = study_name
        self.reports: dict[int, float] = {}
        self.pruned_at: int | None = None
        self._folder: Path | None = None

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Unlike the parent's, no storage check: this process writes its reports to the storage itself.
        self._folder = Path(trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        values = dict(self._trial.params)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                run.name = f"{self.study_name}-trial-{self.trial_number}"
                run.config.update({"sweep": self.study_name, "trial": self.trial_number, **values}, allow_val_change=True)
        self._write(trainer)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            raise KeyError(f"SweepTrial: {self.monitor!r} is not among the logged metrics "
                           f"({', '.join(sorted(trainer.callback_metrics)) or 'none'})")
        step = trainer.global_step
        prune = False
        if trainer.is_global_zero:
            self.reports[step] = float(score.item())
            self._trial.report(self.reports[step], step=step)
            prune = self._trial.should_prune()
        # Every rank stops together when rank 0's trial is pruned.
        prune = trainer.strategy.broadcast(prune)
        if prune:
            self.pruned_at = step
            trainer.should_stop = True
        if trainer.is_global_zero:
            self._write(trainer)

    def _write(self, trainer: Trainer) -> None:
        assert self._folder is not None
        result: dict[str, Any] = {
            "trial": self.trial_number,
            "monitor": self.monitor,
            "reports": {str(step): value for step, value in self.reports.items()},
            "pruned_at": self.pruned_at,
            "global_step": trainer.global_step,
        }
        path = self._folder / RESULT
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(result, indent=2) + "\n")


def read_result(folder: Path) -> dict[str, Any] | None:
    """What a trial's process recorded (see :class:`SweepTrial`), or None if it recorded nothing."""
    path = folder / RESULT
    return json.loads(path.read_text()) if path.is_file() else None
