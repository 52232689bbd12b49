"""The training progress bar of runs that stop at ``max_steps``."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar
from typing_extensions import override


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar with the step in the training bar's label: ``Epoch 3 · step 250/1000``.

    recon's runs stop at ``trainer.max_steps`` and leave ``max_epochs`` unset, which Lightning counts as -1 and
    its bar shows as ``Epoch 3/-2``; an epoch bound is still shown where one is set (``Epoch 3/9``). The CLI puts
    this bar in place of Lightning's default one; a progress bar the config names is kept as it is.
    """

    @override
    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        text = f"Epoch {current_epoch}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            text += f"/{trainer.max_epochs - 1}"
        if trainer.max_steps > 0:
            text += f" · step {trainer.global_step}/{trainer.max_steps}"
        return f"{text:{len(self.validation_description)}}"  # as Lightning: no flicker against "Validation"

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.progress is not None and self.train_progress_bar_id is not None and trainer.max_steps > 0:
            self.progress.update(self.train_progress_bar_id,
                                 description=self._get_train_description(trainer.current_epoch))
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
