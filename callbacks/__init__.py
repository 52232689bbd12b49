"""Callbacks: silhouette grids, meshes beside their voxels, test results (W&B and run folder), mesh files,
last.ckpt at every validation and when a fit is interrupted, and a progress bar that counts steps."""

from recon.callbacks.checkpoint import ModelCheckpoint
from recon.callbacks.interrupt import InterruptCheckpoint
from recon.callbacks.meshes import MeshLogger
from recon.callbacks.progress import StepProgressBar
from recon.callbacks.results import VoxelIoULogger, results_markdown
from recon.callbacks.run_folder import run_folder
from recon.callbacks.samples import ValidationSamplesCallback
from recon.callbacks.silhouettes import SilhouetteLogger, image_grid
from recon.callbacks.voxels import voxel_centers, voxel_surface
from recon.callbacks.writer import MeshWriter

__all__ = [
    "InterruptCheckpoint",
    "MeshLogger",
    "MeshWriter",
    "ModelCheckpoint",
    "SilhouetteLogger",
    "StepProgressBar",
    "ValidationSamplesCallback",
    "VoxelIoULogger",
    "image_grid",
    "results_markdown",
    "run_folder",
    "voxel_centers",
    "voxel_surface",
]
