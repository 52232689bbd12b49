"""Encoders, the sphere decoder, the colour head and the generator that joins them (plain ``nn.Module``s, no
Lightning)."""

from recon.models.attention import AttentionEncoder
from recon.models.base import Encoder
from recon.models.baseline import BaselineEncoder
from recon.models.color import ColorDecoder
from recon.models.decoder import SphereDecoder
from recon.models.generator import MeshGenerator, PredictedMesh
from recon.models.resnet import ResNetEncoder

__all__ = [
    "AttentionEncoder",
    "BaselineEncoder",
    "ColorDecoder",
    "Encoder",
    "MeshGenerator",
    "PredictedMesh",
    "ResNetEncoder",
    "SphereDecoder",
]
