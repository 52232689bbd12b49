"""Mesh files into coloured triangle meshes: loading with trimesh, clean-up, colours and normalisation.

Real collections are messy, so ``load_mesh`` takes any file trimesh reads (.obj, .glb/.gltf, .ply, .off,
.stl): scenes are flattened with their transforms and their parts concatenated, polygons arrive as
triangles (trimesh fans them), and each part's colour is taken from what the file holds — vertex colours,
face colours, a texture sampled at the vertices, or a material colour — else flat grey. Colours are per
face (a face's corners averaged), 8 bits per channel as files store them. Anything that makes an object
unusable raises ``MeshError`` with the reason, so a caller can skip the object and report it.
"""

from __future__ import annotations

import io
import os
import re
from typing import Literal, NamedTuple

import numpy as np

from recon.datamodules.primitives import ColoredMesh, merge

Normalization = Literal["longest", "diagonal", "none"]
NORMALIZATIONS: tuple[str, ...] = ("longest", "diagonal", "none")
GREY = 0.5  # the flat albedo of uncoloured parts (the model's own grey for colourless meshes)
# Where a part's colour came from, most specific first; an object of several kinds records them joined by "+".
COLOR_KINDS: tuple[str, ...] = ("vertex", "face", "texture", "material", "none")
_INSIDE = 0.5 + 1e-6  # the voxel cube (−0.5, 0.5)³, with float32 rounding room


class MeshError(ValueError):
    """An object that cannot become views and voxels; the message says why (empty, unreadable, ...)."""


class LoadedMesh(NamedTuple):
    """A file's triangles in its own coordinates and where their colours came from ("face", "vertex+none", ...)."""

    mesh: ColoredMesh
    colors: str


def load_mesh(path: str | os.PathLike[str]) -> LoadedMesh:
    """Read ``path`` with trimesh into one mesh: every part of a scene, transformed and concatenated."""
    import trimesh

    try:
        if os.fspath(path).lower().endswith(".obj"):  # read once; materials and textures are found beside it
            loaded = trimesh.load(io.BytesIO(_absolute_obj_indices(path)), file_type="obj", process=False,
                                  resolver=trimesh.resolvers.FilePathResolver(os.fspath(path)))
        else:
            loaded = trimesh.load(os.fspath(path), process=False)
    except Exception as error:  # trimesh raises anything from ValueError to struct.error on bad files
        # an index beyond the vertex list is what trimesh's readers meet at a face that names a missing vertex
        why = " (a face refers to a vertex the file does not have?)" if isinstance(error, IndexError) else ""
        raise MeshError(f"cannot be read{why}: {type(error).__name__}: {error}") from None
    geometries = loaded.dump() if isinstance(loaded, trimesh.Scene) else [loaded]
    parts, kinds = [], set()
    for geometry in geometries:
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            continue  # point clouds, paths and empty parts have nothing to render
        colors, kind = _face_colors(geometry)
        parts.append(ColoredMesh(np.asarray(geometry.vertices, dtype=np.float64),
                                 np.asarray(geometry.faces, dtype=np.int64), colors))
        kinds.add(kind)
    if not parts:
        raise MeshError("holds no triangles (empty mesh)")
    return LoadedMesh(merge(parts), "+".join(k for k in COLOR_KINDS if k in kinds))


# an OBJ element line (face, line, point) with a negative index, e.g. "f -3 -2 -1" or "f 1/-1 2/-2 3/-3"
_RELATIVE_INDEX = re.compile(rb"(?m)^[ \t]*[flp][ \t][^\n]*?[ \t/]-[0-9]")
_OBJ_COUNTED = {b"v": 0, b"vt": 1, b"vn": 2}  # the element lists an index component refers to, in order


def _absolute_obj_indices(path: str | os.PathLike[str]) -> bytes:
    """The OBJ file's text, with its negative (relative) indices made absolute.

    OBJ counts a negative index back from the last vertex (texture coordinate, normal) defined *before* the line
    (``f -3 -2 -1``: the three latest vertices); trimesh counts it from the end of the whole file, which gives
    every part but the last the last part's vertices, without an error."""
    with open(path, "rb") as file:
        text = file.read()
    if not _RELATIVE_INDEX.search(text):
        return text
    counts = [0, 0, 0]
    lines = text.split(b"\n")
    for number, line in enumerate(lines):
        words = line.split()
        if not words:
            continue
        if words[0] in _OBJ_COUNTED:
            counts[_OBJ_COUNTED[words[0]]] += 1
        elif words[0] in (b"f", b"l", b"p") and b"-" in line:
            corners = []
            for word in words[1:]:
                parts = word.split(b"/")
                for k, part in enumerate(parts[:3]):
                    if part.startswith(b"-") and part[1:].isdigit():
                        parts[k] = str(counts[k] + 1 + int(part)).encode()
                corners.append(b"/".join(parts))
            lines[number] = b" ".join([words[0], *corners])
    return b"\n".join(lines)


def _face_colors(geometry: object) -> tuple[np.ndarray, str]:
    """(F, 3) float32 RGB in [0, 1] per face of a trimesh part, and where it came from."""
    visual = geometry.visual  # type: ignore[attr-defined]
    faces = np.asarray(geometry.faces)  # type: ignore[attr-defined]
    rgb: np.ndarray | None = None
    kind = "none"
    try:
        if visual.kind == "face":
            rgb, kind = np.asarray(visual.face_colors)[:, :3].astype(np.float64), "face"
        elif visual.kind == "vertex":
            rgb, kind = _corner_mean(np.asarray(visual.vertex_colors), faces), "vertex"
        elif visual.kind == "texture":
            material = visual.material
            image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
            if visual.uv is not None and len(visual.uv) and image is not None:
                rgb, kind = _corner_mean(np.asarray(material.to_color(visual.uv)), faces), "texture"
            else:
                main = np.asarray(material.main_color)[:3].astype(np.float64)
                rgb, kind = np.broadcast_to(main, (len(faces), 3)), "material"
    except (AttributeError, IndexError, ValueError, TypeError):
        rgb, kind = None, "none"  # a malformed colour attribute: the geometry is still usable
    if rgb is None or rgb.shape != (len(faces), 3) or not np.isfinite(rgb).all():
        return np.full((len(faces), 3), GREY, dtype=np.float32), "none"
    return (np.clip(rgb, 0, 255) / 255.0).astype(np.float32), kind


def _corner_mean(vertex_rgba: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) mean of each face's corner colours from (V, ≥3) uint8 vertex colours."""
    return vertex_rgba[:, :3].astype(np.float64)[faces].mean(axis=1)


def clean_faces(mesh: ColoredMesh) -> ColoredMesh:
    """Drop degenerate faces (repeated or collinear corners) and duplicates (the same three points in any
    order: a double-sided sheet modelled twice renders and voxelizes the same once), keeping face order.

    Raises ``MeshError`` for non-finite coordinates or when no face is left.
    """
    vertices, faces = mesh.vertices, mesh.faces
    if len(faces) == 0:
        raise MeshError("holds no triangles (empty mesh)")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"faces index vertices outside 0..{len(vertices) - 1}")
    if not np.isfinite(vertices[np.unique(faces)]).all():
        raise MeshError("has non-finite (NaN or infinite) vertex coordinates")
    corners = vertices.astype(np.float64)[faces]
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    keep = area > 0
    # duplicates by position, not index: files often repeat vertices per face
    triples = np.sort(_point_ids(vertices)[faces][keep], axis=1)
    if triples.size and triples.max() < 2**21:  # one int64 key per triple: a 1-D unique, ~10x faster
        triples = (triples[:, 0] << 42) | (triples[:, 1] << 21) | triples[:, 2]
    _, first = np.unique(triples, axis=0 if triples.ndim == 2 else None, return_index=True)
    kept = np.flatnonzero(keep)[np.sort(first)]
    if len(kept) == 0:
        raise MeshError(f"all {len(faces)} faces are degenerate (zero area)")
    if len(kept) == len(faces):
        return mesh
    return mesh._replace(faces=faces[kept], face_colors=mesh.face_colors[kept])


def outside_cube(mesh: ColoredMesh) -> bool:
    """Whether a vertex used by a face lies outside the voxel cube (−0.5, 0.5)³ (beyond float32 rounding)."""
    return bool(np.abs(mesh.vertices[np.unique(mesh.faces)]).max() > _INSIDE)


def _point_ids(vertices: np.ndarray) -> np.ndarray:
    """(V,) int64: the same id for vertices at the same position (a lexicographic sort, not a row unique)."""
    order = np.lexsort(vertices.T[::-1])
    ordered = vertices[order]
    new = np.ones(len(vertices), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    ids = np.empty(len(vertices), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


def normalize_mesh(mesh: ColoredMesh, mode: Normalization = "longest", clip: bool = False) -> ColoredMesh:
    """Place a mesh in the voxel cube (−0.5, 0.5)³, vertices float32.

    ``longest``: bounding-box centre at the origin, longest side 1 (NMR's and ``synth``'s convention).
    ``diagonal``: the same centre, bounding-box diagonal 1 (ShapeNetCore v2's ``model_normalized``).
    ``none``: coordinates kept; a vertex outside the cube raises ``MeshError``, or with ``clip`` is clamped
    onto it. Computed in float64 from the used vertices, so the result does not depend on unused ones.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalization {mode!r}; expected one of {list(NORMALIZATIONS)}")
    vertices = mesh.vertices.astype(np.float64)
    used = vertices[np.unique(mesh.faces)]
    low, high = used.min(0), used.max(0)
    if mode == "none":
        if outside_cube(mesh):
            if not clip:
                raise MeshError(f"lies outside the voxel cube (-0.5, 0.5)³ (bounding box {np.round(low, 3).tolist()} "
                                f"to {np.round(high, 3).tolist()}) with normalization 'none'")
            vertices = np.clip(vertices, -0.5, 0.5)
        return mesh._replace(vertices=vertices.astype(np.float32))
    extent = high - low
    scale = extent.max() if mode == "longest" else float(np.linalg.norm(extent))
    if not scale > 0:
        raise MeshError("has zero extent (all vertices at one point)")
    return mesh._replace(vertices=((vertices - (low + high) / 2) / scale).astype(np.float32))

