"""The generator: an encoder and a decoder joined, image → mesh."""

from __future__ import annotations

from torch import Tensor, nn

from recon.models.base import Encoder
from recon.models.decoder import SphereDecoder


class MeshGenerator(nn.Module):
    """``images (B, 4, S, S)`` in [0, 1] → ``vertices (B, V, 3)`` in (−0.5, 0.5); :attr:`faces` ``(F, 3)``.

    The faces are the template's and shared by every output mesh, so renderers and regularizers take them once.
    """

    def __init__(self, encoder: Encoder, decoder: SphereDecoder) -> None:
        super().__init__()
        if encoder.dim != decoder.latent_dim:
            raise ValueError(
                f"encoder {type(encoder).__name__} outputs dim={encoder.dim} but the decoder expects "
                f"latent_dim={decoder.latent_dim}: set both to the same value"
            )
        self.encoder = encoder
        self.decoder = decoder

    @property
    def faces(self) -> Tensor:
        """``(F, 3)`` int64 template faces, CCW-outward, on the generator's device."""
        return self.decoder.faces

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.encoder(images))
