"""Meshes: the template sphere, SoftRas's regularizers and voxelization, and mesh export."""

from recon.mesh.export import save_mesh
from recon.mesh.regularizers import FlattenLoss, LaplacianLoss, unique_edges
from recon.mesh.template import icosphere, template_sphere
from recon.mesh.voxelize import voxelize

__all__ = [
    "FlattenLoss",
    "LaplacianLoss",
    "icosphere",
    "save_mesh",
    "template_sphere",
    "unique_edges",
    "voxelize",
]
