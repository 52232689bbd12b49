"""``ReconModule``: SoftRas's silhouette-only reconstruction training as a LightningModule."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import torch
from lightning.pytorch import LightningModule
from rich.console import Console
from torch import Tensor
from torchmetrics import MeanMetric
from typing_extensions import override

from recon.losses import ColorLoss, color_loss, dataset_images, silhouette_iou_loss
from recon.mesh import FlattenLoss, LaplacianLoss, voxelize
from recon.metrics import ImageFidelity, VoxelIoU, iou_table
from recon.models import BaselineEncoder, ColorDecoder, Encoder, MeshGenerator, PredictedMesh, SphereDecoder
from recon.prediction import preview_renderer, write_prediction
from recon.render import SoftRenderer

# A model without a colour head is scored for PSNR as if painted this flat albedo (lit like the dataset):
# mid-grey is the colour that minimises the worst case over [0, 1] albedos, and needs no statistics of the data.
GRAY_ALBEDO = 0.5


class ReconModule(LightningModule):
    """Single-view mesh reconstruction trained by silhouettes (SoftRas ``examples/recon``, §3.3), optionally colours.

    Training step, per object with views a and b: encode both images to meshes M_a, M_b; render both meshes
    in both views (4 soft silhouettes); loss = mean over the four of ``1 − IoU(render, mask)`` plus
    ``lambda_lap · Laplacian + lambda_flat · flatten`` (means over the 2B meshes). Adam; from step
    ``schedule_step`` on, the learning rate and the renderer's σ are multiplied by ``schedule_gamma``
    (SoftRas: ×0.3 at 150k of 250k). σ is derived from ``global_step`` before every batch, so a resumed run
    continues with the right σ; the lr schedule is a per-step ``LambdaLR`` restored with the optimizer.

    **Colour** (with a ``colors`` head): the four renders are RGBA with the renderer's ``softmax`` RGB
    aggregation (the D·softmax(z/γ) soft z-buffer, γ = ``gamma``) and the dataset's lighting (0.5 ambient +
    0.5 directional from +y, as ``recon-data synth`` renders); their RGB, converted to the dataset's storage
    (``(1 − rgb)·α``: NMR's inverted colour over white, :func:`~recon.losses.dataset_images`), is compared
    with the reference images by ``color_loss`` (mean L1 or L2 over pixels), and
    ``lambda_color · loss_color`` is added to the loss. Without a head nothing of this runs: the parameters,
    checkpoints and training numbers are the silhouette-only model's.

    Validation/test: the mesh from view a of each (object, view) pair is voxelized at 32³ and compared with
    the ground truth: per-category mean IoU, then the unweighted mean over categories (``val/miou``,
    ``test/miou``, ``test/iou_<category>``), plus the same objective as training on the eval pairs
    (``val/loss``, ``test/loss``, ``test/loss_sil``). Colour fidelity: the same mesh rendered in the pair's
    other, held view b against view b's image, in the dataset's convention: PSNR and SSIM per item, averaged
    like the IoU (``val/psnr``, ``test/psnr``, ``test/psnr_<category>``, ``test/ssim``). A model without a
    colour head is rendered with a flat ``GRAY_ALBEDO`` (0.5) for this, so models with and without colour
    supervision compare on one scale. After testing, :attr:`test_results` holds the numbers.

    Args:
        encoder: any :class:`~recon.models.Encoder` (``class_path`` in YAML); default ``BaselineEncoder()``.
        decoder: a :class:`~recon.models.SphereDecoder`; default one sized to ``encoder.dim``.
        lr, betas: Adam's (SoftRas: 1e-4, PyTorch's default betas).
        lambda_lap, lambda_flat: regularizer weights (SoftRas: 5e-3, 5e-4).
        sigma: the renderer's σ in squared NDC units (1e-4: edges soft over ~1 px at 64²).
        dist_eps: SoftRas's culling probability (1e-10: faces farther than ~1.5 px from a pixel are skipped).
        schedule_step: optimizer step at which lr and σ drop; ``None`` for no drop.
        schedule_gamma: the factor of that drop.
        colors: a :class:`~recon.models.ColorDecoder` (``class_path`` in YAML) to reconstruct colours; ``None``
            (default) for the silhouette-only model.
        lambda_color: weight of the colour loss against the silhouette loss (colour models only).
        color_loss: ``"l1"`` (mean absolute) or ``"l2"`` (mean squared) difference over pixels and channels.
        gamma: the soft z-buffer's temperature in normalised depth units (SoftRas: 1e-4, nearly a hard
            z-buffer whose soft edges come from D alone).
        export_meshes: a folder: ``test`` writes one OBJ and GLB per (object, view) under ``<folder>/test/``
            (and a PLY; GLB and PLY with vertex colours, for colour models), ``predict``
            writes ``<name>.obj``, ``.glb`` and a ``.png`` preview per image (default for predict:
            ``<default_root_dir>/predictions``). Not saved in checkpoints, so ``--model.export_meshes`` given
            with ``--ckpt_path`` is honoured.
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        decoder: SphereDecoder | None = None,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        lambda_lap: float = 5e-3,
        lambda_flat: float = 5e-4,
        sigma: float = 1e-4,
        dist_eps: float = 1e-10,
        schedule_step: int | None = 150_000,
        schedule_gamma: float = 0.3,
        colors: ColorDecoder | None = None,
        lambda_color: float = 1.0,
        color_loss: ColorLoss = "l1",
        gamma: float = 1e-4,
        export_meshes: str | None = None,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():
            # Under LightningCLI the encoder/decoder are saved as their class_path/init_args config (plain,
            # loadable with weights_only=True); Lightning's advice to ignore nn.Module arguments does not
            # apply, since ignoring them breaks load_from_checkpoint. (Built directly in Python, the modules
            # themselves are pickled into the hparams.)
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(ignore=["export_meshes"])
        if lr <= 0 or sigma <= 0 or not 0 < schedule_gamma:
            raise ValueError(f"lr, sigma and schedule_gamma must be > 0, got {lr}, {sigma}, {schedule_gamma}")
        if color_loss not in get_args(ColorLoss) or not gamma > 0 or lambda_color < 0:
            raise ValueError(
                f"color_loss must be 'l1' or 'l2', gamma > 0 and lambda_color >= 0; got {color_loss!r}, {gamma}, "
                f"{lambda_color}"
            )
        encoder = encoder if encoder is not None else BaselineEncoder()
        decoder = decoder if decoder is not None else SphereDecoder(latent_dim=encoder.dim)
        self.generator = MeshGenerator(encoder, decoder, colors)
        faces = self.generator.faces
        self.laplacian = LaplacianLoss(faces, decoder.num_vertices)
        self.flatten = FlattenLoss(faces)
        self.renderer = SoftRenderer(
            image_size=encoder.image_size, sigma=self.sigma_at(0), gamma=gamma, dist_eps=dist_eps, aggr_alpha="prod",
            aggr_rgb="softmax",
        )
        self.export_meshes = export_meshes
        self.category_names: list[str] = []
        self.test_results: dict[str, Any] = {}
        self._preview: SoftRenderer | None = None

    # ----------------------------------------------------------------------------------------------- model
    def forward(self, images: Tensor) -> Tensor:
        """``images (B, 4, S, S)`` in [0, 1] → ``vertices (B, V, 3)`` in (−0.5, 0.5); faces: ``self.faces``."""
        return self.generator(images)

    @property
    def faces(self) -> Tensor:
        """``(F, 3)`` int64 faces shared by every predicted mesh."""
        return self.generator.faces

    @property
    def has_colors(self) -> bool:
        """Whether the model predicts colours (has a colour head)."""
        return self.generator.colors is not None

    def predict_mesh(self, images: Tensor) -> PredictedMesh:
        """``images (B, 4, S, S)`` → vertices ``(B, V, 3)`` and colours (``(B, V|F, 3)`` albedo, or None)."""
        return self.generator.mesh(images)

    def render(self, vertices: Tensor, colors: Tensor | None, eyes: Tensor) -> Tensor:
        """The renderer's RGBA ``(B, 4, S, S)`` (colour not inverted) of meshes with their colours, lit.

        ``colors``: the colour head's output, or None for a flat ``GRAY_ALBEDO``. For the dataset's storage
        convention apply :func:`~recon.losses.dataset_images`.
        """
        mode = self.generator.color_mode
        if colors is None:
            colors, mode = vertices.new_full((vertices.shape[0], self.faces.shape[0], 3), GRAY_ALBEDO), "face"
        return self.renderer(vertices, self.faces, eyes.to(vertices), colors=colors, color_mode=mode)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What was tested: validate/test/predict restore only the weights, so the trainer's own step stays 0.
        self.checkpoint_step = int(checkpoint.get("global_step", 0))
        self.checkpoint_epoch = int(checkpoint.get("epoch", 0))

    def sigma_at(self, step: int) -> float:
        """The renderer's σ at optimizer step ``step`` (SoftRas: ×``schedule_gamma`` from ``schedule_step``)."""
        return self.hparams.sigma * self._schedule_factor(step)

    def _schedule_factor(self, step: int) -> float:
        drop = self.hparams.schedule_step
        return self.hparams.schedule_gamma if drop is not None and step >= drop else 1.0

    # -------------------------------------------------------------------------------------------- set-up
    @override
    def setup(self, stage: str) -> None:
        """Create one metric set per stage, sized by the DataModule's category table (13 unnamed without one)."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        names = getattr(datamodule, "category_names", None)
        self.category_names = list(names) if names else [str(i) for i in range(13)]
        count = len(self.category_names)
        self.val_iou, self.test_iou = VoxelIoU(count), VoxelIoU(count)
        self.val_fidelity, self.test_fidelity = ImageFidelity(count), ImageFidelity(count)
        self.val_loss, self.test_loss, self.test_loss_sil = MeanMetric(), MeanMetric(), MeanMetric()

    @override
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The only place σ changes: before every training batch, from the (restored, when resuming) step.
        # Evaluation renders with the σ of the last training batch, or the constructor's in a fresh process.
        self.renderer.settings = replace(self.renderer.settings, sigma=self.sigma_at(self.global_step))

    # ------------------------------------------------------------------------------------- shared step
    def _common_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        """The SoftRas objective on a batch of view pairs; returns the loss terms and the meshes of views a.

        ``batch``: ``images_a``/``images_b`` (B, 4, S, S), ``eyes_a``/``eyes_b`` (B, 3).
        """
        images_a, images_b = batch["images_a"], batch["images_b"]
        size = images_a.shape[0]
        vertices, colors = self.generator.mesh(torch.cat([images_a, images_b]))  # (2B, V, 3): [M_a; M_b]
        meshes = torch.cat([vertices, vertices])  # [M_a; M_b; M_a; M_b]
        eyes = torch.cat([batch["eyes_a"], batch["eyes_a"], batch["eyes_b"], batch["eyes_b"]])
        references = torch.cat([images_a, images_a, images_b, images_b])
        out: dict[str, Tensor] = {}
        if colors is None:
            silhouettes = self._silhouettes(meshes, eyes)  # [R_aa; R_ba; R_ab; R_bb], (4B, S, S)
        else:
            rendered = self.render(meshes, torch.cat([colors, colors]), eyes)  # (4B, 4, S, S) RGBA
            silhouettes = rendered[:, 3]
            out["loss_color"] = color_loss(rendered, references, self.hparams.color_loss)
            out["rendered"], out["colors"] = rendered, colors[:size]
        loss_sil = silhouette_iou_loss(silhouettes, references[:, 3])
        loss_lap = self.laplacian(vertices).mean()
        loss_flat = self.flatten(vertices).mean()
        loss = loss_sil + self.hparams.lambda_lap * loss_lap + self.hparams.lambda_flat * loss_flat
        if colors is not None:
            loss = loss + self.hparams.lambda_color * out["loss_color"]
        out.update(loss=loss, loss_sil=loss_sil, loss_lap=loss_lap, loss_flat=loss_flat, vertices=vertices[:size])
        return out

    def _silhouettes(self, vertices: Tensor, eyes: Tensor) -> Tensor:
        if hasattr(self.renderer, "silhouette"):
            return self.renderer.silhouette(vertices, self.faces, eyes)
        return self.renderer(vertices, self.faces, eyes)[:, 3]

    @override
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self._common_step(batch, "train")
        size = batch["images_a"].shape[0]
        for key in ("loss", "loss_sil", "loss_lap", "loss_flat", "loss_color"):
            if key in out:
                self.log(f"train/{key}", out[key], prog_bar=key == "loss", batch_size=size)
        self.log("train/sigma", self.renderer.sigma, batch_size=size)
        return out["loss"]

    @override
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self._evaluate(batch, "val", self.val_iou, self.val_fidelity)
        self.val_loss.update(out["loss"], weight=batch["images_a"].shape[0])

    @override
    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self._evaluate(batch, "test", self.test_iou, self.test_fidelity)
        weight = batch["images_a"].shape[0]
        self.test_loss.update(out["loss"], weight=weight)
        self.test_loss_sil.update(out["loss_sil"], weight=weight)
        if self.export_meshes:
            self._export_test_meshes(batch, out["vertices"], out.get("colors"))

    def _evaluate(
        self, batch: dict[str, Tensor], stage: str, metric: VoxelIoU, fidelity: ImageFidelity
    ) -> dict[str, Tensor]:
        out = self._common_step(batch, stage)
        predicted = voxelize(out["vertices"], self.faces, batch["voxels"].shape[-1])
        metric.update(predicted, batch["voxels"], batch["category"])
        size = batch["images_a"].shape[0]
        if "rendered" in out:  # R_ab: the mesh from view a seen from the held view b, already rendered
            held = out["rendered"][2 * size : 3 * size]
        else:
            held = self.render(out["vertices"], None, batch["eyes_b"])
        fidelity.update(dataset_images(held)[:, :3], batch["images_b"][:, :3], batch["category"])
        return out

    # ---------------------------------------------------------------------------------------- epoch ends
    # The metrics above are already reduced over all processes by torchmetrics, so every rank logs the same
    # value; sync_dist=True only tells Lightning so (the mean of equal values) and silences its DDP warning.
    @override
    def on_validation_epoch_end(self) -> None:
        result = self.val_iou.compute()
        self.log("val/miou", _finite(result["miou"]), prog_bar=True, sync_dist=True)
        self.log("val/loss", self.val_loss.compute(), sync_dist=True)
        self.log("val/psnr", _finite(self.val_fidelity.compute()["mpsnr"]), sync_dist=True)
        for metric in (self.val_iou, self.val_loss, self.val_fidelity):
            metric.reset()

    @override
    def on_test_epoch_end(self) -> None:
        result = self.test_iou.compute()
        values = result["iou"].tolist()
        per_category = {
            name: value for name, value in zip(self.category_names, values, strict=True) if not math.isnan(value)
        }
        for name, value in per_category.items():
            self.log(f"test/iou_{name}", value, sync_dist=True)
        fidelity = self.test_fidelity.compute()
        psnr = {
            name: value for name, value in zip(self.category_names, fidelity["psnr"].tolist(), strict=True)
            if not math.isnan(value)
        }
        for name, value in psnr.items():
            self.log(f"test/psnr_{name}", value, sync_dist=True)
        miou = float(result["miou"])
        loss, loss_sil = float(self.test_loss.compute()), float(self.test_loss_sil.compute())
        mpsnr, mssim = float(fidelity["mpsnr"]), float(fidelity["mssim"])
        self.log("test/miou", _finite(result["miou"]), sync_dist=True)
        self.log("test/loss", loss, sync_dist=True)
        self.log("test/loss_sil", loss_sil, sync_dist=True)
        self.log("test/psnr", _finite(fidelity["mpsnr"]), sync_dist=True)
        self.log("test/ssim", _finite(fidelity["mssim"]), sync_dist=True)
        self.test_results = {
            "iou": per_category, "miou": miou, "loss": loss, "loss_sil": loss_sil, "psnr": psnr, "mpsnr": mpsnr,
            "mssim": mssim, "psnr_colors": "predicted" if self.has_colors else "gray",
        }  # fmt: skip
        if self.trainer.is_global_zero:
            label = "PSNR (dB)" if self.has_colors else "PSNR, grey (dB)"  # no colour head: painted GRAY_ALBEDO
            Console().print(iou_table(per_category, miou, loss, psnr, mpsnr, label))
        for metric in (self.test_iou, self.test_loss, self.test_loss_sil, self.test_fidelity):
            metric.reset()

    # ------------------------------------------------------------------------------------------- export
    def _export_test_meshes(self, batch: dict[str, Tensor], vertices: Tensor, colors: Tensor | None) -> None:
        root = Path(self.export_meshes) / "test"
        for index, mesh in enumerate(vertices):
            category = self.category_names[int(batch["category"][index])]
            name = f"{int(batch['object_index'][index]):05d}_v{int(batch['views_a'][index]):02d}"
            color = colors[index] if colors is not None else None
            write_prediction(root / category, name, mesh, self.faces, renderer=None, colors=color)

    @override
    def on_predict_start(self) -> None:
        if not self.export_meshes:
            self.export_meshes = str(Path(self.trainer.default_root_dir) / "predictions")
        self._preview = preview_renderer()

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """``batch``: ``images (B, 4, S, S)``, ``name`` list of B strings → writes files, returns the meshes
        (and, for a colour model, their ``colors``)."""
        vertices, colors = self.generator.mesh(batch["images"])
        written = []
        for index, (name, mesh, image) in enumerate(zip(batch["name"], vertices, batch["images"], strict=True)):
            color = colors[index] if colors is not None else None
            written += write_prediction(self.export_meshes, name, mesh, self.faces, image, self._preview, color)
        out = {"name": list(batch["name"]), "vertices": vertices.detach().cpu(), "paths": written}
        if colors is not None:
            out["colors"] = colors.detach().cpu()
        return out

    @override
    def on_predict_end(self) -> None:
        if self.trainer.is_global_zero:
            Console().print(f"predicted meshes written to [bold]{self.export_meshes}[/bold]")


def _finite(value: Tensor) -> Tensor:
    """NaN (an eval set without items) becomes 0, so checkpointing on ``val/miou`` never sees NaN."""
    return torch.nan_to_num(value, nan=0.0)
