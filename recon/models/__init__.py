"""Encoders, the sphere decoder and the generator that joins them (plain ``nn.Module``s, no Lightning)."""

from recon.models.attention import AttentionEncoder
from recon.models.base import Encoder
from recon.models.baseline import BaselineEncoder
from recon.models.decoder import SphereDecoder
from recon.models.generator import MeshGenerator
from recon.models.resnet import ResNetEncoder

__all__ = [
    "AttentionEncoder",
    "BaselineEncoder",
    "Encoder",
    "MeshGenerator",
    "ResNetEncoder",
    "SphereDecoder",
]
