"""``recon.callbacks.ModelCheckpoint`` in a real Trainer: last.ckpt at every validation, best.ckpt at the best."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from recon.callbacks import ModelCheckpoint


class _Worsening(LightningModule):
    """A score that is best at the first validation and lower at every later one."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", -float(self.global_step))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(16, 2, generator=torch.Generator().manual_seed(0))), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(1, 2)), batch_size=1)


class _Steps(Callback):
    def __init__(self) -> None:
        self.last = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.last.append(trainer.global_step)


@pytest.mark.parametrize(("kind", "saves"), [(LightningModelCheckpoint, [2, 2]), (ModelCheckpoint, [2, 2, 4, 6, 7])])
def test_last_ckpt_is_saved_at_every_validation_improved_or_not_and_at_the_end(tmp_path, kind, saves):
    # Validations at steps 2, 4 and 6 score 0 (best), -2 and -4; the fit ends at step 7. Lightning's own class keeps
    # the last.ckpt of the best step (the row shows what recon's fixes); recon's saves it at each validation and at
    # the end (step 2 saves best.ckpt and last.ckpt).
    checkpoint = kind(dirpath=tmp_path, filename="best", monitor="val/score", mode="max", save_top_k=1,
                      save_last=True, enable_version_counter=False)
    steps = _Steps()
    trainer = Trainer(max_steps=7, val_check_interval=2, num_sanity_val_steps=0, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[checkpoint, steps])
    trainer.fit(_Worsening())
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["global_step"] == 2
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == saves[-1]
    assert steps.last == saves  # each checkpoint written once: no step saved twice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
