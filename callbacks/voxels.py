"""Voxels of the dataset in mesh coordinates: centres and a cube surface, to show beside a predicted mesh.

The dataset's grid (and :func:`recon.mesh.voxelize`) maps a mesh coordinate v ∈ (−0.5, 0.5) to the grid
coordinate ``g = (S−1)·v + S/2`` (``31·v + 16`` at S = 32), and voxel n covers ``g ∈ [n, n+1)`` (the
voxelizer marks ``floor(g)``; integer g are voxel corners). So voxel n spans
``v ∈ [(n − S/2)/(S−1), (n + 1 − S/2)/(S−1))`` and its centre is ``v = (n + 0.5 − S/2)/(S−1)``
(``(n − 15.5)/31``: voxels 0 and 31 are centred on −0.5 and +0.5, the cube's faces). The stored array is
in NMR's orientation: ``voxels[i, j, k]`` is the voxel with y-index i, x-index j and z-index S−1−k.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

# the 6 faces of the unit cube as quads (corner offsets), counter-clockwise seen from outside
_QUADS = {
    (-1, 0, 0): ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)),
    (1, 0, 0): ((1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)),
    (0, -1, 0): ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)),
    (0, 1, 0): ((0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)),
    (0, 0, -1): ((0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)),
    (0, 0, 1): ((0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)),
}


def grid_xyz(voxels: Tensor | np.ndarray) -> np.ndarray:
    """``voxels (S, S, S)`` bool in the dataset's orientation → the same grid indexed ``[x, y, z]``."""
    array = voxels.detach().cpu().numpy() if isinstance(voxels, Tensor) else np.asarray(voxels)
    if array.ndim != 3 or len(set(array.shape)) != 1:
        raise ValueError(f"voxels must be a cubic (S, S, S) grid, got shape {array.shape}")
    return np.ascontiguousarray(array.astype(bool).transpose(1, 0, 2)[:, :, ::-1])


def voxel_centers(voxels: Tensor | np.ndarray, surface_only: bool = False) -> np.ndarray:
    """Centres ``(N, 3)`` float32 in mesh coordinates of the filled voxels of ``voxels (S, S, S)``.

    ``surface_only`` keeps the voxels with an empty 6-neighbour (or on the grid's border): the shell a person
    compares with a mesh, without the interior's clutter.
    """
    grid = grid_xyz(voxels)
    size = grid.shape[0]
    if surface_only:
        grid = grid & ~_interior(grid)
    indices = np.argwhere(grid)  # (N, 3): x, y, z
    return ((indices + 0.5 - size / 2) / (size - 1)).astype(np.float32)


def voxel_surface(voxels: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boundary of the filled voxels as a triangle mesh in mesh coordinates: ``vertices (4Q, 3)`` float32,
    ``faces (2Q, 3)`` int64, one quad (two triangles, outward) per face between a filled and an empty voxel.
    Vertices are not shared between quads (simple, and flat-shaded by construction)."""
    grid = grid_xyz(voxels)
    size = grid.shape[0]
    padded = np.pad(grid, 1)
    vertices, faces = [], []
    count = 0
    for (dx, dy, dz), quad in _QUADS.items():
        neighbour = padded[1 + dx : 1 + dx + size, 1 + dy : 1 + dy + size, 1 + dz : 1 + dz + size]
        cells = np.argwhere(grid & ~neighbour)  # (Q, 3)
        corners = cells[:, None, :] + np.asarray(quad)[None]  # (Q, 4, 3) grid corners
        vertices.append(corners.reshape(-1, 3))
        base = count + 4 * np.arange(len(cells))[:, None]
        faces.append(np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=1).reshape(-1, 3))
        count += 4 * len(cells)
    corners = np.concatenate(vertices)
    return ((corners - size / 2) / (size - 1)).astype(np.float32), np.concatenate(faces).astype(np.int64)


def _interior(grid: np.ndarray) -> np.ndarray:
    """Filled voxels whose six neighbours are all filled (border voxels never are)."""
    padded = np.pad(grid, 1)
    size = grid.shape[0]
    inside = grid.copy()
    for axis in range(3):
        for shift in (-1, 1):
            inside &= np.roll(padded, shift, axis=axis)[1 : 1 + size, 1 : 1 + size, 1 : 1 + size]
    return inside
