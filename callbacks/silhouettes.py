"""``SilhouetteLogger``: image grids of input views, predicted silhouettes (and colour renders) and reference masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from torch import Tensor
from typing_extensions import override

from recon.callbacks.run_folder import log_step, run_folder, wandb_loggers
from recon.callbacks.samples import ValidationSamplesCallback, sample_names, stamp
from recon.losses import dataset_images, silhouette_iou
from recon.prediction import save_image

COLUMNS = ("input a", "predicted a", "mask a", "input b", "predicted b", "mask b")
COLOR_COLUMNS = ("input a", "colour a", "predicted a", "mask a", "input b", "colour b", "predicted b", "mask b")


class SilhouetteLogger(ValidationSamplesCallback):
    """Every ``every_n_epochs`` validation runs, one image grid of ``num_samples`` fixed validation objects.

    One row per object, six columns: view a as the model sees it (shown as the object: NMR's inverted RGB
    undone, on white) | the silhouette of the mesh predicted from view a, rendered in view a | view a's mask |
    the same three for view b (the mesh is still the one predicted from view a, rendered from view b's
    camera: what the loss's cross-view term sees). Silhouettes and masks are white on black. For a model
    with colours each input is followed by the mesh rendered with its predicted
    colours and the dataset's lighting, shown on white like the input (eight columns). Everything shown
    comes from the validation step's outputs: nothing is rendered again.

    Written to ``<run folder>/media/silhouettes/e<epoch>_s<step>.png`` (see
    :func:`~recon.callbacks.run_folder.run_folder`) and logged as ``wandb.Image`` under ``key`` to every
    ``WandbLogger``, with the soft IoU of each row in the caption. Rank 0 only, once per logged validation.

    Args:
        every_n_epochs: log at the first validation run and every N-th after it.
        num_samples: objects (rows) in the grid: the first items of the first validation batches.
        scale: integer upscaling of the 64² images (nearest), so a grid is legible on a dashboard.
        key: the W&B key.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 8, scale: int = 2,
                 key: str = "val/silhouettes") -> None:
        super().__init__(every_n_epochs, num_samples)
        if scale < 1:
            raise ValueError(f"SilhouetteLogger: scale must be >= 1, got {scale}")
        self.scale = scale
        self.key = key

    @override
    def log_samples(self, trainer: Trainer, pl_module: LightningModule, samples: dict[str, Tensor]) -> None:
        if "silhouette_a" not in samples:
            return  # the module's validation step returned no renders
        images_a, images_b = samples["images_a"], samples["images_b"]
        masks_a, masks_b = images_a[:, 3], images_b[:, 3]
        predicted_a, predicted_b = samples["silhouette_a"], samples["silhouette_b"]
        if "render_a" in samples:
            rendered_a, rendered_b = dataset_images(samples["render_a"]), dataset_images(samples["render_b"])
            columns = COLOR_COLUMNS
            rows = [
                [shown_view(a), shown_view(ca), gray(pa), gray(ma), shown_view(b), shown_view(cb), gray(pb), gray(mb)]
                for a, ca, pa, ma, b, cb, pb, mb in zip(
                    images_a, rendered_a, predicted_a, masks_a, images_b, rendered_b, predicted_b, masks_b, strict=True
                )
            ]
        else:
            columns = COLUMNS
            rows = [
                [shown_view(a), gray(pa), gray(ma), shown_view(b), gray(pb), gray(mb)]
                for a, pa, ma, b, pb, mb in zip(
                    images_a, predicted_a, masks_a, images_b, predicted_b, masks_b, strict=True
                )
            ]
        grid = image_grid(rows, scale=self.scale)
        path = run_folder(trainer) / "media" / "silhouettes" / f"{stamp(trainer)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, grid)

        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        import wandb

        iou_a = silhouette_iou(predicted_a, masks_a.to(predicted_a)).tolist()
        iou_b = silhouette_iou(predicted_b, masks_b.to(predicted_b)).tolist()
        names = sample_names(samples, pl_module.category_names)
        caption = " | ".join(columns) + "\n" + "\n".join(
            f"{name}: IoU a {a:.3f}, b {b:.3f}" for name, a, b in zip(names, iou_a, iou_b, strict=True)
        )
        for logger in loggers:
            logger.log_metrics({self.key: wandb.Image(str(path), caption=caption)}, step=log_step(trainer))


def shown_view(image: Tensor) -> np.ndarray:
    """``image (4, S, S)`` in the dataset's convention (RGB stored as ``1 − colour over white``, background 0)
    → ``(S, S, 3)`` in [0, 1]: the object's colours on white, as a person would see it."""
    return (1.0 - image[:3].float().clamp(0, 1)).permute(1, 2, 0).cpu().numpy()


def gray(silhouette: Tensor) -> np.ndarray:
    """``silhouette (S, S)`` in [0, 1] → ``(S, S, 3)``: white where covered, black elsewhere."""
    return silhouette.float().clamp(0, 1)[..., None].expand(-1, -1, 3).cpu().numpy()


def image_grid(rows: Sequence[Sequence[np.ndarray]], scale: int = 1, gap: int = 2) -> Image.Image:
    """Cells ``(H, W, 3)`` in [0, 1] (all the same size) laid out row by row on a mid-gray background, ``gap``
    pixels apart, then upscaled ``scale`` times (nearest) → an RGB PIL image."""
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    canvas = np.full((gap + len(rows) * (height + gap), gap + columns * (width + gap), 3), 0.5)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            canvas[top : top + height, left : left + width] = cell
    image = Image.fromarray((canvas * 255.0 + 0.5).astype(np.uint8))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image
