"""The template mesh the decoder deforms: a level-3 icosphere (642 vertices, 1280 faces, 1920 edges).

It plays the role of SoftRas's ``data/obj/sphere/sphere_642.obj`` but is generated in code, so no data file is
needed: an icosahedron subdivided three times (each triangle split into four at its edge midpoints, a midpoint
shared by the two faces of its edge) and projected onto the unit sphere after every level.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import Tensor


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """The regular icosahedron with vertices (0, ±1, ±φ) and its cyclic permutations, on the unit sphere.

    Returns vertices (12, 3) float64 and faces (20, 3) int64, counter-clockwise seen from outside.
    """
    phi = (1.0 + 5.0**0.5) / 2.0
    vertices = np.array(
        [
            [-1, phi, 0], [1, phi, 0], [-1, -phi, 0], [1, -phi, 0],
            [0, -1, phi], [0, 1, phi], [0, -1, -phi], [0, 1, -phi],
            [phi, 0, -1], [phi, 0, 1], [-phi, 0, -1], [-phi, 0, 1],
        ],
        dtype=np.float64,
    )  # fmt: skip
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    faces = np.array(
        [
            [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
            [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
            [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
            [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
        ],
        dtype=np.int64,
    )  # fmt: skip
    return vertices, faces


def _subdivide(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split every face into four at its edge midpoints, projected onto the unit sphere.

    Each edge gets exactly one midpoint (keyed by its sorted vertex pair), so the mesh stays closed and
    watertight. New vertices are numbered in order of first appearance, which keeps the result deterministic.
    Face (a, b, c) becomes (a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca): all keep the winding of the
    parent, so outward orientation is preserved.
    """
    points = [row for row in vertices]
    midpoint_of: dict[tuple[int, int], int] = {}

    def midpoint(i: int, j: int) -> int:
        key = (i, j) if i < j else (j, i)
        if key not in midpoint_of:
            m = (vertices[i] + vertices[j]) / 2.0
            points.append(m / np.linalg.norm(m))
            midpoint_of[key] = len(points) - 1
        return midpoint_of[key]

    new_faces = []
    for a, b, c in faces.tolist():
        ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
        new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
    return np.stack(points), np.asarray(new_faces, dtype=np.int64)


@cache
def _icosphere(level: int) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = _icosahedron()
    for _ in range(level):
        vertices, faces = _subdivide(vertices, faces)
    return vertices, faces


def icosphere(level: int = 3) -> tuple[Tensor, Tensor]:
    """A unit icosphere subdivided ``level`` times: 10·4^level + 2 vertices, 20·4^level faces.

    Returns fresh tensors (callers may modify them): vertices (V, 3) float32 on the unit sphere and faces
    (F, 3) int64, counter-clockwise seen from outside (outward normals). Vertex degrees are 5 (the 12
    icosahedron corners) or 6.
    """
    if level < 0:
        raise ValueError(f"icosphere level must be >= 0, got {level}")
    vertices, faces = _icosphere(level)
    return torch.tensor(vertices, dtype=torch.float32), torch.tensor(faces, dtype=torch.int64)


def template_sphere() -> tuple[Tensor, Tensor]:
    """The decoder's template: the level-3 unit icosphere, vertices (642, 3) float32, faces (1280, 3) int64.

    Like SoftRas's sphere_642.obj it has 1920 edges, vertex degree 5 or 6 and outward (CCW) faces. It also
    has coordinates that are exactly 0 (vertices on the three golden-rectangle planes x=0, y=0, z=0 and the
    midpoints between them); SoftRas's decoder freezes such coordinates at 0.5·centroid.
    """
    return icosphere(3)
