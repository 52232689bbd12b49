"""The colour head: a latent code → an RGB albedo per vertex or per face of the template mesh."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

ColorMode = Literal["vertex", "face"]


class ColorDecoder(nn.Module):
    """Latent ``(B, latent_dim)`` → albedo ``(B, 642, 3)`` per vertex or ``(B, 1280, 3)`` per face, in (0, 1).

    FC ``latent_dim`` → ``hidden`` (ReLU) → 3 per vertex (or face), then a sigmoid. The colours are the
    object's own (not NMR's inverted storage) and unlit: the renderer applies the dataset's lighting.

    **Why a learned head and not image sampling.** Sampling the input image at the predicted vertices'
    projections gives sharp colours on the visible side only: without a z-buffer every vertex behind the
    object takes the colour of whatever is in front of it, and early in training, when the mesh is still a
    sphere, most vertices sample the background. The head predicts the whole object from the same latent as
    the shape, so the cross-view term of the loss (the mesh from view a rendered in view b) teaches it the
    unseen sides too, a category-level prior; its colours are blurrier but consistent all round.

    ``mode``: ``"vertex"`` (interpolated across faces, exported directly as GLB/PLY vertex colours) or
    ``"face"`` (flat, SoftRas's surface texture with R = 1). The last layer starts at zero, so every model
    starts as a flat mid-grey (0.5) and the colour loss does not disturb the shared encoder at step 0.
    """

    def __init__(self, latent_dim: int = 512, mode: ColorMode = "vertex", hidden: int = 1024) -> None:
        super().__init__()
        from recon.mesh import template_sphere  # the one template of the project

        if mode not in ("vertex", "face"):
            raise ValueError(f"ColorDecoder mode must be 'vertex' or 'face', got {mode!r}")
        vertices, faces = template_sphere()
        self.latent_dim = latent_dim
        self.mode: ColorMode = mode
        self.count = vertices.shape[0] if mode == "vertex" else faces.shape[0]
        self.body = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True))
        self.fc_color = nn.Linear(hidden, self.count * 3)
        nn.init.zeros_(self.fc_color.weight)
        nn.init.zeros_(self.fc_color.bias)

    def forward(self, latent: Tensor) -> Tensor:
        """``latent (B, latent_dim)`` → ``colors (B, N, 3)`` in (0, 1); N vertices or faces by :attr:`mode`."""
        if latent.ndim != 2 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"ColorDecoder expects latent (B, {self.latent_dim}), got {tuple(latent.shape)}")
        return torch.sigmoid(self.fc_color(self.body(latent))).view(-1, self.count, 3)
