"""``MeshWriter``: files of predicted meshes, for ``recon predict`` and, when asked, for ``recon test``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from rich.console import Console
from rich.markup import escape
from typing_extensions import override

from recon.atomic import remove_stale_temporaries, write_text
from recon.models import PredictedMesh
from recon.prediction import preview_renderer, write_prediction
from recon.step import StepOutput

MANIFEST = "predictions.json"  # what the last complete predict into a folder wrote, written last


class MeshWriter(BasePredictionWriter):
    """Write what the model predicts as mesh files (OBJ and GLB; PLY too with colours).

    - ``predict``: per input image ``<name>.obj``, ``.glb`` (``.ply``) and a ``<name>.png`` preview (the input,
      then the mesh from four sides) in ``dirpath`` (default ``<default_root_dir>/predictions``),
      ``skipped.txt`` (file, tab, reason per line) when some input images could not be read, and, written last,
      ``predictions.json`` (:data:`MANIFEST`): the checkpoint, each input's name and files. A predict into a folder
      removes the last one's manifest before its first file, and replaces each name's files together
      (:func:`~recon.prediction.write_prediction`): after a killed run, a folder without a manifest holds no name
      whose files come from two runs, and one whose manifest names this run's checkpoint holds all of its outputs
      (files of other names, from earlier runs with other images, stay);
    - ``test``: only with a ``dirpath``: the mesh from view a of every test item as
      ``<dirpath>/test/<category>/<object>_v<view>.obj`` (and ``.glb``/``.ply``), from the step's outputs.

    The ``recon`` command adds one to every run; set its folder with ``--export.dirpath out/``. Every file is
    written atomically; each process writes its own items.
    """

    def __init__(self, dirpath: str | None = None, previews: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.dirpath = dirpath
        self.previews = previews
        self._folder: Path | None = None
        self._preview = None
        self._colors = False  # whether the model predicts colours (a .ply per input)
        self._written: list[str] = []  # the names whose outputs this process wrote

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "predict":
            self._folder = Path(self.dirpath or Path(trainer.default_root_dir) / "predictions")
            self._preview = preview_renderer() if self.previews else None
            self._written = []
        else:
            self._folder = Path(self.dirpath) if self.dirpath else None
        if self._folder is not None and trainer.is_global_zero:
            # files a killed predict or test was writing (hidden .NAME.tmp-PID): those of live processes stay
            for folder in (self._folder, *self._folder.glob("test/*")):
                if folder.is_dir():
                    remove_stale_temporaries(folder)

    @override
    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        if not isinstance(prediction, PredictedMesh) or self._folder is None:
            return
        vertices, colors = prediction
        self._colors = colors is not None
        if not self._written:  # the last predict's manifest: from now on the outputs here are not (all) its own
            (self._folder / MANIFEST).unlink(missing_ok=True)  # (each process, before its first file)
        for index, name in enumerate(batch["name"]):
            color = colors[index] if colors is not None else None
            write_prediction(self._folder, name, vertices[index], pl_module.faces, batch["images"][index],
                             self._preview, color)
            self._written.append(name)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._folder is None:
            return
        inputs = _predicted_images(trainer, self._written)  # every process takes part
        if not trainer.is_global_zero:
            return
        skipped = _skipped_images(trainer)
        listing = self._folder / "skipped.txt"
        if skipped:
            write_text(listing, "".join(f"{file}\t{reason}\n" for file, reason in skipped))
        else:
            listing.unlink(missing_ok=True)  # a list from an earlier run into this folder
        total = sum(len(getattr(loader.dataset, "files", ())) for loader in _loaders(trainer))
        suffixes = [".obj", ".glb", *([".ply"] if self._colors else []),
                    *([".png"] if self._preview is not None else [])]
        manifest = {"checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
                    "predicted": len(inputs), "images": total,
                    "outputs": {name: {"image": str(file), "files": [f"{name}{suffix}" for suffix in suffixes]}
                                for file, name in inputs},
                    "skipped": [{"image": str(file), "reason": reason} for file, reason in skipped]}
        self._folder.mkdir(parents=True, exist_ok=True)
        write_text(self._folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        console = Console()
        console.print(f"predicted meshes written to [bold]{escape(str(self._folder))}[/bold]")
        if len(inputs) < total:
            console.print(f"predicted {len(inputs)} of the {total} images (--trainer.limit_predict_batches); "
                          f"{MANIFEST} lists those written", highlight=False)
        if skipped:
            console.print(f"skipped {len(skipped)} unusable images (unreadable, or with no object), listed in "
                          f"{escape(str(listing))}", highlight=False)

    @override
    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._folder is None or not isinstance(outputs, StepOutput):
            return
        names = pl_module.category_names
        for index, mesh in enumerate(outputs.vertices):
            category = names[int(batch["category"][index])]
            name = f"{int(batch['object_index'][index]):05d}_v{int(batch['views_a'][index]):02d}"
            color = outputs.colors[index] if outputs.colors is not None else None
            write_prediction(self._folder / "test" / category, name, mesh, pl_module.faces, colors=color)


def _loaders(trainer: Trainer) -> list[Any]:
    loaders = trainer.predict_dataloaders
    loaders = loaders if isinstance(loaders, Sequence) else [loaders]
    return [loader for loader in loaders if loader is not None]


def _skipped_images(trainer: Trainer) -> list[tuple[Path, str]]:
    """The ``(file, reason)`` of every input image the predict loaders left out as unreadable."""
    return [item for loader in _loaders(trainer) for item in getattr(loader.dataset, "skipped", [])]


def _predicted_images(trainer: Trainer, written: list[str]) -> list[tuple[Path, str]]:
    """``(file, name)`` of the input images whose outputs this predict wrote (``written``: this process's names;
    under DDP every process's are gathered), in the inputs' order."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[list[str] | None] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, written)
        written = [name for part in gathered for name in part or []]
    done = set(written)
    return [(file, name) for loader in _loaders(trainer)
            for file, name in zip(getattr(loader.dataset, "files", []), getattr(loader.dataset, "names", []),
                                  strict=True) if name in done]
