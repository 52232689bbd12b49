"""SoftRas in pure PyTorch: camera, lighting and the soft rasterizer, on CPU and CUDA."""

from recon.render.camera import eye_from_angles, look_at, look_at_rotation, ndc_to_pixel, perspective, project
from recon.render.lighting import directional_light, face_normals, vertex_normals
from recon.render.pairs import PixelFacePairs, culling_threshold, find_pairs
from recon.render.rasterize import soft_rasterize
from recon.render.renderer import SoftRenderer

__all__ = [
    "PixelFacePairs",
    "SoftRenderer",
    "culling_threshold",
    "directional_light",
    "eye_from_angles",
    "face_normals",
    "find_pairs",
    "look_at",
    "look_at_rotation",
    "ndc_to_pixel",
    "perspective",
    "project",
    "soft_rasterize",
    "vertex_normals",
]
