"""``ModelCheckpoint``: Lightning's, with ``last.ckpt`` written at every validation whether or not the score
improved, and at the fit's last step.

Lightning 2.6 writes ``last.ckpt`` at a validation only when it also writes a top-k checkpoint there, that is
when the monitored metric improved. A run whose later validations scored lower then kept the ``last.ckpt`` of its
best step: ``--ckpt_path last`` trained those steps again, ``recon test --ckpt_path last`` scored older weights,
and a killed run lost everything since its best score instead of since its last validation. recon's configs use
this class; it is Lightning's in every other way (same arguments, same files), except that a fit resumed from its
checkpoints under ``max_steps`` goes on as the uninterrupted fit would: the loop progress saved where ``max_steps``
ends a fit, and read from checkpoints written at an epoch's end, is the one a resume needs (see the helpers below).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.loops.progress import _BatchProgress, _OptimizationProgress, _Progress, _SchedulerProgress
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

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        _begin_a_new_epoch_afresh(trainer)

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        _resume_epoch_end_checkpoint(checkpoint)
        _resume_validation_in_progress(checkpoint)

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
        _next_epoch_not_begun(*per_epoch)
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


def _begin_a_new_epoch_afresh(trainer: pl.Trainer) -> None:
    """A fit resumed from a checkpoint that holds its next epoch not yet begun begins that epoch as any epoch begins.

    Resumed with ``max_steps`` set, Lightning restarts the epoch loop even where no batch of the epoch was trained,
    as from a checkpoint written at the validation of a last batch. Where the config validates once an epoch (or
    every N batches within one, ``check_val_every_n_epoch`` set), it then takes the epoch's first batch for that
    validation, skips it, and counts a step that was never taken: every step of the resumed fit is logged one late.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    if epoch_loop.restarting and epoch_loop.batch_progress.current.ready == 0:
        epoch_loop.restarting = False


def _next_epoch_not_begun(batches: _BatchProgress, schedulers: _SchedulerProgress, optimizers: _OptimizationProgress,
                          validation: _BatchProgress) -> None:
    """Clears the per-epoch counters, as Lightning does when an epoch begins."""
    for progress in (batches, schedulers, optimizers):
        progress.reset_on_run()
    validation.total.reset()


_PER_EPOCH = {"epoch_loop.batch_progress": _BatchProgress, "epoch_loop.scheduler_progress": _SchedulerProgress,
              "epoch_loop.automatic_optimization.optim_progress": _OptimizationProgress,
              "epoch_loop.val_loop.batch_progress": _BatchProgress}


def _resume_epoch_end_checkpoint(checkpoint: dict[str, Any]) -> None:
    """Rewrites, in the checkpoint being loaded, the fit loop's progress of one written at a training epoch's end
    (Lightning's checkpoints where it validates once an epoch or not at all) to the progress a resume needs.

    There Lightning has counted the epoch processed but not yet completed. A fit resumed with ``max_steps`` set (as
    recon's configs set it) counts that epoch processed a second time: it trains the batches of the epoch after the
    next, its ``epoch`` runs one ahead, and where ``max_steps`` had stopped the fit inside the epoch (Lightning then
    ends the epoch early and saves), the rest of that epoch is never trained. Resumed so instead:
    - at the epoch's last batch: the epoch completed and the next one not begun, as the checkpoint recon writes
      when ``max_steps`` ends a fit there (see ``_epoch_left_open``);
    - inside the epoch: the epoch not yet processed, as a validation's checkpoint at that batch holds it.
    So is a checkpoint that a SIGTERM at an epoch's end saved with the epoch completed but its batch counters still
    at its end (resumed so, the next epoch lost that many batches). Any other state is left as it is.
    """
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = loop.get("epoch_progress")
    if epochs is None or any(key not in loop for key in _PER_EPOCH):
        return
    epochs = _Progress.from_state_dict(epochs)
    per_epoch = [kind.from_state_dict(loop[key]) for key, kind in _PER_EPOCH.items()]
    batches = per_epoch[0]
    trackers = (epochs.current, epochs.total)
    ending = all(tracker.ready == tracker.started == tracker.processed == tracker.completed + 1 for tracker in trackers)
    # completed, its counters not yet cleared: a SIGTERM during the epoch's last batch or its end hooks stops the fit
    # (and InterruptCheckpoint saves) after Lightning has counted the epoch completed
    ended = (all(tracker.ready == tracker.started == tracker.processed == tracker.completed for tracker in trackers)
             and batches.is_last_batch and batches.current.ready > 0)
    if not (ending or ended):
        return
    if ending:
        for tracker in trackers:
            if batches.is_last_batch:
                tracker.completed += 1
            else:
                tracker.processed -= 1
    if batches.is_last_batch:
        _next_epoch_not_begun(*per_epoch)
    loop["epoch_progress"] = epochs.state_dict()
    loop.update({key: progress.state_dict() for key, progress in zip(_PER_EPOCH, per_epoch, strict=True)})


def _resume_validation_in_progress(checkpoint: dict[str, Any]) -> None:
    """Rewrites, in the checkpoint being loaded, a validation that an interrupt stopped part of the way through (Ctrl-C
    inside one of its batches, SIGTERM between two) as one stopped inside its first batch, so that the resumed fit runs
    that validation again from its first batch: checkpoints that InterruptCheckpoint saved before it wrote such a stop
    so itself (:func:`recon.callbacks.interrupt._saved_as_begun`).

    Lightning "finishes" such a validation: it counts the batches done as fetched and runs as many fewer, from the
    loader's first batch, while the metrics of the batches done before the stop are in no checkpoint. The resumed
    validation's ``val/miou`` and ``val/loss`` were then over part of its items (64 of 72 after a Ctrl-C in the fifth
    of 36 batches), and ``best.ckpt`` was chosen on them. And after a SIGTERM, which Lightning lets stop a validation
    only after a whole batch, it took a validation stopped after its first batch for finished and skipped it: its
    metrics were never logged, and its score never compared for ``best.ckpt``.
    """
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    if "epoch_loop.val_loop.batch_progress" not in loop:
        return
    validation = _BatchProgress.from_state_dict(loop["epoch_loop.val_loop.batch_progress"])
    current, total = validation.current, validation.total
    between = all(tracker.ready == tracker.started == tracker.processed == tracker.completed
                  for tracker in (current, total))  # SIGTERM, after a whole batch
    inside = all(tracker.ready == tracker.started == tracker.processed + 1 == tracker.completed + 1
                 for tracker in (current, total))  # Ctrl-C, inside a batch
    if validation.is_last_batch or current.ready == 0 or not (between or inside) or (inside and current.ready == 1):
        return
    _validation_begun(validation)
    loop["epoch_loop.val_loop.batch_progress"] = validation.state_dict()


def _validation_begun(validation: _BatchProgress) -> None:
    """Sets a validation's progress to inside its first batch (begun, none done), so that a resumed fit runs the
    whole validation again: the metrics of the batches done before a stop are in no checkpoint."""
    current, total = validation.current, validation.total
    total.ready = total.started = total.ready - current.ready + 1
    total.processed = total.completed = total.completed - current.completed
    current.ready = current.started = 1
    current.processed = current.completed = 0
    validation.is_last_batch = False
