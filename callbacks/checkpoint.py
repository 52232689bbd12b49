"""``ModelCheckpoint``: Lightning's, with ``last.ckpt`` written at every validation whether or not the score
improved, and at the fit's last step.

Lightning 2.6 writes ``last.ckpt`` at a validation only when it also writes a top-k checkpoint there, that is
when the monitored metric improved. A run whose later validations scored lower then kept the ``last.ckpt`` of its
best step: ``--ckpt_path last`` trained those steps again, ``recon test --ckpt_path last`` scored older weights,
and a killed run lost everything since its best score instead of since its last validation. recon's configs use
this class; it is Lightning's in every other way (same arguments, same files, same state).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from typing_extensions import override


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint``; with ``save_last`` it saves ``last.ckpt`` at each of its saving points
    (every validation, or every training epoch's end where it saves then), improved or not, and when the fit ends."""

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the fit's final step, where max_steps ends it between two validations (Lightning saves last.ckpt here only
        # when it saved no checkpoint at all during the fit)
        with _epoch_left_open(trainer):
            super().on_train_end(trainer, pl_module)
            self._save_last_if_not_saved(trainer)

    def _save_last_if_not_saved(self, trainer: pl.Trainer) -> None:
        # Skipped where Lightning skips (sanity check, another stage, fast_dev_run) and where this step's
        # checkpoint, last.ckpt included, is already written. Every rank takes the same branch (a DDP save is
        # collective): the step and the saved step are the same on all of them.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


@contextmanager
def _epoch_left_open(trainer: pl.Trainer) -> Iterator[None]:
    """The fit loop's progress as a resume needs it, for the checkpoint written when ``max_steps`` ends the fit.

    By ``on_train_end`` Lightning has closed the last epoch (counted it completed: ``current_epoch`` + 1) while
    its batch position still says how far into it the fit got. Saved so, a resume starts the next epoch at that
    position: the rest of the epoch is never trained, the next one loses as many batches, and ``epoch`` runs one
    further ahead of ``global_step`` at every such resume. So the checkpoint holds the epoch still open where the
    fit stopped inside it (as a validation's checkpoint at that step does), and the next epoch not yet begun
    (its per-epoch counters cleared, as Lightning's epoch start clears them) where the fit stopped at an epoch's end.
    """
    loop = trainer.fit_loop
    epochs, epoch_loop = loop.epoch_progress, loop.epoch_loop
    closed = (loop.max_steps != -1 and trainer.global_step >= loop.max_steps and epochs.current.completed > 0
              and epochs.current.ready == epochs.current.processed == epochs.current.completed)
    inside = closed and 0 < epoch_loop.batch_progress.current.ready < trainer.num_training_batches
    per_epoch = [epoch_loop.batch_progress, epoch_loop.scheduler_progress,
                 epoch_loop.automatic_optimization.optim_progress, epoch_loop.val_loop.batch_progress]
    kept = [progress.state_dict() for progress in per_epoch]
    if inside:
        for tracker in (epochs.current, epochs.total):
            tracker.processed -= 1
            tracker.completed -= 1
    elif closed:
        for progress in per_epoch[:3]:
            progress.reset_on_run()
        epoch_loop.val_loop.batch_progress.total.reset()
    try:
        yield
    finally:
        if inside:
            for tracker in (epochs.current, epochs.total):
                tracker.processed += 1
                tracker.completed += 1
        elif closed:
            for progress, state in zip(per_epoch, kept, strict=True):
                progress.load_state_dict(state)
