"""A fixed set of validation objects, captured every N validation runs for callbacks that log pictures of them."""

from __future__ import annotations

import re
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from recon.step import StepOutput

# the batch entries kept for logging (others, such as lists of names, are dropped)
SAMPLE_KEYS = ("images_a", "images_b", "eyes_a", "eyes_b", "views_a", "views_b", "voxels", "category", "object_index")


class ValidationSamplesCallback(Callback):
    """Base of :class:`SilhouetteLogger` and :class:`MeshLogger`: the first ``num_samples`` validation items.

    Validation order is deterministic (the DataModule does not shuffle it), so the first items of the first
    validation batches on rank 0 are the same objects and views at every validation: a fixed set whose
    pictures can be compared across epochs and runs. They are captured on rank 0 only, at the first
    validation run and then every ``every_n_epochs``-th one (sanity checks excluded), and handed to
    :meth:`log_samples` at the end of that validation run, under ``torch.no_grad()`` with the module in eval
    mode. Training steps are never touched; other ranks only count validation runs.

    The count of validation runs is saved in checkpoints, so a resumed run keeps the same schedule.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 8) -> None:
        super().__init__()
        if every_n_epochs < 1 or num_samples < 1:
            raise ValueError(
                f"{type(self).__name__}: every_n_epochs and num_samples must be >= 1, got {every_n_epochs}, "
                f"{num_samples}"
            )
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self._validations = 0
        self._active = False
        self._parts: list[dict[str, Tensor]] = []

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        due = self._validations % self.every_n_epochs == 0
        self._active = trainer.is_global_zero and not trainer.sanity_checking and due
        self._parts = []

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        have = sum(len(part["images_a"]) for part in self._parts)
        if not self._active or dataloader_idx != 0 or have >= self.num_samples:
            return
        take = self.num_samples - have
        part = {key: batch[key][:take] for key in SAMPLE_KEYS if key in batch}
        part.update(step_samples(outputs, take))
        # clone: a slice would keep the whole batch alive until the end of the validation run
        self._parts.append({key: value.detach().clone() for key, value in part.items()})

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if self._active and self._parts:
            samples = {key: torch.cat([part[key] for part in self._parts]) for key in self._parts[0]}
            with torch.no_grad():
                self.log_samples(trainer, pl_module, samples)
        self._active, self._parts = False, []

    def log_samples(self, trainer: Trainer, pl_module: LightningModule, samples: dict[str, Tensor]) -> None:
        """Log pictures of ``samples``: N ≤ ``num_samples`` items of the batch entries of :data:`SAMPLE_KEYS`
        and of the step's outputs (see :func:`step_samples`)."""
        raise NotImplementedError

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"validations": self._validations}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._validations = int(state_dict.get("validations", 0))


def step_samples(outputs: Any, take: int) -> dict[str, Tensor]:
    """The first ``take`` items of what a validation step returned (a :class:`~recon.module.StepOutput`):

    ``vertices`` (N, V, 3), ``colors`` (N, V|F, 3, colour models), ``silhouette_a`` / ``silhouette_b``
    (N, S, S): the mesh from view a seen from view a / from view b, and ``render_a`` / ``render_b``
    (N, 4, S, S) the same as lit RGBA (colour models). Outputs of another kind give nothing.
    """
    if not isinstance(outputs, StepOutput):
        return {}
    part = {"vertices": outputs.vertices[:take],
            "silhouette_a": outputs.group(outputs.silhouettes, "aa")[:take],
            "silhouette_b": outputs.group(outputs.silhouettes, "ab")[:take]}
    if outputs.colors is not None:
        part["colors"] = outputs.colors[:take]
    if outputs.rgba is not None:
        part["render_a"] = outputs.group(outputs.rgba, "aa")[:take]
        part["render_b"] = outputs.group(outputs.rgba, "ab")[:take]
    return part


def sample_names(samples: dict[str, Tensor], category_names: list[str]) -> list[str]:
    """One file-name-safe label per sample: ``<row>_<category>_<object>_v<view>`` (``03_chair_00012_v05``)."""
    names = []
    for row in range(len(samples["images_a"])):
        label = f"{row:02d}"
        if "category" in samples:
            index = int(samples["category"][row])
            name = category_names[index] if index < len(category_names) else str(index)
            label += "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", name)
        if "object_index" in samples:
            label += f"_{int(samples['object_index'][row]):05d}"
        if "views_a" in samples:
            label += f"_v{int(samples['views_a'][row]):02d}"
        names.append(label)
    return names


def stamp(trainer: Trainer) -> str:
    """``e<epoch>_s<step>`` (``e003_s0001200``): names the files of one validation run."""
    return f"e{trainer.current_epoch:03d}_s{trainer.global_step:07d}"
