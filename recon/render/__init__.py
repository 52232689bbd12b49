"""SoftRas in PyTorch: camera, lighting and the soft rasterizer, on CPU and CUDA.

On CPU the rasterizer runs numba-compiled kernels by default (:mod:`recon.render.numba_path`); elsewhere, and
with ``RECON_FUSED=0``, PyTorch tensor operations (:mod:`recon.render.fused` explains the switch).

The public surface: :class:`SoftRenderer` (camera + lighting + rasterizer as one module), its settings
(:class:`RasterSettings`, :class:`Lighting`), the camera functions and :func:`soft_rasterize` for faces already
projected. Culling and pair lists are internals of :mod:`recon.render.culling` and :mod:`recon.render.pairs`.
"""

from recon.render.camera import eye_from_angles, look_at, look_at_rotation, ndc_to_pixel, perspective, project
from recon.render.lighting import Lighting
from recon.render.rasterize import soft_rasterize
from recon.render.renderer import SoftRenderer
from recon.render.settings import RasterSettings

__all__ = [
    "Lighting",
    "RasterSettings",
    "SoftRenderer",
    "eye_from_angles",
    "look_at",
    "look_at_rotation",
    "ndc_to_pixel",
    "perspective",
    "project",
    "soft_rasterize",
]
