"""Voxel IoU per category, as SoftRas/NMR evaluate (softras.md §3.5), exact under DDP; and its table."""

from __future__ import annotations

import torch
from rich.table import Table
from torch import Tensor
from torchmetrics import Metric


def voxel_iou(predicted: Tensor, target: Tensor) -> Tensor:
    """IoU of boolean voxel grids, one per item: ``Σ(gt ∧ pred) / Σ(gt ∨ pred)``.

    ``predicted``, ``target``: ``(B, S, S, S)`` bool (or 0/1). Returns float32 ``(B,)``. Two empty grids
    agree perfectly and score 1 (SoftRas would divide 0 by 0; no ShapeNet or synthetic object is empty, so
    this never changes a reported number).
    """
    if predicted.shape != target.shape:
        raise ValueError(f"predicted voxels {tuple(predicted.shape)} and target {tuple(target.shape)} differ")
    predicted, target = predicted.bool().flatten(1), target.bool().flatten(1)
    intersection = (predicted & target).sum(1).float()
    union = (predicted | target).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


class VoxelIoU(Metric):
    """Mean voxel IoU per category and their unweighted mean over categories (the papers' "mean IoU").

    States ``iou_sum (C,)`` and ``count (C,)`` are summed across processes, so the result is exact under DDP
    as long as each item is seen once (recon's DataModule shards without repeats). Per category the value is
    the mean over all its (object, view) items — 24 per object on ShapeNet — and the mean IoU averages the
    categories that have items, each with weight 1 whatever its size (SoftRas/NMR's evaluation).

    ``update(predicted (B, S, S, S) bool, target (B, S, S, S) bool, category (B,) int64)``;
    ``compute() -> {"iou": (C,) per-category mean (NaN where a category has no item), "miou": scalar}``.
    Values are fractions in [0, 1] (the papers print them ×100).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    iou_sum: Tensor
    count: Tensor

    def __init__(self, num_categories: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_categories < 1:
            raise ValueError(f"VoxelIoU needs at least one category, got num_categories={num_categories}")
        self.num_categories = num_categories
        # float64 sums: 13 categories × ~1e4 items would lose digits of the fourth decimal in float32
        self.add_state("iou_sum", torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: Tensor, target: Tensor, category: Tensor) -> None:
        category = category.long().to(self.count.device)
        if category.numel() and (category.min() < 0 or category.max() >= self.num_categories):
            raise ValueError(
                f"category indices must lie in [0, {self.num_categories}), got {category.unique().tolist()}"
            )
        iou = voxel_iou(predicted, target).to(self.iou_sum)
        self.iou_sum.index_add_(0, category, iou)
        self.count.index_add_(0, category, torch.ones_like(iou))

    def compute(self) -> dict[str, Tensor]:
        present = self.count > 0
        iou = torch.where(present, self.iou_sum / self.count.clamp_min(1), torch.full_like(self.count, torch.nan))
        miou = iou[present].mean() if present.any() else torch.tensor(torch.nan, dtype=iou.dtype)
        return {"iou": iou.float(), "miou": miou.float()}


def iou_table(per_category: dict[str, float], miou: float, loss: float | None = None) -> Table:
    """A rich table of voxel IoU per category, then the mean over categories (and the mean loss)."""
    table = Table(title="voxel IoU (test)")
    table.add_column("category")
    table.add_column("IoU", justify="right")
    for name, value in per_category.items():
        table.add_row(name, f"{value:.4f}")
    table.add_section()
    table.add_row("[bold]mean IoU[/bold]", f"[bold]{miou:.4f}[/bold]")
    if loss is not None:
        table.add_row("mean loss", f"{loss:.4f}")
    return table
