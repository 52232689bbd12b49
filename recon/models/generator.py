"""The generator: an encoder and a decoder joined, image → mesh (and, with a colour head, its colours)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from recon.models.base import Encoder
from recon.models.color import ColorDecoder
from recon.models.decoder import SphereDecoder


class PredictedMesh(NamedTuple):
    """``vertices (B, V, 3)`` in (−0.5, 0.5); ``colors`` ``(B, V, 3)`` or ``(B, F, 3)`` albedo in (0, 1), or None."""

    vertices: Tensor
    colors: Tensor | None


class MeshGenerator(nn.Module):
    """``images (B, 4, S, S)`` in [0, 1] → ``vertices (B, V, 3)`` in (−0.5, 0.5); :attr:`faces` ``(F, 3)``.

    The faces are the template's and shared by every output mesh, so renderers and regularizers take them once.
    With a ``colors`` head, :meth:`mesh` also predicts the colours from the same latent; without one the
    generator (and its state dict) is exactly the silhouette-only model.
    """

    def __init__(self, encoder: Encoder, decoder: SphereDecoder, colors: ColorDecoder | None = None) -> None:
        super().__init__()
        for name, head in (("decoder", decoder), ("colour head", colors)):
            if head is not None and encoder.dim != head.latent_dim:
                raise ValueError(
                    f"encoder {type(encoder).__name__} outputs dim={encoder.dim} but the {name} expects "
                    f"latent_dim={head.latent_dim}: set both to the same value"
                )
        self.encoder = encoder
        self.decoder = decoder
        self.colors = colors

    @property
    def faces(self) -> Tensor:
        """``(F, 3)`` int64 template faces, CCW-outward, on the generator's device."""
        return self.decoder.faces

    @property
    def color_mode(self) -> str | None:
        """``"vertex"`` or ``"face"``: what :meth:`mesh`'s colours are per; None without a colour head."""
        return self.colors.mode if self.colors is not None else None

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.encoder(images))

    def mesh(self, images: Tensor) -> PredictedMesh:
        """``images (B, 4, S, S)`` → the meshes and (with a colour head) their colours, from one encoding."""
        latent = self.encoder(images)
        colors = self.colors(latent) if self.colors is not None else None
        return PredictedMesh(self.decoder(latent), colors)
