"""``ReconModule``: SoftRas's silhouette reconstruction objective (optionally with colours) as a LightningModule."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any, get_args

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics import MeanMetric
from typing_extensions import override

from recon.errors import ConfigError
from recon.losses import ColorLoss, color_loss, dataset_images, silhouette_iou_loss
from recon.mesh import FlattenLoss, LaplacianLoss, voxelize
from recon.metrics import ImageFidelity, VoxelIoU
from recon.models import BaselineEncoder, ColorDecoder, Encoder, MeshGenerator, PredictedMesh, SphereDecoder
from recon.render import SoftRenderer
from recon.step import StepOutput, check_finite

# A model without a colour head is scored for PSNR as if painted this flat albedo (lit like the dataset):
# mid-grey minimises the worst case over [0, 1] albedos and needs no statistics of the data.
GRAY_ALBEDO = 0.5


class ReconModule(LightningModule):
    """Single-view mesh reconstruction trained by silhouettes (SoftRas's recipe), optionally colours.

    The objective is :meth:`model_step`'s; validation and test add voxel IoU per category (``val/miou``,
    ``test/miou``, ``test/iou_<category>``) and the held view's PSNR/SSIM, and return the step's outputs to
    the callbacks. Arguments are SoftRas's by default: Adam ``lr``/``betas``; regularizer weights
    ``lambda_lap``/``lambda_flat``; the renderer's ``sigma`` (squared NDC units) and ``dist_eps``; from
    ``schedule_step`` (None: never) lr and σ are multiplied by ``schedule_gamma``. A ``colors`` head adds
    ``lambda_color`` × ``color_loss`` (l1/l2) against the images, rendered with a soft z-buffer of temperature
    ``gamma``. ``category_names`` name the metrics' rows (default: the DataModule's).
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
        category_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():
            # Under LightningCLI the encoder/decoder are saved as their class_path/init_args config (plain, loadable
            # with weights_only=True); ignoring nn.Module arguments would break load_from_checkpoint.
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        if lr <= 0 or sigma <= 0 or not 0 < schedule_gamma:
            raise ConfigError(f"lr, sigma and schedule_gamma must be > 0, got {lr}, {sigma}, {schedule_gamma}")
        if color_loss not in get_args(ColorLoss) or not gamma > 0 or lambda_color < 0:
            raise ConfigError(
                f"color_loss must be 'l1' or 'l2', gamma > 0 and lambda_color >= 0; got {color_loss!r}, {gamma}, "
                f"{lambda_color}"
            )
        encoder = encoder if encoder is not None else BaselineEncoder()
        decoder = decoder if decoder is not None else SphereDecoder(latent_dim=encoder.dim)
        self.generator = MeshGenerator(encoder, decoder, colors)
        self.laplacian = LaplacianLoss(self.faces, decoder.num_vertices)
        self.flatten = FlattenLoss(self.faces)
        self.renderer = SoftRenderer(
            image_size=encoder.image_size, sigma=self.sigma_at(0), gamma=gamma, dist_eps=dist_eps, aggr_alpha="prod",
            aggr_rgb="softmax",
        )
        self.category_names: list[str] = list(category_names or [])
        self._restored_step = 0
        if self.category_names:
            self._make_metrics()

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
        """Lit RGBA ``(B, 4, S, S)`` (colour not inverted) of meshes in their colours (None: ``GRAY_ALBEDO``)."""
        mode = self.generator.color_mode
        if colors is None:
            colors, mode = vertices.new_full((vertices.shape[0], self.faces.shape[0], 3), GRAY_ALBEDO), "face"
        return self.renderer(vertices, self.faces, eyes.to(vertices), colors=colors, color_mode=mode)

    def sigma_at(self, step: int) -> float:
        """The renderer's σ at optimizer step ``step`` (×``schedule_gamma`` from ``schedule_step`` on)."""
        return self.hparams.sigma * self._schedule_factor(step)

    def _schedule_factor(self, step: int) -> float:
        drop = self.hparams.schedule_step
        return self.hparams.schedule_gamma if drop is not None and step >= drop else 1.0

    # ------------------------------------------------------------------------------------------ the step
    def model_step(self, batch: dict[str, Tensor]) -> StepOutput:
        """The objective on B view pairs: ``images_a``/``images_b`` (B, 4, S, S), ``eyes_a``/``eyes_b`` (B, 3).

        σ follows the schedule at the trained step (the checkpoint's, when evaluating a restored model).
        Raises :class:`~recon.errors.NonFiniteMeshError` naming the items when a predicted vertex is not finite.
        """
        # σ follows the schedule, from the one place every stage passes through
        self.renderer.settings = replace(self.renderer.settings,
                                         sigma=self.sigma_at(max(self.global_step, self._restored_step)))
        images_a, images_b = batch["images_a"], batch["images_b"]
        vertices, colors = self.generator.mesh(torch.cat([images_a, images_b]))  # (2B, V, 3): [M_a; M_b]
        self._check_finite(vertices, batch)
        meshes = torch.cat([vertices, vertices])  # [M_a; M_b; M_a; M_b]
        eyes = torch.cat([batch["eyes_a"], batch["eyes_a"], batch["eyes_b"], batch["eyes_b"]])
        references = torch.cat([images_a, images_a, images_b, images_b])
        rgba = loss_color = None
        if colors is None:
            silhouettes = self.renderer.silhouette(meshes, self.faces, eyes)
        else:
            rgba = self.render(meshes, torch.cat([colors, colors]), eyes)
            silhouettes = rgba[:, 3]
            loss_color = color_loss(rgba, references, self.hparams.color_loss)
        loss_sil = silhouette_iou_loss(silhouettes, references[:, 3])
        loss_lap = self.laplacian(vertices).mean()
        loss_flat = self.flatten(vertices).mean()
        loss = loss_sil + self.hparams.lambda_lap * loss_lap + self.hparams.lambda_flat * loss_flat
        if loss_color is not None:
            loss = loss + self.hparams.lambda_color * loss_color
        size = images_a.shape[0]
        return StepOutput(loss, loss_sil, loss_lap, loss_flat, loss_color, vertices[:size],
                          colors[:size] if colors is not None else None, silhouettes, rgba)

    # -------------------------------------------------------------------------------------------- stages
    @override
    def setup(self, stage: str) -> None:
        """Size the metrics by the DataModule's categories unless ``category_names`` were given (``predict``
        scores nothing and needs none)."""
        if not self.category_names and stage != "predict":
            datamodule = self._trainer.datamodule if self._trainer is not None else None
            names = getattr(datamodule, "category_names", None)
            if not names:
                raise ConfigError("ReconModule needs category_names: give them, or train with a DataModule that "
                                  "has category_names (recon.datamodules.ViewPairDataModule)")
            self.category_names = list(names)
            self._make_metrics()

    def _make_metrics(self) -> None:
        count = len(self.category_names)
        self.val_iou, self.test_iou = VoxelIoU(count), VoxelIoU(count)
        self.val_fidelity, self.test_fidelity = ImageFidelity(count), ImageFidelity(count)
        self.val_loss, self.test_loss, self.test_loss_sil = MeanMetric(), MeanMetric(), MeanMetric()

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None and self.strict_loading:  # `load_from_checkpoint(strict=False)` is the user's
            self.check_checkpoint(checkpoint, getattr(self._trainer, "ckpt_path", None) or "the checkpoint")
        # validate/test restore only the weights (the trainer's step stays 0): σ must follow the trained step
        self._restored_step = int(checkpoint.get("global_step", 0))

    def check_checkpoint(self, checkpoint: dict[str, Any], path: object) -> None:
        """Raise :class:`~recon.errors.ConfigError`, one line naming both models, when ``checkpoint`` (loaded from
        ``path``) holds weights this model cannot take (another encoder, decoder or colour head: a ResNet config
        resuming a baseline run's ``last.ckpt``), where Lightning would print every mismatched tensor in a
        traceback. The ``recon`` command checks before the run starts; a restore checks again."""
        saved, own = checkpoint.get("state_dict"), self.state_dict()
        if not isinstance(saved, dict):
            return
        differ = sorted(set(saved) ^ set(own)) + sorted(
            key for key in set(saved) & set(own) if tuple(saved[key].shape) != tuple(own[key].shape))
        if not differ:
            return
        raise ConfigError(
            f"{path} holds another model ({_architecture(checkpoint.get('hyper_parameters') or {})}) than this "
            f"config builds ({_architecture(self.hparams)}): {len(differ)} of its weights do not fit, e.g. "
            f"{differ[0]}; use the config it was trained with (config.yaml in its run folder), or give this run a "
            "folder of its own (--trainer.default_root_dir)")

    @override
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @override
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.model_step(batch)
        size = batch["images_a"].shape[0]
        # averaged over the processes (each a share of the step's batch, all of the same size): under DDP rank 0's
        # share alone was logged, half the batch on 2 processes
        for key in ("loss", "loss_sil", "loss_lap", "loss_flat", "loss_color"):
            if getattr(out, key) is not None:
                self.log(f"train/{key}", getattr(out, key), prog_bar=key == "loss", batch_size=size, sync_dist=True)
        self.log("train/sigma", self.renderer.sigma, batch_size=size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)  # what Adam uses
        return out.loss

    @override
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> StepOutput:
        out = self._evaluate(batch, self.val_iou, self.val_fidelity)
        self.val_loss.update(out.loss, weight=batch["images_a"].shape[0])
        return out

    @override
    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> StepOutput:
        out = self._evaluate(batch, self.test_iou, self.test_fidelity)
        weight = batch["images_a"].shape[0]
        self.test_loss.update(out.loss, weight=weight)
        self.test_loss_sil.update(out.loss_sil, weight=weight)
        return out

    def _evaluate(self, batch: dict[str, Tensor], metric: VoxelIoU, fidelity: ImageFidelity) -> StepOutput:
        out = self.model_step(batch)
        predicted = voxelize(out.vertices, self.faces, batch["voxels"].shape[-1])
        metric.update(predicted, batch["voxels"], batch["category"])
        # R_ab: the mesh from view a seen from the held view b (painted grey without a colour head)
        held = out.group(out.rgba, "ab") if out.rgba is not None else self.render(out.vertices, None, batch["eyes_b"])
        fidelity.update(dataset_images(held)[:, :3], batch["images_b"][:, :3], batch["category"])
        return out

    # The metrics are reduced over all processes by torchmetrics, so every rank logs the same value; sync_dist=True
    # only tells Lightning so (the mean of equal values) and silences its DDP warning.
    @override
    def on_validation_epoch_end(self) -> None:
        self.log("val/miou", _finite(self.val_iou.compute()["miou"]), prog_bar=True, sync_dist=True)
        self.log("val/loss", self.val_loss.compute(), sync_dist=True)
        self.log("val/psnr", _finite(self.val_fidelity.compute()["mpsnr"]), sync_dist=True)
        for metric in (self.val_iou, self.val_loss, self.val_fidelity):
            metric.reset()

    @override
    def on_test_epoch_end(self) -> None:
        """Log ``test/miou``, ``test/iou_<category>`` (categories with items), ``test/psnr[_<category>]``,
        ``test/ssim``, ``test/loss`` and ``test/loss_sil``: what the results writer reads."""
        result, fidelity = self.test_iou.compute(), self.test_fidelity.compute()
        for prefix, values in (("iou", result["iou"]), ("psnr", fidelity["psnr"])):
            for name, value in zip(self.category_names, values.tolist(), strict=True):
                if not math.isnan(value):
                    self.log(f"test/{prefix}_{name}", value, sync_dist=True)
        self.log("test/miou", _finite(result["miou"]), sync_dist=True)
        self.log("test/loss", self.test_loss.compute(), sync_dist=True)
        self.log("test/loss_sil", self.test_loss_sil.compute(), sync_dist=True)
        self.log("test/psnr", _finite(fidelity["mpsnr"]), sync_dist=True)
        self.log("test/ssim", _finite(fidelity["mssim"]), sync_dist=True)
        for metric in (self.test_iou, self.test_loss, self.test_loss_sil, self.test_fidelity):
            metric.reset()

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> PredictedMesh:
        """``batch``: ``images (B, 4, S, S)`` → the meshes and (colour models) their colours; files are written
        by :class:`~recon.callbacks.MeshWriter`. NaN or infinite vertices are an error, never a file."""
        mesh = self.generator.mesh(batch["images"])
        self._check_finite(mesh.vertices, batch)
        return mesh

    def _check_finite(self, vertices: Tensor, batch: dict[str, Any]) -> None:
        """:func:`~recon.step.check_finite`, told whether a fit diverged or a restored model is evaluated."""
        fitting = self._trainer is None or self._trainer.state.fn in (None, TrainerFn.FITTING)
        check_finite(vertices, batch, self.global_step, restored=None if fitting else self)


def _finite(value: Tensor) -> Tensor:
    """NaN (an eval set without items) becomes 0, so checkpointing on ``val/miou`` never sees NaN."""
    return torch.nan_to_num(value, nan=0.0)


def _architecture(hparams: Any) -> str:
    """``encoder BaselineEncoder(dim=512), decoder SphereDecoder, colors none`` from saved or live hyperparameters
    (config entries ``{class_path, init_args}``, or modules)."""
    parts = []
    for key in ("encoder", "decoder", "colors"):
        value = hparams.get(key) if hasattr(hparams, "get") else None
        if value is None:
            parts.append(f"{key} {'none' if key == 'colors' else 'default'}")
        elif isinstance(value, dict) and value.get("class_path"):
            args = value.get("init_args") or {}
            dim = f"(dim={args['dim']})" if "dim" in args else ""
            parts.append(f"{key} {str(value['class_path']).rsplit('.', 1)[-1]}{dim}")
        else:
            parts.append(f"{key} {type(value).__name__}")
    return ", ".join(parts)
