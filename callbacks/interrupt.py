"""``InterruptCheckpoint``: a fit stopped by Ctrl-C or SIGTERM keeps its progress in ``last.ckpt``.

Lightning stops gracefully on Ctrl-C (``KeyboardInterrupt``) and on SIGTERM (a scheduler ending or pre-empting the
job) but saves nothing, so every step since the last validation's checkpoint would be lost: up to
``val_check_interval`` steps, 10,000 in the paper recipe. This callback then saves ``last.ckpt`` at the step
reached, through the trainer's ``CheckpointIO`` (atomic in recon: a kill during this save leaves the previous
``last.ckpt`` whole), when that step is newer than the last checkpoint, so ``--ckpt_path last`` continues from it.
A Ctrl-C during a training step takes effect when the step is whole, optimizer step included (SIGTERM always
stops between steps), so the checkpoint never holds a half-trained step, and the resumed fit logs each step at its
number: stopped inside a batch's forward or backward, Lightning's restart counted the batch twice. A second Ctrl-C
stops at once, without saving. A Ctrl-C while a checkpoint is being written
(:func:`checkpoint_writes_finish_first`) lets the file be finished, then stops the fit at its next step.

``recon predict`` stops between batches on SIGTERM as ``fit`` and ``test`` do (Lightning's predict loop does not).

It saves only in a single-process run: in a multi-process run the other processes may already be gone, and a
checkpoint needs them all; the last periodic ``last.ckpt`` is kept. :func:`interrupt_status` gives the exit
status the ``recon`` command ends with: 130 after Ctrl-C and 143 after SIGTERM, as any interrupted command, so
that a script or scheduler never takes an interrupted fit for a finished one.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_prefixed_message
from torch.optim import Optimizer
from typing_extensions import override

from recon.callbacks.checkpoint import _next_epoch_not_begun, _validation_begun

log = logging.getLogger(__name__)


def _sigterm_notifier(self: _SignalConnector, signum: int, frame: FrameType | None) -> None:
    """Lightning's SIGTERM handler without its ``torch.distributed.broadcast``: a collective run inside a signal
    handler pairs with whatever collective the other processes are in. A SIGTERM that came while rank 0 wrote a
    checkpoint, with rank 1 already waiting in the barrier after it, hung both processes for good. The flag is
    still shared: the training loop broadcasts rank 0's at every step, and each process stops there."""
    log.info(rank_prefixed_message(f"Received SIGTERM: {signum}", self.trainer.local_rank))
    if not self.received_sigterm and self.trainer.strategy.launcher is not None:
        self.trainer.strategy.launcher.kill(signum)  # the processes this one started get it too, as in Lightning
    self.received_sigterm = True


_SignalConnector._sigterm_notifier_fn = _sigterm_notifier

EXIT_STATUS = {"Ctrl-C": 130, "SIGTERM": 143}  # 128 + the signal's number
_received: list[str] = []  # the interrupts trainers stopped on since forget_interrupts(), in order
_fitting: list[InterruptCheckpoint] = []  # the callbacks of the fits training in this process now
_held: list[str] = []  # Ctrl-Cs held while a checkpoint was written, since forget_interrupts()
_PEER_GONE = re.compile(r"Connection (closed|reset) by peer")  # gloo's words when another process has ended


def interrupt_status() -> int | None:
    """The exit status for the last interrupt a trainer stopped on since :func:`forget_interrupts` (130 or 143), or
    None."""
    return EXIT_STATUS[_received[-1]] if _received else None


def forget_interrupts() -> None:
    """Start a new command: the interrupts recorded so far no longer count for :func:`interrupt_status`."""
    _received.clear()
    _held.clear()


def peer_gone(error: BaseException) -> str | None:
    """For the error of a multi-process run whose other process has ended (gloo: "Connection closed by peer"):
    ``"Ctrl-C"`` when this process held a Ctrl-C while it wrote a checkpoint (the others stopped on the same Ctrl-C
    at once, so this one's next collective found them gone: the run was interrupted, and the exit status is
    :func:`interrupt_status`'s), ``"lost"`` otherwise (a process killed or crashed); None for another error."""
    if not isinstance(error, RuntimeError) or not _PEER_GONE.search(str(error)):
        return None
    if _held:
        _received.append("Ctrl-C")
        return "Ctrl-C"
    return "lost"


@contextlib.contextmanager
def checkpoint_writes_finish_first() -> Iterator[None]:
    """Hold Ctrl-C while the block writes a checkpoint (in the main thread, under Python's default handler).

    A KeyboardInterrupt inside ``torch.save`` leaves torch's zip writer to raise a ``RuntimeError`` as it closes,
    which hides the interrupt: the fit ended in a traceback, exit status 1, instead of stopping with its progress
    saved. Held, a Ctrl-C takes effect once the file is complete: at a training fit's next step (the fit then
    stops and saves ``last.ckpt`` there; a checkpoint written at validation may not be ``last.ckpt``), or at the
    end of the block outside one. Where SIGINT is ignored (Lightning, while it shuts down) it stays so."""
    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        _held.append("Ctrl-C")
        if _fitting:
            _fitting[-1]._deferred = True  # as a Ctrl-C during a training step (held: not a second one)
        else:
            raise KeyboardInterrupt


class InterruptCheckpoint(Callback):
    """Save ``last.ckpt`` when a single-process fit is interrupted; record the interrupt of any trainer function.
    The ``recon`` command adds it to every trainer."""

    def __init__(self) -> None:
        self._saved_step: int | None = None  # the step of the newest checkpoint of this fit; None before training
        self._held: tuple[object] | None = None  # (the SIGINT handler to restore,) while Ctrl-C waits for a step
        self._deferred = False  # Ctrl-C came during a training step
        self._stepped = False  # the optimizer stepped in the batch in progress
        self._forced = False  # a second Ctrl-C stopped the step in progress: nothing whole to save
        self._step_end = False  # Ctrl-C stopped the fit at a step's end (on_train_batch_end)
        self._validation_due = False  # and a validation follows that step
        self._sigterm_held = False  # SIGTERM came within a window of accumulate_grad_batches
        self._trainer: Trainer | None = None

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._saved_step = trainer.global_step  # 0, or the step of the checkpoint the fit resumed from
        self._trainer = trainer
        _fitting.append(self)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self in _fitting:
            _fitting.remove(self)

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self._saved_step = trainer.global_step

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        # Ctrl-C waits until the step is whole. Inside the forward or backward, the checkpoint of the step before
        # held a batch started and not finished, which Lightning's restart counted twice (every later step logged
        # one late); inside the optimizer step, on CPU the parameters are updated one tensor after another, and a
        # KeyboardInterrupt between two saved a half-applied step. (SIGTERM already stops between steps.)
        self._stepped = False
        self._hold()

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        self._stepped = True  # (Ctrl-C is held since the batch's start)

    def _hold(self) -> None:
        # not where SIGINT is ignored (a background job of a script, a launcher's choice): it stays ignored
        if (self._held is None and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._held = (signal.signal(signal.SIGINT, self._defer),)

    def _defer(self, signum: int, frame: FrameType | None) -> None:
        if self._deferred:  # Ctrl-C again: the user will not wait for the step
            self._forced = True
            self._release()
            raise KeyboardInterrupt
        self._deferred = True
        if self._trainer is not None:
            _say(self._trainer, "Ctrl-C: finishing the step in progress, then saving (Ctrl-C again stops at once, "
                                "without saving)")

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # after the optimizer and the learning-rate schedule have stepped: parameters, optimizer state, schedule
        # and global step agree. Within a window of accumulate_grad_batches, Ctrl-C waits for the window's step, and
        # so does SIGTERM (Lightning stops at the batch's end; the gradients accumulated so far are in no
        # checkpoint, so the resumed window stepped on part of its batches)
        signals = trainer._signal_connector
        if signals.received_sigterm and not self._stepped:
            signals.received_sigterm, self._sigterm_held = False, True
        elif self._sigterm_held and self._stepped:
            signals.received_sigterm, self._sigterm_held = True, False
        if self._deferred and not self._stepped:
            return
        self._release()
        if self._deferred:
            self._deferred = False
            # the step is whole, so its metrics are logged too (Lightning logs them after this hook, which the
            # interrupt leaves): the curves have no hole at the step the fit stopped at
            trainer._logger_connector.update_train_step_metrics()
            epoch_loop = trainer.fit_loop.epoch_loop
            self._validation_due = epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
            self._step_end = True
            raise KeyboardInterrupt

    @override
    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        # Lightning's fit and evaluation loops stop between batches on SIGTERM; its predict loop went on to the
        # last image and ended with exit status 0, so a scheduler could not stop a long predict
        if trainer.received_sigterm and not trainer.predict_loop.batch_progress.is_last_batch:
            raise SIGTERMException

    def _release(self) -> None:
        if self._held is not None:
            previous = self._held[0]  # None when it was set outside Python
            signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
            self._held = None

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self._held = None  # Lightning now ignores SIGINT until it has shut down: leave it so
            kind = "Ctrl-C"
            if self._forced:
                _received.append(kind)
                path = _last_checkpoint_path(trainer)
                kept = f"{path} from step {self._saved_step} is kept" if path and path.is_file() else "nothing saved"
                _say(trainer, f"Ctrl-C again at step {trainer.global_step}: stopped inside it, not saved; {kept}")
                return
        else:
            self._release()
            if isinstance(exception, SIGTERMException) or trainer.received_sigterm:
                kind = "SIGTERM"
            else:
                return
        _received.append(kind)
        if trainer.state.fn != TrainerFn.FITTING or self._saved_step is None:
            return
        step = trainer.global_step
        path = _last_checkpoint_path(trainer)
        if path is None:
            _say(trainer, f"{kind} at step {step}: no ModelCheckpoint with save_last, nothing saved")
        elif step <= self._saved_step:
            _say(trainer, f"{kind} at step {step}: {path} already holds it")
        elif trainer.world_size > 1:
            kept = f"{path} from step {self._saved_step} is kept" if path.is_file() else "there is no last.ckpt yet"
            _say(trainer, f"{kind} at step {step} on {trainer.world_size} processes: not saved (the other processes "
                          f"may be gone); {kept}")
        else:
            if self._step_end:
                saved_as = _step_finished(trainer, self._validation_due)
            elif trainer.state.stage == RunningStage.VALIDATING:
                saved_as = _saved_as_begun(trainer)
            else:
                saved_as = contextlib.nullcontext()
            with saved_as:
                trainer.save_checkpoint(path, weights_only=False)  # a full checkpoint (Lightning logs its default)
            _say(trainer, f"{kind} at step {step}: saved {path}; `--ckpt_path last` continues from it")


@contextlib.contextmanager
def _step_finished(trainer: Trainer, validation_due: bool) -> Iterator[None]:
    """The loops' progress as a resume needs it, for the checkpoint of a Ctrl-C that stopped the fit at a step's
    end (the batch not yet counted completed; Lightning's restart from a batch's end counts it):
    - where a validation follows the step: as a Ctrl-C inside that validation's first batch leaves it. Saved as it
      stood, the resume took the validation for one already run and skipped it: its metrics were never logged,
      its score never compared for ``best.ckpt``;
    - at an epoch's last batch, with no validation: the epoch completed and the next one not begun, as recon's
      checkpoint where ``max_steps`` ends a fit there. Saved as it stood, the resumed epoch counters ran apart
      (``ready`` behind ``processed``).
    """
    fit_loop = trainer.fit_loop
    epoch_loop = fit_loop.epoch_loop
    batches, validation, epochs = epoch_loop.batch_progress, epoch_loop.val_loop.batch_progress, fit_loop.epoch_progress
    per_epoch = [batches, epoch_loop.scheduler_progress, epoch_loop.automatic_optimization.optim_progress, validation]
    kept = [progress.state_dict() for progress in (*per_epoch, epochs)], epoch_loop._batches_that_stepped
    ended = batches.is_last_batch or batches.current.processed >= trainer.num_training_batches
    if validation_due:
        batches.increment_completed()
        validation.reset_on_run()
        validation.increment_ready()
        validation.increment_started()
    elif ended:
        batches.increment_completed()
        epochs.increment_processed()
        epochs.increment_completed()
        _next_epoch_not_begun(*per_epoch)
        epoch_loop._batches_that_stepped += 1
    try:
        yield
    finally:
        for progress, state in zip((*per_epoch, epochs), kept[0], strict=True):
            progress.load_state_dict(state)
        epoch_loop._batches_that_stepped = kept[1]


@contextlib.contextmanager
def _saved_as_begun(trainer: Trainer) -> Iterator[None]:
    """The validation's progress as a resume needs it, for the checkpoint of an interrupt that stopped the fit inside
    one of its validations: as a Ctrl-C inside the validation's first batch leaves it, so that the resumed fit runs
    the whole validation again. Saved as it stood, Lightning "finished" the validation: it counted the batches done
    as fetched and ran as many fewer, from the first, while the metrics of those done are in no checkpoint (val/miou
    of 64 of 72 items after a Ctrl-C in the fifth of 36 batches, and best.ckpt chosen on it); and it skipped the
    validation altogether where the interrupt came between a batch's fetch and its step."""
    validation = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    kept = validation.state_dict()
    _validation_begun(validation)
    try:
        yield
    finally:
        validation.load_state_dict(kept)


def _say(trainer: Trainer, message: str) -> None:
    if trainer.is_global_zero:
        log.warning(message)


def _last_checkpoint_path(trainer: Trainer) -> Path | None:
    """Where the trainer's first ModelCheckpoint with ``save_last`` keeps ``last.ckpt``, or None."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return None
