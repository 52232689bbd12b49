"""Voxel IoU and image PSNR/SSIM per category, averaged as in docs/conventions.md#evaluation; a table."""

from __future__ import annotations

import torch
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


class CategoryMeans(Metric):
    """Per-item scores averaged per category, then over categories with weight 1 each (SoftRas/NMR's averaging).

    A subclass names its scores in ``scores``; for each score ``x`` it keeps a float64 state ``x_sum (C,)``,
    beside one ``count (C,)``. All are summed across processes, so the result is exact under DDP as long as
    each item is seen once (recon's DataModule shards without repeats). ``compute()`` gives, per score,
    ``x`` (C,) the per-category mean (NaN where a category has no item) and ``mx`` the unweighted mean over the
    categories that have items. See ``docs/conventions.md#evaluation``.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    scores: tuple[str, ...] = ()
    count: Tensor

    def __init__(self, num_categories: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_categories < 1:
            name = type(self).__name__
            raise ValueError(f"{name} needs at least one category, got num_categories={num_categories}")
        self.num_categories = num_categories
        # float64 sums: 13 categories × ~1e4 items would lose digits of the fourth decimal in float32
        for name in (*(f"{score}_sum" for score in self.scores), "count"):
            self.add_state(name, torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")

    def _check_categories(self, category: Tensor) -> Tensor:
        """``category (B,)`` as int64 on the states' device; a clear error for an index outside [0, C)."""
        category = category.long().to(self.count.device)
        if category.numel() and (category.min() < 0 or category.max() >= self.num_categories):
            raise ValueError(
                f"category indices must lie in [0, {self.num_categories}), got {category.unique().tolist()}"
            )
        return category

    def _accumulate(self, category: Tensor, **scores: Tensor) -> None:
        """Add per-item ``scores`` (each (B,)) of items in ``category (B,)`` (already checked)."""
        for name, value in scores.items():
            total = getattr(self, f"{name}_sum")
            total.index_add_(0, category, value.reshape(-1).to(total))
        self.count.index_add_(0, category, torch.ones_like(self.count[category]))

    def compute(self) -> dict[str, Tensor]:
        present = self.count > 0
        out = {}
        for name in self.scores:
            total = getattr(self, f"{name}_sum")
            value = torch.where(present, total / self.count.clamp_min(1), torch.full_like(total, torch.nan))
            out[name] = value.float()
            out[f"m{name}"] = (value[present].mean() if present.any() else value.new_tensor(torch.nan)).float()
        return out


class VoxelIoU(CategoryMeans):
    """Mean voxel IoU per category and their unweighted mean over categories (the papers' "mean IoU").

    Per category the value is the mean over all its (object, view) items — 24 per object on ShapeNet — and
    the mean IoU averages the categories that have items, each with weight 1 whatever its size.

    ``update(predicted (B, S, S, S) bool, target (B, S, S, S) bool, category (B,) int64)``;
    ``compute() -> {"iou": (C,) per-category mean (NaN where a category has no item), "miou": scalar}``.
    Values are fractions in [0, 1] (the papers print them ×100).
    """

    scores = ("iou",)
    iou_sum: Tensor

    def update(self, predicted: Tensor, target: Tensor, category: Tensor) -> None:
        category = self._check_categories(category)
        self._accumulate(category, iou=voxel_iou(predicted, target))


def image_psnr(predicted: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB of images in [0, 1], one per item: ``10·log10(1 / MSE)`` over every pixel and channel.

    ``predicted``, ``target``: ``(B, C, H, W)``. The MSE is clamped at 1e-10, so identical images score
    100 dB instead of infinity (a mean over items stays finite). Returns float32 ``(B,)``.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"predicted images {tuple(predicted.shape)} and target {tuple(target.shape)} differ")
    mse = (predicted.float() - target.float()).square().flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


class ImageFidelity(CategoryMeans):
    """Mean PSNR (dB) and SSIM of rendered images per category, and their unweighted means over categories.

    The same averaging and DDP exactness as :class:`VoxelIoU`. PSNR is over the whole image, background
    included (0 in both the dataset and a render), so it is comparable between models but higher than a PSNR
    over the object alone; SSIM is torchmetrics' (Gaussian window 11, σ 1.5, data range 1), cheap at 64².

    ``update(predicted (B, 3, S, S), target (B, 3, S, S) in [0, 1], category (B,) int64)``;
    ``compute() -> {"psnr": (C,), "mpsnr": scalar, "ssim": (C,), "mssim": scalar}`` (NaN for empty categories).
    """

    scores = ("psnr", "ssim")
    psnr_sum: Tensor
    ssim_sum: Tensor

    def update(self, predicted: Tensor, target: Tensor, category: Tensor) -> None:
        category = self._check_categories(category)
        predicted, target = predicted.float().clamp(0, 1), target.float().clamp(0, 1)
        ssim = structural_similarity_index_measure(predicted, target, data_range=1.0, reduction="none")
        self._accumulate(category, psnr=image_psnr(predicted, target), ssim=ssim)
