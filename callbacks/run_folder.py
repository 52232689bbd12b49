"""Where the logging callbacks send their output: the run folder on disk and the W&B runs of a Trainer."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger


def run_folder(trainer: Trainer) -> Path:
    """The run folder, ``trainer.default_root_dir``, created if missing: where recon's callbacks write media and
    results whatever the loggers are (the ``recon`` command also points checkpoints and loggers into it).

    One place for every file of a run, so a tool that runs ``recon test`` knows where ``results.json`` is.
    """
    path = Path(trainer.default_root_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    """Every ``WandbLogger`` of ``trainer``. Callbacks log media through ``logger.log_metrics(..., log_step(trainer))``
    so they share the ``trainer/global_step`` axis of the metrics, and set ``logger.experiment.summary`` on rank 0."""
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def log_step(trainer: Trainer) -> int:
    """The step Lightning logs the metrics of this moment at, for media logged beside them: a validation's after
    step N is logged at N − 1 (the count of batches stepped before the one that triggered it), not at
    ``trainer.global_step`` (N), so media at ``global_step`` would sit one step after their own metrics on the
    dashboard. Lightning's own logging callbacks (``LearningRateMonitor``) read the same counter."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)
