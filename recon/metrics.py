"""Voxel IoU and image PSNR/SSIM per category (SoftRas/NMR's averaging, softras.md §3.5), exact under DDP; a table."""

from __future__ import annotations

import torch
from rich.table import Table
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure


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


def image_psnr(predicted: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB of images in [0, 1], one per item: ``10·log10(1 / MSE)`` over every pixel and channel.

    ``predicted``, ``target``: ``(B, C, H, W)``. The MSE is clamped at 1e-10, so identical images score
    100 dB instead of infinity (a mean over items stays finite). Returns float32 ``(B,)``.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"predicted images {tuple(predicted.shape)} and target {tuple(target.shape)} differ")
    mse = (predicted.float() - target.float()).square().flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


class ImageFidelity(Metric):
    """Mean PSNR (dB) and SSIM of rendered images per category, and their unweighted means over categories.

    The same averaging as :class:`VoxelIoU` (per item, then per category, then categories with weight 1) and
    the same DDP exactness: float64 sums ``psnr_sum``, ``ssim_sum`` and ``count`` (C,), summed across
    processes. PSNR is over the whole image, background included (0 in both the dataset and a render), so
    it is comparable between models but higher than a PSNR over the object alone; SSIM is torchmetrics'
    (Gaussian window 11, σ 1.5, data range 1), cheap at 64².

    ``update(predicted (B, 3, S, S), target (B, 3, S, S) in [0, 1], category (B,) int64)``;
    ``compute() -> {"psnr": (C,), "mpsnr": scalar, "ssim": (C,), "mssim": scalar}`` (NaN for empty categories).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    psnr_sum: Tensor
    ssim_sum: Tensor
    count: Tensor

    def __init__(self, num_categories: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_categories < 1:
            raise ValueError(f"ImageFidelity needs at least one category, got num_categories={num_categories}")
        self.num_categories = num_categories
        for name in ("psnr_sum", "ssim_sum", "count"):
            self.add_state(name, torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: Tensor, target: Tensor, category: Tensor) -> None:
        category = category.long().to(self.count.device)
        if category.numel() and (category.min() < 0 or category.max() >= self.num_categories):
            raise ValueError(
                f"category indices must lie in [0, {self.num_categories}), got {category.unique().tolist()}"
            )
        predicted, target = predicted.float().clamp(0, 1), target.float().clamp(0, 1)
        psnr = image_psnr(predicted, target)
        ssim = structural_similarity_index_measure(predicted, target, data_range=1.0, reduction="none")
        self.psnr_sum.index_add_(0, category, psnr.to(self.psnr_sum))
        self.ssim_sum.index_add_(0, category, ssim.reshape(-1).to(self.ssim_sum))
        self.count.index_add_(0, category, torch.ones_like(self.count[category]))

    def compute(self) -> dict[str, Tensor]:
        present = self.count > 0
        out = {}
        for name in ("psnr", "ssim"):
            total = getattr(self, f"{name}_sum")
            value = torch.where(present, total / self.count.clamp_min(1), torch.full_like(total, torch.nan))
            out[name] = value.float()
            out[f"m{name}"] = (value[present].mean() if present.any() else value.new_tensor(torch.nan)).float()
        return out


def iou_table(
    per_category: dict[str, float], miou: float, loss: float | None = None, psnr: dict[str, float] | None = None,
    mean_psnr: float | None = None, psnr_label: str = "PSNR (dB)",
) -> Table:
    """A rich table of voxel IoU (and PSNR, if given) per category, then the means over categories (and loss)."""
    table = Table(title="voxel IoU (test)" if psnr is None else "voxel IoU and PSNR (test)")
    table.add_column("category")
    table.add_column("IoU", justify="right")
    if psnr is not None:
        table.add_column(psnr_label, justify="right")
    for name, value in per_category.items():
        table.add_row(name, f"{value:.4f}", *([f"{psnr[name]:.2f}"] if psnr is not None and name in psnr else []))
    table.add_section()
    mean = [f"[bold]{mean_psnr:.2f}[/bold]"] if psnr is not None and mean_psnr is not None else []
    label = "mean IoU / PSNR" if mean else "mean IoU"
    table.add_row(f"[bold]{label}[/bold]", f"[bold]{miou:.4f}[/bold]", *mean)
    if loss is not None:
        table.add_row("mean loss", f"{loss:.4f}")
    return table
