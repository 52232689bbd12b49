"""recon.mesh.save_mesh: format by suffix, vertex order and colours survive a round trip, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from recon.mesh import icosphere, save_mesh


def _load(path: Path) -> trimesh.Trimesh:
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):  # GLB opens as a scene of one geometry
        (loaded,) = loaded.geometry.values()
    return loaded


@pytest.mark.parametrize("suffix", [".obj", ".glb", ".ply"])
def test_round_trip_keeps_vertex_order_and_colours(tmp_path: Path, suffix: str) -> None:
    vertices, faces = icosphere(1)
    colors = torch.rand(vertices.shape[0], 3, generator=torch.Generator().manual_seed(0))
    written = save_mesh(tmp_path / f"mesh{suffix}", vertices, faces, vertex_colors=colors)
    assert written == tmp_path / f"mesh{suffix}" and written.is_file()
    mesh = _load(written)
    np.testing.assert_allclose(mesh.vertices, vertices.numpy(), atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces.numpy())
    if suffix in (".glb", ".ply"):
        stored = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
        np.testing.assert_allclose(stored, colors.numpy(), atol=0.5 / 255 + 1e-9)
    assert [p.name for p in tmp_path.iterdir()] == [f"mesh{suffix}"], "no temporary file left behind"
    umask = os.umask(0o022)
    os.umask(umask)
    assert written.stat().st_mode & 0o777 == 0o666 & ~umask, "permissions of a normally created file"


def test_face_colours(tmp_path: Path) -> None:
    vertices, faces = icosphere(0)
    colors = np.linspace(0, 1, 60).reshape(20, 3)
    ply = _load(save_mesh(tmp_path / "mesh.ply", vertices, faces, face_colors=colors))
    assert len(ply.vertices) == 12
    np.testing.assert_allclose(
        np.asarray(ply.visual.face_colors)[:, :3] / 255.0, colors, atol=0.5 / 255 + 1e-9
    )
    glb = _load(save_mesh(tmp_path / "mesh.glb", vertices, faces, face_colors=colors))
    assert len(glb.vertices) == 60  # one vertex per face corner, coloured like its face
    corner_colors = np.asarray(glb.visual.vertex_colors)[:, :3].reshape(20, 3, 3) / 255.0
    np.testing.assert_allclose(corner_colors, np.repeat(colors[:, None], 3, axis=1), atol=0.5 / 255 + 1e-9)
    np.testing.assert_allclose(glb.vertices, vertices.numpy()[faces.numpy()].reshape(-1, 3), atol=1e-6)


def test_unknown_suffix_and_bad_shapes_raise(tmp_path: Path) -> None:
    vertices, faces = icosphere(0)
    with pytest.raises(ValueError, match=r"'\.stl'"):
        save_mesh(tmp_path / "mesh.stl", vertices, faces)
    with pytest.raises(ValueError, match="vertex_colors"):
        save_mesh(tmp_path / "mesh.ply", vertices, faces, vertex_colors=torch.rand(5, 3))
    with pytest.raises(ValueError, match="face indices"):
        save_mesh(tmp_path / "mesh.ply", vertices, faces + 12)
    with pytest.raises(FileNotFoundError, match="missing"):
        save_mesh(tmp_path / "missing" / "mesh.ply", vertices, faces)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_existing_file_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vertices, faces = icosphere(0)
    target = save_mesh(tmp_path / "mesh.obj", vertices, faces)
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("recon.atomic.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_mesh(target, vertices * 2, faces)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.obj"], "the temporary file is removed"
