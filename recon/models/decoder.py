"""SoftRas/NMR's sphere-deformation decoder: a latent code → the vertices of a deformed 642-vertex sphere."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SphereDecoder(nn.Module):
    """Latent ``(B, latent_dim)`` → vertices ``(B, 642, 3)``, every coordinate in (−0.5, 0.5); faces fixed.

    As SoftRas's ``Decoder``, which follows NMR's (docs/conventions.md#sphere-decoder): FC ``latent_dim`` →
    1024 → 2048 (ReLU), then ``c = tanh(centroid_scale · fc_centroid(h))`` ∈ (−1, 1)³ and per-coordinate offsets
    ``Δ = bias_scale · fc_bias(h)`` of shape (642, 3). With ``b = 0.5 · template``, ``s = sign(b)`` and the
    logit ``ℓ = ln(|b| / (1 − |b|))``::

        u  = s · sigmoid(ℓ + Δ)                          # |u| < 1, on the template's side of each axis
        u' = relu(u) · (1 − c) − relu(−u) · (1 + c)      # squeeze each half-axis to make room for c
        v  = 0.5 · (u' + c)                              # ∈ (−0.5, 0.5): the mesh never leaves the voxel cube

    Working in logit space makes every output bounded without clamping (so gradients never vanish at a
    clamp), and at ``Δ = 0, c = 0`` the output is the template scaled to radius 0.25. (In float32 a saturated
    sigmoid or tanh rounds to 1, so extreme latents can reach ±0.5 exactly: the bound is closed in practice.)

    **The zero-coordinate quirk.** Template coordinates that are exactly 0 (96 coordinates on 90 vertices of
    recon's icosphere; 67 on 62 vertices of SoftRas's ``sphere_642.obj``, oriented differently) have
    ``s = 0``: the coordinate stays at ``0.5 · c`` whatever ``Δ`` is (its gradient is 0), so e.g. a ring of
    vertices with y = 0 can never leave the centroid's plane. Every other coordinate keeps its sign relative
    to the centroid. ``free_zero_coordinates=False`` (the default) keeps the quirk on purpose: the published
    means (SoftRas 0.6234, NMR 0.6031; docs/conventions.md#published-figures) were obtained with it, and recon
    reproduces them before it improves on them. ``free_zero_coordinates=True`` fixes it: those
    coordinates become ``u = tanh(Δ)``, free to move to either side and still 0 at ``Δ = 0``, so the
    initial sphere is unchanged. (``ℓ`` is set to 0 there instead of −∞ either way, so no ``inf`` is ever
    formed.)

    SoftRas's ``centroid_scale = 0.1`` slows the centroid's learning (NMR used a per-parameter lr multiplier of
    0.1 instead; SoftRas keeps its arguments but ignores them).
    """

    def __init__(
        self,
        latent_dim: int = 512,
        hidden: tuple[int, int] = (1024, 2048),
        centroid_scale: float = 0.1,
        bias_scale: float = 1.0,
        free_zero_coordinates: bool = False,
    ) -> None:
        super().__init__()
        from recon.mesh import template_sphere  # the one template of the project

        vertices, faces = template_sphere()
        half = 0.5 * vertices.float()
        # non-persistent: rebuilt from the template on construction, so checkpoints hold only the weights
        self.register_buffer("faces", faces.long(), persistent=False)
        self.register_buffer("template_sign", torch.sign(half), persistent=False)
        logit = torch.log(half.abs() / (1 - half.abs()))
        self.register_buffer("template_logit", torch.where(half == 0, 0.0, logit), persistent=False)
        self.latent_dim = latent_dim
        self.num_vertices = vertices.shape[0]
        self.centroid_scale = centroid_scale
        self.bias_scale = bias_scale
        self.free_zero_coordinates = free_zero_coordinates
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden[0]),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(inplace=True),
        )
        self.fc_centroid = nn.Linear(hidden[1], 3)
        self.fc_bias = nn.Linear(hidden[1], self.num_vertices * 3)

    def forward(self, latent: Tensor) -> Tensor:
        """``latent (B, latent_dim)`` → ``vertices (B, V, 3)`` in (−0.5, 0.5)."""
        if latent.ndim != 2 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"SphereDecoder expects latent (B, {self.latent_dim}), got {tuple(latent.shape)}")
        hidden = self.body(latent)
        centroid = torch.tanh(self.centroid_scale * self.fc_centroid(hidden))[:, None, :]  # (B, 1, 3)
        offsets = self.bias_scale * self.fc_bias(hidden).view(-1, self.num_vertices, 3)  # (B, V, 3)
        return self.deform(centroid, offsets)

    def deform(self, centroid: Tensor, offsets: Tensor) -> Tensor:
        """Apply the bounded deformation: ``centroid (B, 1, 3)`` in (−1, 1), ``offsets (B, V, 3)`` → ``(B, V, 3)``."""
        sign = self.template_sign
        u = torch.sigmoid(self.template_logit + offsets) * sign
        if self.free_zero_coordinates:
            u = torch.where(sign == 0, torch.tanh(offsets), u)
        # = relu(u)·(1 − c) − relu(−u)·(1 + c), written so that its derivative at u = 0 is 1, not relu's 0:
        # a freed zero coordinate starts exactly at u = 0 and must still receive a gradient
        u = u - centroid * u.abs()
        return 0.5 * (u + centroid)
