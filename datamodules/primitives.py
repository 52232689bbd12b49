"""Closed, outward-oriented primitive meshes (boxes, cylinders, cones, ellipsoids, lofts) with a colour.

Every primitive is a closed 2-manifold whose faces wind counter-clockwise seen from outside, so the
voxelizer's ray-parity fill sees an inside and the renderer's lighting sees outward normals. Parts of a
synthetic object may overlap: the voxelizer fills each closed surface and the union is what a scan of
the assembled object would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class ColoredMesh(NamedTuple):
    """A triangle mesh with one RGB colour per face.

    vertices: (V, 3) float32; faces: (F, 3) int64, CCW seen from outside; face_colors: (F, 3) float32 in [0, 1].
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_colors: np.ndarray


def rotation(axis: str, degrees: float) -> np.ndarray:
    """(3, 3) right-handed rotation about the world ``axis`` ("x", "y" or "z")."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    matrices = {
        "x": [[1, 0, 0], [0, c, -s], [0, s, c]],
        "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
        "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]],
    }
    return np.asarray(matrices[axis], dtype=np.float64)


# Rotations taking the primitives' own +y axis onto a world axis.
AXIS_FROM_Y = {"y": np.eye(3), "x": rotation("z", -90.0), "z": rotation("x", 90.0)}


def _solid(vertices: np.ndarray, faces: np.ndarray, color: Sequence[float], center: Sequence[float],
           turn: np.ndarray | None) -> ColoredMesh:
    """Place a solid built around the origin and make its winding outward.

    The signed volume Σ a·(b×c)/6 of a closed mesh is positive iff its faces wind CCW seen from outside;
    a negative one means the outline was given clockwise, so the winding is reversed.
    """
    if turn is not None:
        vertices = vertices @ turn.T
    vertices = vertices + np.asarray(center, dtype=np.float64)
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    if np.einsum("ij,ij->i", a, np.cross(b, c)).sum() < 0:
        faces = faces[:, ::-1]
    colors = np.broadcast_to(np.asarray(color, dtype=np.float32), (len(faces), 3))
    return ColoredMesh(vertices.astype(np.float32), np.ascontiguousarray(faces, dtype=np.int64), colors.copy())


def loft(bottom: np.ndarray, top: np.ndarray, height: float, color: Sequence[float],
         center: Sequence[float] = (0.0, 0.0, 0.0), turn: np.ndarray | None = None) -> ColoredMesh:
    """A solid between two outlines in the xz plane, ``bottom`` at y = -height/2 and ``top`` at +height/2.

    bottom, top: (n, 2) (x, z) outlines with the same point count, star-shaped about (0, 0) so that the
    caps can be fans around a centre vertex. Boxes, cylinders, frusta and tapered hulls are lofts.
    """
    n = len(bottom)
    ring = lambda outline, y: np.stack([outline[:, 0], np.full(n, y), outline[:, 1]], axis=1)  # noqa: E731
    vertices = np.concatenate([ring(bottom, -height / 2), ring(top, height / 2),
                               [[0.0, -height / 2, 0.0], [0.0, height / 2, 0.0]]])
    i = np.arange(n)
    j = (i + 1) % n
    sides = np.concatenate([np.stack([i, n + i, n + j], 1), np.stack([i, n + j, j], 1)])
    caps = np.concatenate([np.stack([np.full(n, 2 * n), i, j], 1), np.stack([np.full(n, 2 * n + 1), n + j, n + i], 1)])
    return _solid(vertices, np.concatenate([sides, caps]), color, center, turn)


def circle(radius_x: float, radius_z: float, segments: int, phase: float = 0.0) -> np.ndarray:
    """(segments, 2) points of an ellipse in the xz plane."""
    angles = phase + np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    return np.stack([radius_x * np.cos(angles), radius_z * np.sin(angles)], axis=1)


def box(size: Sequence[float], color: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0),
        turn: np.ndarray | None = None) -> ColoredMesh:
    """An axis-aligned box of edge lengths ``size`` (x, y, z) before the rotation ``turn``."""
    sx, sy, sz = size
    rectangle = np.array([[-sx / 2, -sz / 2], [sx / 2, -sz / 2], [sx / 2, sz / 2], [-sx / 2, sz / 2]])
    return loft(rectangle, rectangle, sy, color, center, turn)


def cylinder(radius: float, height: float, color: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0),
             axis: str = "y", top_radius: float | None = None, segments: int = 16,
             turn: np.ndarray | None = None) -> ColoredMesh:
    """A cylinder (or frustum when ``top_radius`` differs) of ``height`` along the world ``axis``."""
    top = radius if top_radius is None else top_radius
    turn = AXIS_FROM_Y[axis] if turn is None else turn @ AXIS_FROM_Y[axis]
    return loft(circle(radius, radius, segments), circle(top, top, segments), height, color, center, turn)


def cone(radius: float, height: float, color: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0),
         axis: str = "y", segments: int = 16, turn: np.ndarray | None = None) -> ColoredMesh:
    """A cone with its apex at +height/2 along ``axis`` (one apex vertex: no zero-area faces)."""
    ring = circle(radius, radius, segments)
    vertices = np.concatenate([np.stack([ring[:, 0], np.full(segments, -height / 2), ring[:, 1]], 1),
                               [[0.0, height / 2, 0.0], [0.0, -height / 2, 0.0]]])
    i = np.arange(segments)
    j = (i + 1) % segments
    faces = np.concatenate([np.stack([i, np.full(segments, segments), j], 1),
                            np.stack([np.full(segments, segments + 1), i, j], 1)])
    turn = AXIS_FROM_Y[axis] if turn is None else turn @ AXIS_FROM_Y[axis]
    return _solid(vertices, faces, color, center, turn)


def ellipsoid(radii: Sequence[float], color: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0),
              segments: int = 16, rings: int = 8, turn: np.ndarray | None = None) -> ColoredMesh:
    """A UV ellipsoid with semi-axes ``radii`` (x, y, z): ``segments`` around y, ``rings`` pole to pole."""
    polar = np.linspace(0.0, np.pi, rings + 1)[1:-1]
    azimuth = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    p, a = np.meshgrid(polar, azimuth, indexing="ij")
    body = np.stack([np.sin(p) * np.cos(a), np.cos(p), np.sin(p) * np.sin(a)], axis=-1).reshape(-1, 3)
    vertices = np.concatenate([body, [[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]]) * np.asarray(radii, dtype=np.float64)
    top, bottom = len(body), len(body) + 1
    i = np.arange(segments)
    j = (i + 1) % segments
    faces = [np.stack([np.full(segments, top), j, i], 1),
             np.stack([np.full(segments, bottom), (rings - 2) * segments + i, (rings - 2) * segments + j], 1)]
    for r in range(rings - 2):
        upper, lower = r * segments, (r + 1) * segments
        faces += [np.stack([upper + i, upper + j, lower + j], 1), np.stack([upper + i, lower + j, lower + i], 1)]
    return _solid(vertices, np.concatenate(faces), color, center, turn)


def merge(parts: Sequence[ColoredMesh]) -> ColoredMesh:
    """Concatenate parts into one mesh (faces re-indexed; overlapping parts stay separate surfaces)."""
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    return ColoredMesh(np.concatenate([p.vertices for p in parts]),
                       np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)]),
                       np.concatenate([p.face_colors for p in parts]))


def normalize(mesh: ColoredMesh) -> ColoredMesh:
    """Centre on the bounding box and scale the longest side to 1 (ShapeNet's convention): (-0.5, 0.5)³."""
    low, high = mesh.vertices.min(0), mesh.vertices.max(0)
    vertices = (mesh.vertices - (low + high) / 2) / (high - low).max()
    return mesh._replace(vertices=vertices.astype(np.float32))
