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
    """Every ``WandbLogger`` of ``trainer``. Callbacks log media through ``logger.log_metrics(..., step)`` so
    they share the ``trainer/global_step`` axis of the metrics, and set ``logger.experiment.summary`` on rank 0."""
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
