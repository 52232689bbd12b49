"""``InterruptCheckpoint`` in a real Trainer: Ctrl-C (a real SIGINT) during an optimizer step waits for the step, then
the fit saves last.ckpt at it. The ``recon`` command's exit statuses and SIGTERM are in test_faults.py."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from recon.callbacks.interrupt import InterruptCheckpoint, forget_interrupts, interrupt_status


class _Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layers(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)), batch_size=4)


def _trainer(tmp_path, *callbacks) -> Trainer:
    # the run's own checkpoints come at step 1000 only: whatever last.ckpt holds, the interrupt saved it
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1000)
    return Trainer(max_steps=20, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path,
                   callbacks=[InterruptCheckpoint(), *callbacks, checkpoint])


@pytest.fixture
def _sigint_restored():
    previous = signal.getsignal(signal.SIGINT)
    forget_interrupts()
    yield previous
    signal.signal(signal.SIGINT, previous)  # Lightning leaves SIGINT ignored after an interrupt
    forget_interrupts()


def test_ctrl_c_during_an_optimizer_step_saves_last_ckpt_with_the_whole_step(tmp_path, _sigint_restored,
                                                                              ctrl_c_before_step, caplog):
    trainer = _trainer(tmp_path, ctrl_c_before_step(step=2))
    with pytest.raises(SystemExit), caplog.at_level(logging.INFO):  # Lightning's graceful shutdown: sys.exit(1)
        trainer.fit(_Tiny())
    # the interrupt's one line, without Lightning's "`weights_only` was not set" beside it
    assert [r.getMessage() for r in caplog.records if "step 3" in r.getMessage() or "weights_only" in r.getMessage()
            ] == [f"Ctrl-C at step 3: saved {tmp_path / 'last.ckpt'}; `--ckpt_path last` continues from it"]
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    # The step in progress (index 2) was completed, then saved: parameters, Adam's state and the step count agree.
    # Without the wait, Ctrl-C would have stopped before it (global step 2).
    assert saved["global_step"] == 3
    assert {int(state["step"]) for state in saved["optimizer_states"][0]["state"].values()} == {3}
    assert interrupt_status() == 130


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_a_backward_finishes_its_step_and_a_second_one_stops_at_once_without_saving(
        tmp_path, _sigint_restored, ctrl_c_before_step, caplog, presses):
    # Before: a Ctrl-C inside the forward or backward saved the step before with a batch started and not finished
    # (ready 3, processed 2), which Lightning's restart counted twice: the resumed fit logged every step one late.
    with pytest.raises(SystemExit), caplog.at_level(logging.WARNING):
        _trainer(tmp_path, ctrl_c_before_step(step=2, during="backward", presses=presses)).fit(_Tiny())
    said = [r.getMessage() for r in caplog.records if "Ctrl-C" in r.getMessage()]
    assert said[0] == "Ctrl-C: finishing the step in progress, then saving (Ctrl-C again stops at once, without saving)"
    assert interrupt_status() == 130
    if presses == 1:  # step 2 finished, then saved: a whole step, every counter of the batch at its end
        saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
        assert saved["global_step"] == 3 and said[1].startswith("Ctrl-C at step 3: saved")
        batches = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
        assert batches["ready"] == batches["started"] == batches["processed"] == 3
    else:  # the second press stopped the step in the middle: nothing whole to save
        assert not (tmp_path / "last.ckpt").exists()
        assert said[1] == "Ctrl-C again at step 2: stopped inside it, not saved; nothing saved"


def test_where_sigint_is_ignored_a_ctrl_c_in_a_step_is_ignored_too(tmp_path, _sigint_restored, ctrl_c_before_step):
    # a background job of a shell script starts with SIGINT ignored: holding Ctrl-C for a step caught it anyway
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trainer = _trainer(tmp_path, ctrl_c_before_step(step=2, during="backward"))
    trainer.fit(_Tiny())
    assert trainer.global_step == 20 and interrupt_status() is None
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_ctrl_c_in_an_epochs_last_step_saves_the_epoch_completed_and_the_next_not_begun(tmp_path, _sigint_restored,
                                                                                       ctrl_c_before_step):
    # 16 batches an epoch: step 15 is epoch 0's last. Saved as Lightning held it there (the batch not yet counted
    # completed, the epoch not yet processed), the resumed fit's epoch counters ran apart
    with pytest.raises(SystemExit):
        _trainer(tmp_path, ctrl_c_before_step(step=15, during="backward")).fit(_Tiny())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    loop = saved["loops"]["fit_loop"]
    assert saved["global_step"] == 16 and saved["epoch"] == 1
    assert loop["epoch_progress"]["current"] == {"ready": 1, "started": 1, "processed": 1, "completed": 1}
    assert loop["epoch_loop.batch_progress"]["current"] == {"ready": 0, "started": 0, "processed": 0, "completed": 0}
    assert loop["epoch_loop.state_dict"]["_batches_that_stepped"] == 16


class _SignalAtBatch(Callback):
    def __init__(self, batch: int, signum: int) -> None:
        self.batch, self.signum = batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_within_an_accumulation_window_an_interrupt_waits_for_the_windows_step(tmp_path, _sigint_restored, signum):
    # accumulate_grad_batches=2: batch 2 is the first of step 1's window. The fit stops after batch 3, with step 1
    # taken on both of its batches (before, SIGTERM saved step 1 after batch 2: the gradient accumulated from it was
    # in no checkpoint, and the resumed step 1 was taken on batch 3 alone)
    previous_term = signal.getsignal(signal.SIGTERM)
    trainer = _trainer(tmp_path, _SignalAtBatch(2, signum))
    trainer.accumulate_grad_batches = 2
    try:
        with pytest.raises(SystemExit):
            trainer.fit(_Tiny())
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 4
    assert interrupt_status() == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]


def test_a_fit_that_is_not_interrupted_leaves_sigint_as_it_was(tmp_path, _sigint_restored):
    trainer = _trainer(tmp_path)
    trainer.fit(_Tiny())
    assert trainer.global_step == 20
    assert signal.getsignal(signal.SIGINT) is _sigint_restored
    assert interrupt_status() is None


class _CtrlCWhilePickled:
    """Sends this process a real SIGINT when torch.save pickles it: a Ctrl-C in the middle of a checkpoint write."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return (str, ("ctrl-c",))


class _CtrlCDuringSave(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_step == self.step:
            checkpoint["ctrl_c"] = _CtrlCWhilePickled()


def test_ctrl_c_while_a_checkpoint_is_written_finishes_it_then_stops_at_the_next_step(tmp_path, _sigint_restored):
    from recon.checkpoint_io import AtomicCheckpointIO

    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2)
    trainer = Trainer(max_steps=10, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, plugins=[AtomicCheckpointIO()],
                      callbacks=[InterruptCheckpoint(), _CtrlCDuringSave(step=2), checkpoint])
    with pytest.raises(SystemExit):  # an interrupt, not torch's "unexpected pos" RuntimeError from a cut write
        trainer.fit(_Tiny())
    interrupted = torch.load(tmp_path / "epoch=0-step=2.ckpt", weights_only=False)  # whole: it loads
    assert interrupted["global_step"] == 2 and interrupted["ctrl_c"] == "ctrl-c"
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3  # saved as the fit stopped
    assert interrupt_status() == 130
    assert not list(tmp_path.glob(".*.tmp-*"))


class _Predicting(_Tiny):
    def predict_step(self, batch, batch_idx):
        return self.layers(batch[0])

    def predict_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(40, 4)), batch_size=4)


class _SigtermAtBatch(Callback):
    def __init__(self, batch: int) -> None:
        self.batch, self.seen = batch, 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen += 1
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler sets trainer.received_sigterm


def test_sigterm_stops_a_predict_between_batches_with_its_status(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    forget_interrupts()
    seen = _SigtermAtBatch(batch=2)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, callbacks=[seen, InterruptCheckpoint()])
    try:
        with pytest.raises(SystemExit):  # SIGTERMException: the recon command ends with its status, 143
            trainer.predict(_Predicting())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen.seen == 3  # of 10 batches: stopped after the one during which SIGTERM came
    assert interrupt_status() == 143
    forget_interrupts()
