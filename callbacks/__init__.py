"""Logging callbacks: silhouette grids, meshes beside their voxels, and the test results (W&B and run folder)."""

from recon.callbacks.meshes import MeshLogger
from recon.callbacks.results import VoxelIoULogger, results_markdown
from recon.callbacks.run_folder import run_folder
from recon.callbacks.samples import ValidationSamplesCallback
from recon.callbacks.silhouettes import SilhouetteLogger, image_grid
from recon.callbacks.voxels import voxel_centers, voxel_surface

__all__ = [
    "MeshLogger",
    "SilhouetteLogger",
    "ValidationSamplesCallback",
    "VoxelIoULogger",
    "image_grid",
    "results_markdown",
    "run_folder",
    "voxel_centers",
    "voxel_surface",
]
