"""``VoxelIoULogger``: the test results (voxel IoU, PSNR) as ``results.json`` + ``results.md``, a W&B table and summary."""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from recon.callbacks.run_folder import run_folder, wandb_loggers


class VoxelIoULogger(Callback):
    """At the end of ``test``: per-category voxel IoU and PSNR, their means and the losses, written and logged once.

    Reads ``pl_module.test_results`` (set by :class:`~recon.module.ReconModule` in ``on_test_epoch_end``,
    which Lightning calls after the callbacks' own, so this reads it in ``on_test_end``) and counts the test
    items per category itself (summed over ranks, so the count is global under DDP). On rank 0 it writes,
    each atomically (temporary file, then ``os.replace``):

    - ``<folder>/results.json``: ``iou`` {category: IoU}, ``items`` {category: count}, ``num_items``,
      ``miou``, ``loss``, ``loss_sil``, ``psnr`` {category: dB}, ``mpsnr``, ``mssim``, ``psnr_colors``
      (``"predicted"``, or ``"gray"`` for a model without colours, rendered flat mid-grey), ``encoder`` (class name), ``encoder_class`` (import path),
      ``checkpoint`` (the ``ckpt_path`` tested, or null), ``global_step``, ``epoch``, ``data`` (the
      DataModule's ``path`` if it has one), ``wandb_run`` (id, if any), ``started`` / ``finished`` (UTC ISO 8601);
    - ``<folder>/results.md``: the same as a markdown table;

    where ``<folder>`` is ``dirpath`` or else the run folder (:func:`~recon.callbacks.run_folder.run_folder`).
    To every ``WandbLogger``: a ``wandb.Table`` (category, iou, psnr, items; last row ``mean``) under ``key``, the
    summary keys ``test/miou``, ``test/psnr``, ``test/ssim``, ``test/loss``, ``test/loss_sil``, ``test/num_items``,
    ``test/encoder``, ``test/iou_<category>`` and ``test/psnr_<category>``, and both files as run files (uploaded by ``wandb sync``).

    Args:
        dirpath: folder of the two files; ``None`` for the run folder.
        key: the W&B key of the table.
    """

    def __init__(self, dirpath: str | None = None, key: str = "test/iou_table") -> None:
        super().__init__()
        self.dirpath = dirpath
        self.key = key
        self._counts: torch.Tensor | None = None
        self._started: str | None = None

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = _now()
        self._counts = torch.zeros(max(len(pl_module.category_names), 1), dtype=torch.long, device=pl_module.device)

    @override
    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._counts is not None and "category" in batch:
            self._counts += torch.bincount(batch["category"].long().flatten(), minlength=len(self._counts))[: len(self._counts)]

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._counts is not None and trainer.world_size > 1:  # every rank calls this hook: a collective is safe
            self._counts = trainer.strategy.reduce(self._counts, reduce_op="sum")

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not getattr(pl_module, "test_results", None):
            return
        results = self.collect(trainer, pl_module)
        folder = Path(self.dirpath) if self.dirpath else run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "results.json", folder / "results.md"
        _write_text(json_path, json.dumps(results, indent=2) + "\n")
        _write_text(md_path, results_markdown(results))

        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        import wandb

        psnr = results["psnr"]
        rows = [[name, value, psnr.get(name), results["items"].get(name, 0)] for name, value in results["iou"].items()]
        rows.append(["mean", results["miou"], results["mpsnr"], results["num_items"]])
        summary = {f"test/iou_{name}": value for name, value in results["iou"].items()}
        summary.update({f"test/psnr_{name}": value for name, value in psnr.items()})
        summary.update({
            "test/miou": results["miou"],
            "test/psnr": results["mpsnr"],
            "test/ssim": results["mssim"],
            "test/loss": results["loss"],
            "test/loss_sil": results["loss_sil"],
            "test/num_items": results["num_items"],
            "test/encoder": results["encoder"],
        })
        for logger in loggers:
            logger.log_metrics({self.key: wandb.Table(columns=["category", "iou", "psnr", "items"], data=rows)}, step=trainer.global_step)
            run = logger.experiment
            run.summary.update(summary)
            for path in (json_path, md_path):
                run.save(str(path), base_path=str(folder), policy="now")

    def collect(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The plain dict written to ``results.json`` (see the class docstring)."""
        tested = dict(pl_module.test_results)
        names = list(pl_module.category_names)
        counts = self._counts.tolist() if self._counts is not None else []
        items = {name: int(count) for name, count in zip(names, counts, strict=False) if count}
        encoder = getattr(getattr(pl_module, "generator", None), "encoder", None)
        wandb_ids = [logger.version for logger in wandb_loggers(trainer)]
        return {
            "iou": {name: float(value) for name, value in tested.get("iou", {}).items()},
            "miou": _finite(tested["miou"]),
            "loss": _finite(tested["loss"]),
            "loss_sil": _finite(tested["loss_sil"]),
            "psnr": {name: float(value) for name, value in tested.get("psnr", {}).items()},
            "mpsnr": _finite(tested.get("mpsnr", math.nan)),
            "mssim": _finite(tested.get("mssim", math.nan)),
            "psnr_colors": tested.get("psnr_colors"),
            "items": items,
            "num_items": int(sum(items.values())),
            "encoder": type(encoder).__name__ if encoder is not None else None,
            "encoder_class": f"{type(encoder).__module__}.{type(encoder).__qualname__}" if encoder is not None else None,
            "checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
            # The tested checkpoint's training step (testing restores weights only: the trainer's step is 0).
            "global_step": int(getattr(pl_module, "checkpoint_step", None) or trainer.global_step),
            "epoch": int(getattr(pl_module, "checkpoint_epoch", None) or trainer.current_epoch),
            "data": str(getattr(trainer.datamodule, "path", None) or "") or None,
            "wandb_run": wandb_ids[0] if wandb_ids else None,
            "started": self._started,
            "finished": _now(),
        }


def results_markdown(results: dict[str, Any]) -> str:
    """``results`` (as :meth:`VoxelIoULogger.collect` returns) → a markdown report with one table."""
    lines = [
        "# recon test results",
        "",
        f"encoder `{results['encoder']}` · checkpoint `{results['checkpoint'] or 'none'}` · {results['num_items']} test items"
        f" · finished {results['finished']}",
        "",
        "| category | IoU | PSNR (dB) | items |",
        "|---|---:|---:|---:|",
    ]
    psnr = results.get("psnr") or {}
    lines += [
        f"| {name} | {_format(value)} | {_format(psnr.get(name), 2)} | {results['items'].get(name, 0)} |"
        for name, value in results["iou"].items()
    ]
    lines.append(
        f"| **mean** | **{_format(results['miou'])}** | **{_format(results.get('mpsnr'), 2)}** | {results['num_items']} |"
    )
    lines += ["", f"test loss {_format(results['loss'])} (silhouette term {_format(results['loss_sil'])})", ""]
    if results.get("mpsnr") is not None:
        how = {"gray": "the mesh rendered flat mid-grey (the model predicts no colours)",
               "predicted": "the mesh rendered with its predicted colours"}.get(results.get("psnr_colors"), "the mesh rendered")
        lines += [f"PSNR: {how} in each item's held view b against that view's image, dataset convention "
                  f"(inverted colour on black); mean SSIM {_format(results.get('mssim'))}.", ""]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then renamed over it."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; results are meant to be read by others
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _finite(value: Any) -> float | None:
    """A float, or ``None`` for NaN/inf (an empty test set): JSON has no NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def _format(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
