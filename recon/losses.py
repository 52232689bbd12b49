"""The silhouette IoU loss SoftRas trains with (``examples/recon/losses.py``)."""

from __future__ import annotations

from torch import Tensor


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
