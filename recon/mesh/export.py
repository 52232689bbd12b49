"""Write a mesh to .obj, .glb or .ply (chosen by suffix), atomically, with optional colours."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import Tensor

from recon.atomic import atomic_write

_FORMATS = {".obj": "obj", ".glb": "glb", ".ply": "ply"}


def _as_array(name: str, value: Tensor | np.ndarray, rows: int | None, dtype: type) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    if array.ndim != 2 or array.shape[1] != 3 or (rows is not None and array.shape[0] != rows):
        expected = f"({rows}, 3)" if rows is not None else "(N, 3)"
        raise ValueError(f"save_mesh: {name} must have shape {expected}, got {tuple(array.shape)}")
    return array.astype(dtype, copy=False)


def _rgba8(name: str, colors: Tensor | np.ndarray, rows: int) -> np.ndarray:
    """Colours (rows, 3) float in [0, 1] -> (rows, 4) uint8 RGBA, clipped, alpha 255."""
    rgb = _as_array(name, colors, rows, np.float64)
    rgb8 = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.concatenate([rgb8, np.full((rows, 1), 255, dtype=np.uint8)], axis=1)


def save_mesh(
    path: str | os.PathLike[str],
    vertices: Tensor | np.ndarray,
    faces: Tensor | np.ndarray,
    vertex_colors: Tensor | np.ndarray | None = None,
    face_colors: Tensor | np.ndarray | None = None,
) -> Path:
    """Save one mesh; the format follows the suffix (.obj, .glb or .ply). Returns the path written.

    Args:
        path: destination; its folder must exist. Written to a temporary file beside it, then renamed, so an
            interrupted or failed write never leaves a partial file (an existing file stays untouched).
        vertices: (V, 3) float positions; written in order (no merging or re-indexing: ``process=False``).
        faces: (F, 3) int vertex indices.
        vertex_colors: optional (V, 3) RGB in [0, 1] (clipped, stored as 8-bit): kept by .glb and .ply; .obj
            gets them as the common "v x y z r g b" extension.
        face_colors: optional (F, 3) RGB in [0, 1]; ignored when vertex_colors are given. .ply stores them per
            face. .glb and .obj have no per-face colours, so there every face gets its own three vertices
            (3F vertices in face-corner order) coloured with the face's colour: a flat-shaded look.
    """
    path = Path(path)
    file_type = _FORMATS.get(path.suffix.lower())
    if file_type is None:
        raise ValueError(
            f"save_mesh: unknown mesh suffix {path.suffix!r} in {path}; expected .obj, .glb or .ply"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"save_mesh: folder {path.parent} does not exist")
    v = _as_array("vertices", vertices, None, np.float64)
    f = _as_array("faces", faces, None, np.int64)
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ValueError(f"save_mesh: face indices must lie in [0, {v.shape[0]})")
    kwargs = {}
    if vertex_colors is not None:
        kwargs["vertex_colors"] = _rgba8("vertex_colors", vertex_colors, v.shape[0])
    elif face_colors is not None and file_type == "ply":
        kwargs["face_colors"] = _rgba8("face_colors", face_colors, f.shape[0])
    elif face_colors is not None:
        # trimesh would convert face to vertex colours by averaging (and needs scipy to do it); split instead.
        kwargs["vertex_colors"] = np.repeat(_rgba8("face_colors", face_colors, f.shape[0]), 3, axis=0)
        v, f = v[f].reshape(-1, 3), np.arange(3 * f.shape[0], dtype=np.int64).reshape(-1, 3)
    import trimesh  # here, not at import time: only writing a mesh needs it

    mesh = trimesh.Trimesh(vertices=v, faces=f, process=False, **kwargs)
    data = mesh.export(file_type=file_type)
    payload = data.encode() if isinstance(data, str) else data

    with atomic_write(path, "wb") as file:
        file.write(payload)
    return path
