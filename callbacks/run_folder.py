"""Where the logging callbacks send their output: the run folder on disk and the W&B runs of a Trainer."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger


def run_folder(trainer: Trainer) -> Path:
    """The folder this run writes its files to, as ``trainer.log_dir`` names it, created if missing.

    - no logger (``logger=False``): ``trainer.default_root_dir``;
    - first logger a ``CSVLogger`` or ``TensorBoardLogger``: its ``log_dir`` (``<save_dir>/<name>/version_N``);
    - first logger anything else (``WandbLogger``): its ``save_dir`` (the recon CLI sets it to the run folder,
      ``trainer.default_root_dir``); ``default_root_dir`` where that is ``None``.

    Unlike ``trainer.log_dir`` it makes no collective call (``log_dir`` broadcasts from rank 0, so calling it
    on rank 0 alone would hang a DDP run): call it from rank 0 only, where the files are written.
    """
    loggers = trainer.loggers
    if not loggers:
        folder = trainer.default_root_dir
    elif isinstance(loggers[0], (CSVLogger, TensorBoardLogger)):
        folder = loggers[0].log_dir
    else:
        folder = loggers[0].save_dir or trainer.default_root_dir
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    """Every ``WandbLogger`` of ``trainer``. Callbacks log media through ``logger.log_metrics(..., step)`` so
    they share the ``trainer/global_step`` axis of the metrics, and set ``logger.experiment.summary`` on rank 0."""
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
