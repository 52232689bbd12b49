"""recon: single-view 3D mesh reconstruction with a pure-PyTorch SoftRas soft rasterizer."""

__version__ = "0.1.0"
