"""``VoxelIoULogger``: the test results (voxel IoU, PSNR) as ``results.json`` + ``results.md``, a W&B table and
summary."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from recon.atomic import write_text
from recon.callbacks.run_folder import log_step, run_folder, wandb_loggers
from recon.report import markdown_table


class VoxelIoULogger(Callback):
    """At the end of ``test``: per-category voxel IoU and PSNR, their means and the losses, written and logged once.

    Reads the metrics the module logged at the end of testing (``trainer.callback_metrics``: ``test/miou``,
    ``test/iou_<category>``, ``test/psnr[_<category>]``, ``test/ssim``, ``test/loss``, ``test/loss_sil``; the
    module logs them in ``on_test_epoch_end``, which Lightning calls after the callbacks' own, so this reads
    them in ``on_test_end``) and counts the test items per category itself (summed over ranks, so the count is
    global under DDP). On rank 0 it writes, each atomically (:mod:`recon.atomic`):

    - ``<folder>/results.json``: ``iou`` {category: IoU}, ``items`` {category: count}, ``num_items``,
      ``split_items`` (the test split's items: more than ``num_items`` for a partial test, which is also said on
      the console and in ``results.md``), ``categories_without_items`` (selected categories the test split holds
      no object of: the means are over the others; said in ``results.md``), ``voxel_size`` (the resolution IoU
      was computed at: the file's),
      ``miou``, ``loss``, ``loss_sil``, ``psnr`` {category: dB}, ``mpsnr``, ``mssim``, ``psnr_colors``
      (``"predicted"``, or ``"gray"`` for a model without colours, rendered flat mid-grey), ``encoder`` (class
      name), ``encoder_class`` (import path),
      ``checkpoint`` (the ``ckpt_path`` tested, or null), ``global_step`` and ``epoch`` (the tested checkpoint's:
      testing restores weights only), ``data`` (the DataModule's file) and ``data_source`` (that file's
      ``source`` attribute: ``synthetic``, ``nmr``, ``meshes`` …), ``wandb_run`` (id, if any), ``started`` /
      ``finished`` (UTC ISO 8601);
    - ``<folder>/results.md``: the same as a markdown table;

    where ``<folder>`` is ``dirpath`` or else the run folder (:func:`~recon.callbacks.run_folder.run_folder`).
    To every ``WandbLogger``: a ``wandb.Table`` (category, iou, psnr, items; last row ``mean``) under ``key``, the
    summary keys ``test/miou``, ``test/psnr``, ``test/ssim``, ``test/loss``, ``test/loss_sil``, ``test/num_items``,
    ``test/encoder``, ``test/iou_<category>`` and ``test/psnr_<category>``, and both files as run files
    (uploaded by ``wandb sync``).

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
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0
    ) -> None:
        if self._counts is not None and "category" in batch:
            counts = torch.bincount(batch["category"].long().flatten(), minlength=len(self._counts))
            self._counts += counts[: len(self._counts)]

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._counts is not None and trainer.world_size > 1:  # every rank calls this hook: a collective is safe
            self._counts = trainer.strategy.reduce(self._counts, reduce_op="sum")

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or "test/miou" not in trainer.callback_metrics:
            return
        results = self.collect(trainer, pl_module)
        folder = Path(self.dirpath) if self.dirpath else run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "results.json", folder / "results.md"
        write_text(json_path, json.dumps(results, indent=2) + "\n")
        write_text(md_path, results_markdown(results))
        if partial := partial_test(results):
            print(f"recon test: {partial}", file=sys.stderr, flush=True)

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
            "test/data": results["data"],
            "test/data_source": results["data_source"],
        })
        for logger in loggers:
            table = wandb.Table(columns=["category", "iou", "psnr", "items"], data=rows)
            logger.log_metrics({self.key: table}, step=log_step(trainer))
            run = logger.experiment
            run.summary.update(summary)
            # The W&B run's own copies, not links to the run folder's files, which a later `recon test` in the same
            # folder rewrites: an offline run synced afterwards would otherwise upload that test's numbers as its own
            files = Path(run.dir)
            for path in (json_path, md_path):
                shutil.copyfile(path, files / path.name)
                run.save(str(files / path.name), base_path=str(files), policy="now")

    def collect(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The plain dict written to ``results.json`` (see the class docstring)."""
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")}
        names = list(pl_module.category_names)
        counts = self._counts.tolist() if self._counts is not None else []
        items = {name: int(count) for name, count in zip(names, counts, strict=False) if count}
        encoder = pl_module.generator.encoder if hasattr(pl_module, "generator") else None
        wandb_ids = [logger.version for logger in wandb_loggers(trainer)]
        trained = checkpoint_progress(trainer.ckpt_path)
        source = getattr(trainer.datamodule, "data_source", None) or {}
        split_items = getattr(trainer.datamodule, "split_items", None)
        total = split_items("test") if callable(split_items) else None
        empty = getattr(trainer.datamodule, "empty_categories", None)
        layout = getattr(getattr(trainer.datamodule, "info", None), "layout", None)
        return {
            "iou": {name: metrics[f"test/iou_{name}"] for name in names if f"test/iou_{name}" in metrics},
            "miou": _finite(metrics["test/miou"]),
            "loss": _finite(metrics.get("test/loss", math.nan)),
            "loss_sil": _finite(metrics.get("test/loss_sil", math.nan)),
            "psnr": {name: metrics[f"test/psnr_{name}"] for name in names if f"test/psnr_{name}" in metrics},
            "mpsnr": _finite(metrics.get("test/psnr", math.nan)),
            "mssim": _finite(metrics.get("test/ssim", math.nan)),
            "psnr_colors": "predicted" if getattr(pl_module, "has_colors", False) else "gray",
            "items": items,
            "num_items": int(sum(items.values())),
            # the test split's items in the chosen categories: fewer scored (limit_test_batches) is a partial test
            "split_items": total,
            # selected categories the test split holds no object of: the means are over the others
            "categories_without_items": empty("test") if callable(empty) else [],
            "voxel_size": getattr(layout, "voxel_size", None),
            "encoder": type(encoder).__name__ if encoder is not None else None,
            "encoder_class": None if encoder is None else f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
            "global_step": trained.get("global_step", trainer.global_step),
            "epoch": trained.get("epoch", trainer.current_epoch),
            "data": source.get("path") or str(getattr(trainer.datamodule, "path", None) or "") or None,
            "data_source": source.get("source"),
            "wandb_run": wandb_ids[0] if wandb_ids else None,
            "started": self._started,
            "finished": _now(),
        }


def checkpoint_progress(path: str | os.PathLike[str] | None) -> dict[str, int]:
    """``global_step`` and ``epoch`` of a checkpoint file, read without loading its tensors (memory-mapped)."""
    if not path or not Path(path).is_file():
        return {}
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {key: int(checkpoint[key]) for key in ("global_step", "epoch") if key in checkpoint}


def partial_test(results: dict[str, Any]) -> str | None:
    """What a test that scored only part of its split (``trainer.limit_test_batches``) should say, or None."""
    total = results.get("split_items")
    if total is None or results["num_items"] >= total:
        return None
    return (f"scored {results['num_items']} of the test split's {total} items (trainer.limit_test_batches): these "
            "are not the whole test split's numbers")


def results_markdown(results: dict[str, Any]) -> str:
    """``results`` (as :meth:`VoxelIoULogger.collect` returns) → a markdown report with one table."""
    lines = [
        "# recon test results",
        "",
        f"encoder `{results['encoder']}` · checkpoint `{results['checkpoint'] or 'none'}` · "
        f"{results['num_items']} test items · finished {results['finished']}",
        "",
        f"data `{results.get('data') or 'unknown'}` (source: {results.get('data_source') or 'unknown'})"
        + (f" · voxel IoU at {results['voxel_size']}³" if results.get("voxel_size") else ""),
        "",
    ]
    if partial := partial_test(results):
        lines += [f"**Partial test:** {partial}.", ""]
    if missing := results.get("categories_without_items"):
        lines += [f"**Categories without test items:** {', '.join(missing)}: the test split holds no object of "
                  f"them, and the means are over the other {len(results['iou'])}.", ""]
    psnr = results.get("psnr") or {}
    rows = [[name, _format(value), _format(psnr.get(name), 2), str(results["items"].get(name, 0))]
            for name, value in results["iou"].items()]
    rows.append(["**mean**", f"**{_format(results['miou'])}**", f"**{_format(results.get('mpsnr'), 2)}**",
                 str(results["num_items"])])
    lines += markdown_table(["category", "IoU", "PSNR (dB)", "items"], rows)
    lines += ["", f"test loss {_format(results['loss'])} (silhouette term {_format(results['loss_sil'])})", ""]
    if results.get("mpsnr") is not None:
        how = {"gray": "the mesh rendered flat mid-grey (the model predicts no colours)",
               "predicted": "the mesh rendered with its predicted colours"}
        how = how.get(results.get("psnr_colors"), "the mesh rendered")
        lines += [f"PSNR: {how} in each item's held view b against that view's image, dataset convention "
                  f"(inverted colour on black); mean SSIM {_format(results.get('mssim'))}.", ""]
    return "\n".join(lines)


def _finite(value: Any) -> float | None:
    """A float, or ``None`` for NaN/inf (an empty test set): JSON has no NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def _format(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
