"""The synthetic generator: closed primitives, camera/image/voxel conventions, determinism, balance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.datamodules.categories import SHAPENET_CATEGORIES
from recon.datamodules.h5 import open_views
from recon.datamodules.primitives import (
    ColoredMesh,
    box,
    cone,
    cylinder,
    ellipsoid,
    merge,
    normalize,
    rotation,
)
from recon.datamodules.shapes import FAMILIES, make_shape
from recon.datamodules.synthetic import ViewRenderer, generate_synthetic, object_rng, voxelize_mesh

NAMES = [c.name for c in SHAPENET_CATEGORIES]


def _closed_and_outward(mesh: ColoredMesh) -> float:
    """Signed volume of a mesh after checking every directed edge has exactly one reverse twin."""
    f = mesh.faces
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).tolist()
    directed = set(map(tuple, edges))
    assert len(directed) == len(edges), "an edge is used twice in the same direction (inconsistent winding)"
    assert all((b, a) in directed for a, b in directed), "an edge has no twin: the surface is open"
    v = mesh.vertices.astype(np.float64)
    a, b, c = (v[f[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def test_primitives_are_closed_outward_and_have_the_right_volume() -> None:
    color = (0.5, 0.5, 0.5)
    turn = rotation("x", 30.0) @ rotation("y", 20.0)
    assert _closed_and_outward(box((1, 2, 3), color, turn=turn)) == pytest.approx(6.0)
    assert _closed_and_outward(cylinder(1, 1, color, axis="x", segments=256)) == pytest.approx(np.pi, rel=1e-3)
    assert _closed_and_outward(cone(1, 3, color, axis="z", segments=256)) == pytest.approx(np.pi, rel=1e-3)
    sphere = ellipsoid((1, 2, 3), color, segments=256, rings=128, turn=turn)
    assert _closed_and_outward(sphere) == pytest.approx(8 * np.pi, rel=2e-3)


@pytest.mark.parametrize("name", NAMES)
def test_every_family_is_closed_parts_in_the_unit_box(name: str) -> None:
    for index in range(4):
        rng = object_rng(0, "train", name, index)
        parts = FAMILIES[name](rng)
        assert len(parts) >= 2  # assembled from several parts
        assert all(_closed_and_outward(part) > 0 for part in parts)
        mesh = normalize(merge(parts))
        extent = mesh.vertices.max(0) - mesh.vertices.min(0)
        assert extent.max() == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(mesh.vertices.max(0) + mesh.vertices.min(0), 0.0, atol=1e-6)
        assert 32 <= len(mesh.faces) <= 2000
        np.testing.assert_array_equal(make_shape(name, object_rng(0, "train", name, index)).vertices, mesh.vertices)


def test_categories_differ_in_shape() -> None:
    """A nearest-centroid classifier on bounding-box extents alone separates the families far above chance."""
    def features(name: str, index: int, seed: int) -> np.ndarray:
        v = make_shape(name, object_rng(seed, "train", name, index)).vertices
        return np.concatenate([v.max(0) - v.min(0), v.std(0)])

    centroids = np.stack([np.mean([features(n, i, 0) for i in range(20)], 0) for n in NAMES])
    hits = [np.argmin(((centroids - features(n, i, 1)) ** 2).sum(1)) == c for c, n in enumerate(NAMES) for i in range(10)]
    assert np.mean(hits) > 0.4  # chance is 1/13


# ---- conventions: camera, images and voxels agree -------------------------------------------------------


def _project(points: np.ndarray, view: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (row, col) of world points in dataset view ``view``, from docs/conventions.md#camera written out by hand."""
    el, az = np.radians(30.0), np.radians(-15.0 * view)
    eye = 2.732 * np.array([np.cos(el) * np.sin(az), np.sin(el), -np.cos(el) * np.cos(az)])
    z = -eye / np.linalg.norm(eye)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    cam = (points - eye) @ np.stack([x, y, z]).T
    tan = np.tan(np.radians(15.0))
    x_ndc, y_ndc = cam[:, 0] / (cam[:, 2] * tan), cam[:, 1] / (cam[:, 2] * tan)
    return (1 - y_ndc) * size / 2 - 0.5, (x_ndc + 1) * size / 2 - 0.5


def _voxel_centres(voxels: np.ndarray) -> np.ndarray:
    """World centres of occupied voxels, reading GT[i, j, k] as (y-index i, x-index j, z-index S-1-k) on the
    grid g = 31·v + 16 (docs/conventions.md#voxels)."""
    s = voxels.shape[0]
    i, j, k = np.nonzero(voxels)
    grid = np.stack([j, i, s - 1 - k], axis=1) + 0.5
    return (grid - s / 2) / (s - 1)


def _voxels_inside_masks(voxels: np.ndarray, alpha: np.ndarray) -> float:
    """Fraction of (occupied voxel, view) pairs whose centre projects into that view's mask, grown by 1 px
    (a surface voxel's centre may lie up to half a voxel, ~0.7 px, outside the surface)."""
    centres = _voxel_centres(voxels)
    inside = []
    for view in range(alpha.shape[0]):
        mask = alpha[view] > 0
        grown = mask.copy()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                grown |= np.roll(mask, (dr, dc), axis=(0, 1))
        rows, cols = _project(centres, view)
        r, c = np.clip(np.round(rows).astype(int), 0, 63), np.clip(np.round(cols).astype(int), 0, 63)
        inside.append(grown[r, c])
    return float(np.concatenate(inside).mean())


WRONG_ORIENTATIONS = {
    "transpose ij": lambda v: v.transpose(1, 0, 2),
    "transpose ik": lambda v: v.transpose(2, 1, 0),
    "transpose jk": lambda v: v.transpose(0, 2, 1),
    "flip i": lambda v: v[::-1],
    "flip j": lambda v: v[:, ::-1],
    "flip k": lambda v: v[:, :, ::-1],
}


def _asymmetric_object() -> ColoredMesh:
    """No mirror or axis-swap symmetry: an off-centre tower, a long bar and a cone in one corner."""
    red, blue = (0.8, 0.2, 0.2), (0.2, 0.3, 0.8)
    return normalize(merge([box((0.3, 0.9, 0.3), red, (-0.3, 0.45, 0.2)), box((1.0, 0.15, 0.2), blue, (0.1, 0.08, -0.3)),
                            cone(0.2, 0.4, blue, (0.35, 0.2, 0.35))]))


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "one_per_category.h5"
    generate_synthetic(path, {"train": 1}, seed=3, workers=1)
    return path


def test_stored_voxels_project_inside_stored_masks_and_wrong_grids_do_not(synthetic_file: Path) -> None:
    with open_views(synthetic_file) as file:
        images, voxels = file["train"]["images"][()], file["train"]["voxels"][()]
    mesh = _asymmetric_object()
    images = np.concatenate([images, ViewRenderer()(mesh)[None]])
    voxels = np.concatenate([voxels, voxelize_mesh(mesh)[None]])
    agreement = [_voxels_inside_masks(v, im[:, 3]) for v, im in zip(voxels, images, strict=True)]
    assert min(agreement) > 0.995, agreement
    for name, wrong in WRONG_ORIENTATIONS.items():
        worst = min(_voxels_inside_masks(wrong(v), im[:, 3]) for v, im in zip(voxels, images, strict=True))
        assert worst < 0.9, f"a voxel grid with '{name}' passes the convention check ({worst:.3f})"


def test_source_silhouettes_match_stored_alpha_and_images_follow_nmr_storage(synthetic_file: Path) -> None:
    """The training renderer's silhouette of each source mesh covers the stored mask (both binarised at 0.5:
    soft and anti-aliased edges differ by design); flipped or mirrored masks do not."""
    from recon.render import SoftRenderer, eye_from_angles

    views = torch.arange(0, 24, 3)  # 8 of the 24 views: every azimuth octant, a third of the rendering time
    eyes = eye_from_angles(2.732, 30.0, -15.0 * views.float())
    renderer = SoftRenderer(image_size=64)
    with open_views(synthetic_file) as file:
        images = file["train"]["images"][()][:, views.numpy()]
    overlap = {"as stored": [0, 0], "upside down": [0, 0], "mirrored": [0, 0]}  # intersection, union
    for index, name in enumerate(NAMES):
        mesh = make_shape(name, object_rng(3, "train", name, 0))
        vertices = torch.from_numpy(mesh.vertices)[None].expand(len(views), -1, -1)
        silhouette = renderer.silhouette(vertices, torch.from_numpy(mesh.faces), eyes).numpy() > 0.5
        alpha = images[index, :, 3]
        for key, mask in (("as stored", alpha), ("upside down", alpha[:, ::-1]), ("mirrored", alpha[:, :, ::-1])):
            overlap[key][0] += int((silhouette & (mask > 127)).sum())
            overlap[key][1] += int((silhouette | (mask > 127)).sum())
        stored = overlap["as stored"]
        assert (silhouette & (alpha > 127)).sum() / (silhouette | (alpha > 127)).sum() > 0.8, name
        rgb = images[index, :, :3]
        assert (rgb[np.broadcast_to(alpha[:, None] == 0, rgb.shape)] == 0).all()  # NMR: background 0
        assert rgb[np.broadcast_to(alpha[:, None] == 255, rgb.shape)].mean() > 30  # inverted colours, not black
    iou = {key: i / u for key, (i, u) in overlap.items()}
    assert iou["as stored"] > 0.95 and stored[1] > 0
    assert iou["upside down"] < 0.7 and iou["mirrored"] < 0.8, iou


def test_same_seed_same_bytes_and_balanced_categories(tmp_path: Path) -> None:
    counts = {"train": 2, "val": 1}
    paths = [tmp_path / f"{k}.h5" for k in ("a", "b", "c")]
    for path, seed in zip(paths, (5, 5, 6), strict=True):
        generate_synthetic(path, counts, seed=seed, categories=["lamp", "car"], supersample=1, workers=1)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert digest[0] == digest[1] and digest[0] != digest[2]
    with open_views(paths[0]) as file:
        assert [n.decode() for n in file["categories"][()]] == ["02958343", "03636649"]  # canonical order
        assert np.bincount(file["train"]["category"][()]).tolist() == [2, 2]
        assert np.bincount(file["val"]["category"][()]).tolist() == [1, 1]
        assert file.attrs["source"] == "synthetic" and file.attrs["seed"] == 5


@pytest.mark.slow
def test_worker_processes_give_the_same_bytes(tmp_path: Path) -> None:
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    generate_synthetic(one, {"train": 3}, seed=1, categories=["chair"], workers=1)
    generate_synthetic(two, {"train": 3}, seed=1, categories=["chair"], workers=2)
    assert one.read_bytes() == two.read_bytes()


def test_cli_synth_writes_a_file_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recon.datamodules.cli import main

    out = tmp_path / "cli.h5"
    args = ["synth", str(out), "--train", "1", "--val", "0", "--test", "0", "--categories", "sofa", "--seed", "2"]
    assert main(args) == 0
    assert "sofa" in capsys.readouterr().out
    with open_views(out) as file:
        assert file["train"]["images"].shape == (1, 24, 4, 64, 64) and file["val"]["images"].shape[0] == 0
        assert file.attrs["seed"] == 2
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--categories", "spoon", "--overwrite"]) == 1
    assert "unknown or unavailable categories ['spoon']" in capsys.readouterr().err
    assert main([*args, "--workers", "0", "--overwrite"]) == 1
    assert "--workers 0; expected an integer ≥ 1 (1 works in this process)" in capsys.readouterr().err
