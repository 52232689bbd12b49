"""SoftRas's encoder (``examples/recon/models.py``), the baseline of the comparison."""

from __future__ import annotations

from torch import Tensor, nn

from recon.models.base import Encoder, LatentHead, conv_bn_relu


class BaselineEncoder(Encoder):
    """Three 5×5 stride-2 convolutions with BatchNorm (64, 128, 256 channels), then FC 1024–1024–``dim``.

    ``(B, 4, 64, 64)`` → 64×32×32 → 128×16×16 → 256×8×8 → flatten 16384 → 1024 → 1024 → ``(B, dim)``, ReLU
    after every layer, as SoftRas. NMR's encoder is the same without BatchNorm.

    Parameter budget at the defaults: 19.38 M (convolutions 1.03 M, head 18.35 M), SoftRas's count.
    """

    def __init__(self, dim: int = 512, image_size: int = 64) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"BaselineEncoder needs image_size divisible by 8, got {image_size}")
        self.dim = dim
        self.image_size = image_size
        self.features = nn.Sequential(
            conv_bn_relu(4, 64, 5, 2),
            conv_bn_relu(64, 128, 5, 2),
            conv_bn_relu(128, 256, 5, 2),
        )
        self.head = LatentHead(256 * (image_size // 8) ** 2, dim)

    def forward(self, images: Tensor) -> Tensor:
        """``images (B, 4, S, S)`` in [0, 1] → ``latent (B, dim)``, non-negative."""
        self.check_input(images)
        return self.head(self.features(images))
