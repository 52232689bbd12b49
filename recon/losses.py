"""The losses recon trains with: SoftRas's silhouette IoU (``examples/recon/losses.py``) and the colour loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

ColorLoss = Literal["l1", "l2"]


def silhouette_iou(rendered: Tensor, reference: Tensor, eps: float = 1e-6) -> Tensor:
    """Soft IoU of silhouettes, one value per image.

    ``IoU = Σ R·T / (Σ (R + T − R·T) + eps)`` over the pixels, with ``rendered`` R and ``reference`` T of shape
    ``(N, H, W)`` (or ``(N, ...)``), values in [0, 1]. For binary masks it is the usual intersection over
    union; for soft ones R·T and R + T − R·T are the probabilistic "and" and "or". ``eps`` (SoftRas's 1e-6)
    only guards two empty silhouettes (0/0): it is negligible next to any non-empty union (≥ ~1 pixel).
    Returns ``(N,)``.
    """
    if rendered.shape != reference.shape:
        raise ValueError(f"rendered {tuple(rendered.shape)} and reference {tuple(reference.shape)} differ")
    dims = tuple(range(1, rendered.ndim))
    intersection = (rendered * reference).sum(dims)
    union = (rendered + reference - rendered * reference).sum(dims)
    return intersection / (union + eps)


def silhouette_iou_loss(rendered: Tensor, reference: Tensor, eps: float = 1e-6) -> Tensor:
    """``1 − mean(IoU)`` over the ``N`` images of ``(N, H, W)`` silhouettes: a scalar in [0, 1]."""
    return 1 - silhouette_iou(rendered, reference, eps).mean()


def dataset_images(rendered: Tensor) -> Tensor:
    """A renderer's RGBA ``(N, 4, S, S)`` → the same images in the dataset's storage (docs/conventions.md#dataset).

    NMR stores ``1 − (colour over white)``: with coverage α that is ``1 − (rgb·α + 1·(1 − α)) = (1 − rgb)·α``,
    so the background is 0 and the inverted colour is premultiplied by α; alpha stays last. The renderer's
    soft RGB is the colour of the nearby faces wherever any face is within the culling radius (its background
    weight underflows there), so α, not the RGB, carries the soft edge, as the dataset's anti-aliased coverage does.
    """
    rgb, alpha = rendered[:, :3], rendered[:, 3:]
    return torch.cat([(1 - rgb) * alpha, alpha], dim=1)


def color_loss(rendered: Tensor, reference: Tensor, kind: ColorLoss = "l1") -> Tensor:
    """Mean L1 (or squared, ``kind="l2"``) difference of the RGB of two image batches, over every pixel.

    ``rendered``: the renderer's RGBA ``(N, 4, S, S)`` (colour, not inverted); ``reference``: ``(N, 4, S, S)`` or
    ``(N, 3, S, S)`` in the dataset's convention (inverted RGB premultiplied by the mask). The render is
    converted with :func:`dataset_images` first, so background pixels agree at 0. Returns a scalar.
    """
    predicted = dataset_images(rendered)[:, :3]
    target = reference[:, :3].to(predicted)
    if predicted.shape != target.shape:
        raise ValueError(f"rendered {tuple(predicted.shape)} and reference {tuple(target.shape)} RGB differ")
    difference = predicted - target
    if kind == "l1":
        return difference.abs().mean()
    if kind == "l2":
        return difference.square().mean()
    raise ValueError(f"color loss must be 'l1' or 'l2', got {kind!r}")
