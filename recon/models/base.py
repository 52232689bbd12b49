"""The encoder contract and the fully connected head the three encoders share."""

from __future__ import annotations

from torch import Tensor, nn


class Encoder(nn.Module):
    """Maps one RGBA view to a latent code.

    Subclasses are selected in YAML by ``class_path`` (``recon.models.BaselineEncoder``, ...). They must set
    :attr:`dim` so the decoder can be sized from the encoder alone.

    Input: ``images (B, 4, S, S)`` in [0, 1], the dataset's channel convention (inverted RGB, alpha = mask),
    S = ``image_size``. Output: ``latent (B, dim)``.
    """

    dim: int
    image_size: int

    def forward(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, images: Tensor) -> None:
        """Raise a ``ValueError`` naming the expected shape when ``images`` is not ``(B, 4, S, S)``."""
        if images.ndim != 4 or images.shape[1] != 4 or images.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"{type(self).__name__} expects images of shape (B, 4, {self.image_size}, {self.image_size}), "
                f"got {tuple(images.shape)}"
            )


class LatentHead(nn.Sequential):
    """SoftRas's head: flatten the ``(B, C, H, W)`` feature map, FC 1024 → 1024 → ``dim``, each with ReLU.

    The flattening (rather than global pooling) keeps *where* in the image a feature was seen, which the
    decoder needs: the mesh is predicted in object coordinates from a known but varying viewpoint. The final
    ReLU is SoftRas's (the latent is non-negative); it is kept for fidelity. The first layer holds most of
    every encoder's parameters (C·H·W·1024, 16.8 M for 256·8·8), so the three encoders share this head and
    differ in the feature extractor in front of it.
    """

    def __init__(self, in_features: int, dim: int = 512, hidden: int = 1024) -> None:
        super().__init__(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
            nn.ReLU(inplace=True),
        )


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    """``Conv2d`` (same padding, no bias: BatchNorm supplies it) → ``BatchNorm2d`` → ``ReLU``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )
