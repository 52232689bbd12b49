"""``recon.callbacks.ModelCheckpoint`` in a real Trainer: last.ckpt at every validation, best.ckpt at the best."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
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


@pytest.mark.parametrize(("kind", "last_step"), [(LightningModelCheckpoint, 2), (ModelCheckpoint, 6)])
def test_last_ckpt_is_saved_at_every_validation_improved_or_not(tmp_path, kind, last_step):
    # Validations at steps 2, 4 and 6 score 0 (best), -2 and -4. Lightning's own class keeps the last.ckpt of the
    # best step (the row shows what recon's fixes); recon's saves it at each validation.
    checkpoint = kind(dirpath=tmp_path, filename="best", monitor="val/score", mode="max", save_top_k=1,
                      save_last=True, enable_version_counter=False)
    trainer = Trainer(max_steps=6, val_check_interval=2, num_sanity_val_steps=0, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[checkpoint])
    trainer.fit(_Worsening())
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["global_step"] == 2
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == last_step
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
