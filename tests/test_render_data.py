"""``recon-data render``: sources, messy meshes, camera and voxel conventions, colours, resume, synth parity."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh

from recon.datamodules.categories import Category
from recon.datamodules.cli import main
from recon.datamodules.h5 import ViewsLayout, open_views, read_info
from recon.datamodules.meshes import MeshError, clean_faces, load_mesh, normalize_mesh
from recon.datamodules.primitives import ColoredMesh, box, cone, merge
from recon.datamodules.shapes import make_shape
from recon.datamodules.shards import ShardStore, partial_folder
from recon.datamodules.sources import MeshSource, assign_split, assign_splits, discover
from recon.datamodules.synthetic import generate_synthetic, object_rng

REPO = Path(__file__).resolve().parents[1]


# ---- writing meshes as a user's collection holds them ---------------------------------------------------


def _tower() -> ColoredMesh:
    """No mirror or axis-swap symmetry: an off-centre tower, a long bar and a cone in one corner."""
    red, blue = (0.8, 0.2, 0.2), (0.2, 0.3, 0.8)
    return merge([box((0.3, 0.9, 0.3), red, (-0.3, 0.45, 0.2)), box((1.0, 0.15, 0.2), blue, (0.1, 0.08, -0.3)),
                  cone(0.2, 0.4, blue, (0.35, 0.2, 0.35))])


def _write_obj(path: Path, vertices: np.ndarray, faces: list[list[int]], color: tuple[float, float, float] | None = None) -> None:
    """A hand-written OBJ (1-based, polygons allowed), with one material of diffuse ``color`` if given."""
    lines = [f"mtllib {path.stem}.mtl", "usemtl paint"] if color else []
    lines += [f"v {x!r} {y!r} {z!r}" for x, y, z in np.asarray(vertices, dtype=np.float64).tolist()]
    lines += ["f " + " ".join(str(i + 1) for i in face) for face in faces]
    path.write_text("\n".join(lines) + "\n")
    if color:
        path.with_suffix(".mtl").write_text("newmtl paint\nKd {} {} {}\n".format(*color))


def _write_ply(path: Path, mesh: ColoredMesh) -> None:
    """Binary PLY with 8-bit face colours, vertices in float64 (exact for float32 inputs)."""
    rgba = np.concatenate([np.round(mesh.face_colors * 255), np.full((len(mesh.faces), 1), 255)], 1).astype(np.uint8)
    trimesh.Trimesh(mesh.vertices.astype(np.float64), mesh.faces, face_colors=rgba, process=False).export(path)


CUBE = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
CUBE_QUADS = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder per category with every kind of file and fault a real collection has."""
    root = tmp_path_factory.mktemp("meshes") / "src"
    for name in ("chair", "lamp", "sofa"):
        (root / name).mkdir(parents=True)
    tower = _tower()
    _write_ply(root / "chair" / "red_box.ply", box((0.6, 1.0, 0.4), (0.8, 0.1, 0.1)))
    # quads, a duplicate face (reversed) and a degenerate one, in a material colour
    _write_obj(root / "lamp" / "quads.obj", CUBE * [1.0, 2.0, 0.5], [*CUBE_QUADS, [3, 1, 0, 2], [0, 0, 1]],
               color=(0.1, 0.2, 0.8))
    cylinder = trimesh.creation.cylinder(radius=0.3, height=1.0, sections=24)
    cylinder.visual.vertex_colors = np.tile([20, 200, 40, 255], (len(cylinder.vertices), 1))
    cylinder.export(root / "lamp" / "green.glb")
    parts = trimesh.Scene()  # two parts with their own transforms: concatenated
    parts.add_geometry(trimesh.creation.box((0.2, 1.0, 0.2)))
    parts.add_geometry(trimesh.creation.icosphere(subdivisions=2, radius=0.3), transform=trimesh.transformations.translation_matrix([0.6, 0.4, 0.0]))
    parts.export(root / "lamp" / "parts.glb")
    (root / "sofa" / "grey.off").write_text("OFF\n8 6 0\n" + "\n".join(" ".join(map(str, v)) for v in CUBE * [2.0, 1.0, 1.0])
                                            + "\n" + "\n".join("4 " + " ".join(map(str, q)) for q in CUBE_QUADS) + "\n")
    _write_obj(root / "sofa" / "tower.obj", tower.vertices, tower.faces.tolist())
    _write_obj(root / "sofa" / "tower_x10.obj", tower.vertices.astype(np.float64) * 10 + [3.0, -7.0, 12.5], tower.faces.tolist())
    # broken: unreadable, empty, only degenerate faces, NaN coordinates
    (root / "sofa" / "truncated.glb").write_bytes((root / "lamp" / "green.glb").read_bytes()[:100])
    (root / "sofa" / "empty.obj").write_text("")
    _write_obj(root / "sofa" / "flat.obj", [[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]])
    _write_obj(root / "sofa" / "nan.obj", [[0, 0, 0], [1, 0, 0], [0, float("nan"), 0]], [[0, 1, 2]])
    return root


@pytest.fixture(scope="module")
def rendered(collection: Path) -> Path:
    out = collection.parent / "rendered.h5"
    assert main(["render", str(collection), str(out), "--split", "1,0,0", "--workers", "1"]) == 0
    return out


# ---- the camera, masks and voxels agree ------------------------------------------------------------------


def _project(points: np.ndarray, layout: ViewsLayout, view: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (row, col) of world points in a view, from SoftRas's look-at camera written out by hand."""
    el, az = np.radians(layout.elevation), np.radians(layout.azimuth_step * view)
    eye = layout.distance * np.array([np.cos(el) * np.sin(az), np.sin(el), -np.cos(el) * np.cos(az)])
    z = -eye / np.linalg.norm(eye)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    cam = (points - eye) @ np.stack([x, y, z]).T
    tan, size = np.tan(np.radians(15.0)), layout.image_size
    x_ndc, y_ndc = cam[:, 0] / (cam[:, 2] * tan), cam[:, 1] / (cam[:, 2] * tan)
    return (1 - y_ndc) * size / 2 - 0.5, (x_ndc + 1) * size / 2 - 0.5


def _voxels_inside_masks(voxels: np.ndarray, alpha: np.ndarray, layout: ViewsLayout) -> float:
    """Fraction of (occupied voxel, view) pairs whose centre projects into the view's mask grown by 1 px.
    Voxel [i, j, k] is (y-index i, x-index j, z-index S−1−k) on the grid g = 31·v + 16 (recon.mesh.voxelize)."""
    s = voxels.shape[0]
    i, j, k = np.nonzero(voxels)
    centres = ((np.stack([j, i, s - 1 - k], axis=1) + 0.5) - s / 2) / (s - 1)
    inside = []
    for view in range(alpha.shape[0]):
        mask = alpha[view] > 0
        grown = mask.copy()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                grown |= np.roll(mask, (dr, dc), axis=(0, 1))
        rows, cols = _project(centres, layout, view)
        last = layout.image_size - 1
        inside.append(grown[np.clip(np.round(rows).astype(int), 0, last), np.clip(np.round(cols).astype(int), 0, last)])
    return float(np.concatenate(inside).mean())


def _objects(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """object id → (images, voxels) over every split of a file."""
    found = {}
    with open_views(path) as file:
        for split in ("train", "val", "test"):
            if split not in file:
                continue
            ids = [i.decode() for i in file[split]["object_id"][()]]
            for n, object_id in enumerate(ids):
                found[object_id] = (file[split]["images"][n], file[split]["voxels"][n])
    return found


def test_layout_attributes_skipped_and_colour_sources(rendered: Path) -> None:
    info = read_info(rendered)
    assert info.layout == ViewsLayout() and info.split_sizes == {"train": 7, "val": 0, "test": 0}
    assert [c.name for c in info.categories] == ["chair", "lamp", "sofa"]  # known names get their synsets
    assert [c.synset for c in info.categories] == ["03001627", "03636649", "04256520"]
    attrs = info.attributes
    assert attrs["source"] == "meshes" and attrs["collection"] == "folder" and attrs["normalize"] == "longest"
    assert json.loads(attrs["colors"]) == {"face": 1, "material": 1, "none": 4, "vertex": 1}
    skipped = {entry["id"]: entry["reason"] for entry in json.loads(attrs["skipped"])}
    assert attrs["skipped_count"] == 4 and set(skipped) == {"sofa/truncated", "sofa/empty", "sofa/flat", "sofa/nan"}
    assert "cannot be read" in skipped["sofa/truncated"] and "degenerate" in skipped["sofa/flat"]
    assert "non-finite" in skipped["sofa/nan"]
    assert not partial_folder(rendered).exists()  # the shards are gone once the file is written


def test_stored_voxels_project_inside_stored_masks(rendered: Path) -> None:
    objects = _objects(rendered)
    for object_id, (images, voxels) in objects.items():
        assert voxels.sum() > 20, object_id
        assert _voxels_inside_masks(voxels, images[:, 3], ViewsLayout()) > 0.995, object_id
    images, voxels = objects["sofa/tower"]
    for wrong in (voxels.transpose(1, 0, 2), voxels[::-1], voxels[:, :, ::-1]):
        assert _voxels_inside_masks(wrong, images[:, 3], ViewsLayout()) < 0.9


def test_scaled_and_shifted_object_gives_the_same_views(rendered: Path) -> None:
    objects = _objects(rendered)
    (images, voxels), (images_x10, voxels_x10) = objects["sofa/tower"], objects["sofa/tower_x10"]
    np.testing.assert_array_equal(voxels, voxels_x10)
    # float rounding of ×10 may move a vertex by one float32 step: at most a sub-pixel sample flips
    assert (images != images_x10).mean() < 1e-4


def test_coloured_meshes_keep_their_colour(rendered: Path) -> None:
    def lit(object_id: str) -> np.ndarray:
        images = _objects(rendered)[object_id][0]
        covered = images[:, 3] == 255
        return np.stack([(255 - images[:, c])[covered].mean() for c in range(3)]) / 255  # NMR stores 1 − rgb

    red, blue, green, grey = lit("chair/red_box"), lit("lamp/quads"), lit("lamp/green"), lit("sofa/grey")
    assert red[0] > 3 * red[1] and red[0] > 3 * red[2]
    assert blue[2] > 2 * blue[1] > 2 * blue[0] * 0.9
    assert green[1] > 3 * green[0] and green[1] > 3 * green[2]
    assert np.ptp(grey) < 0.01 and 0.25 < grey.mean() < 0.5  # flat grey 0.5, lit by 0.5 + 0.5·max(n·l, 0)


def test_render_gives_synth_objects_exactly(tmp_path: Path, capsys) -> None:
    """A procedural shape written to a file and rendered is the object `synth` makes for it, bit for bit (with a
    --resume that finds nothing to continue: it says so, and renders everything)."""
    synth = tmp_path / "synth.h5"
    generate_synthetic(synth, {"train": 1}, seed=4, categories=["chair", "lamp"], workers=1)
    for name in ("chair", "lamp"):
        (tmp_path / "src" / name).mkdir(parents=True)
        _write_ply(tmp_path / "src" / name / "00000.ply", make_shape(name, object_rng(4, "train", name, 0)))
    out = tmp_path / "render.h5"
    assert main(["render", str(tmp_path / "src"), str(out), "--split", "1,0,0", "--workers", "1", "--resume"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"--resume: no interrupted run to continue for {out} (no {out}.partial); rendering every object" in err
    made, expected = _objects(out), _objects(synth)
    for name in ("chair", "lamp"):
        images, voxels = made[f"{name}/00000"]
        np.testing.assert_array_equal(images, expected[f"synthetic/{name}/train/00000"][0])
        np.testing.assert_array_equal(voxels, expected[f"synthetic/{name}/train/00000"][1])


def test_other_cameras_and_sizes_are_recorded_and_consistent(collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.h5"
    args = ["render", str(collection), str(out), "--categories", "sofa", "--views", "6", "--elevation", "10",
            "--distance", "3.5", "--image-size", "48", "--split", "1,0,0", "--workers", "1"]
    assert main(args) == 0
    info = read_info(out)
    assert info.layout == ViewsLayout(image_size=48, num_views=6, distance=3.5, elevation=10.0, azimuth_step=-60.0)
    images, voxels = _objects(out)["sofa/tower"]
    assert images.shape == (6, 4, 48, 48)
    assert _voxels_inside_masks(voxels, images[:, 3], info.layout) > 0.995


def test_normalize_none_skips_or_clips_what_lies_outside_the_cube(collection: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    common = ["--categories", "sofa", "--normalize", "none", "--split", "1,0,0", "--workers", "1", "--supersample", "1"]
    assert main(["render", str(collection), str(tmp_path / "kept.h5"), *common]) == 1  # every object lies outside
    assert "none of the 7 objects could be rendered" in " ".join(capsys.readouterr().err.split())
    assert not partial_folder(tmp_path / "kept.h5").exists()
    assert main(["render", str(collection), str(tmp_path / "kept.h5"), *common, "--clip"]) == 0
    assert "3 objects reached outside" in " ".join(capsys.readouterr().out.split())
    attrs = read_info(tmp_path / "kept.h5").attributes
    assert attrs["normalize"] == "none (clipped)" and attrs["clipped_count"] == 3
    assert json.loads(attrs["clipped"]) == ["sofa/grey", "sofa/tower", "sofa/tower_x10"]


REFUSED = [  # each once wrote a file of blank images or of nothing, or failed only after the progress bar started
    ("render --elevation 90", "--elevation 90; the camera would look straight along the up axis"),
    ("render --elevation -90", "--elevation -90; the camera would look straight along the up axis"),
    ("render --elevation 270", "--elevation 270; the camera would look straight along the up axis"),
    ("render --elevation nan", "--elevation nan; expected a finite angle"),
    ("render --distance inf", "--distance inf; expected a finite number > 0.9"),
    ("render --split nan,0.5,0.5", "--split 'nan,0.5,0.5'; expected three fractions"),
    ("render --views 1", "--views 1; expected an integer ≥ 2: recon trains on pairs of views"),
    ("render --per-category 0", "--per-category 0; expected an integer ≥ 1"),
    ("render --per-category -1", "--per-category -1; expected an integer ≥ 1"),
    ("synth --seed -5", "--seed -5; expected an integer ≥ 0 and < 2**63"),
    ("synth --seed 9223372036854775808", "--seed 9223372036854775808; expected an integer ≥ 0 and < 2**63"),
]


@pytest.mark.parametrize(("command", "refused"), REFUSED, ids=[command for command, _ in REFUSED])
def test_bad_values_are_refused_in_one_line_before_any_work(command: str, refused: str, collection: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    name, *options = command.split()
    out = tmp_path / "out.h5"
    assert main([name, *([str(collection)] if name == "render" else []), str(out), *options, "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"recon-data {name}: error: {refused}")
    assert captured.out == "" and not out.exists() and not partial_folder(out).exists()


def test_elevation_close_to_the_up_axis_works(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "src" / "box").mkdir(parents=True)
    trimesh.creation.box((1.0, 0.5, 0.25)).export(tmp_path / "src" / "box" / "a.stl")
    assert main(["render", str(tmp_path / "src"), str(tmp_path / "top.h5"), "--elevation", "89.9", "--views", "2",
                 "--image-size", "16", "--supersample", "1", "--split", "1,0,0", "--workers", "1"]) == 0
    images = _objects(tmp_path / "top.h5")["box/a"][0]
    assert (images[:, 3] > 0).sum(axis=(1, 2)).min() > 16  # seen from above: the 1 × 0.25 top face


def test_an_object_the_camera_sees_nothing_of_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A sheet seen edge-on in every view is skipped with the reason; one seen edge-on in some views is kept. A camera
    that sees nothing at all ends in one line, not a file of blank images."""
    src = tmp_path / "src" / "sheets"
    src.mkdir(parents=True)
    _write_obj(src / "flat.obj", [[-1, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]], [[0, 1, 2, 3]])
    _write_obj(src / "upright.obj", [[0, -1, -1], [0, 1, -1], [0, 1, 1], [0, -1, 1]], [[0, 1, 2, 3]])
    common = ["--views", "4", "--image-size", "16", "--supersample", "1", "--split", "1,0,0", "--workers", "1"]
    out = tmp_path / "sheets.h5"
    assert main(["render", str(src.parent), str(out), "--elevation", "0", *common]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "rendered 1 object (colours: none 1); skipped 1" in printed
    assert ("skipped sheets/flat" in printed and "every view's silhouette is empty: the camera (--distance 2.732, "
            "--elevation 0) sees nothing of it" in printed)
    alpha = _objects(out)["sheets/upright"][0][:, 3]
    assert [bool(a.any()) for a in alpha] == [False, True, False, True]  # edge-on at azimuths 0 and 180: kept
    far = tmp_path / "far.h5"
    assert main(["render", str(src.parent), str(far), "--distance", "1e6", *common]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "none of the 2 objects could be rendered" in err and "--distance 1e+06, --elevation 30) sees nothing" in err
    assert not far.exists() and not partial_folder(far).exists()


# ---- pieces: loading, normalisation, sources, splits, shards ----------------------------------------------


def test_loading_triangulates_and_cleans(collection: Path, tmp_path: Path) -> None:
    loaded = load_mesh(collection / "lamp" / "quads.obj")
    assert len(loaded.mesh.faces) == 12 + 2 + 1 and loaded.colors == "material"  # quads fanned into triangles
    assert len(clean_faces(loaded.mesh).faces) == 12  # duplicate (reversed) and degenerate faces dropped
    assert load_mesh(collection / "lamp" / "parts.glb").mesh.faces.shape[0] == 12 + 320  # both parts
    with pytest.raises(MeshError, match="cannot be read"):
        load_mesh(collection / "sofa" / "truncated.glb")
    (tmp_path / "missing vertex.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 9\n")
    with pytest.raises(MeshError, match=r"cannot be read \(a face refers to a vertex the file does not have\?\): "
                                        "IndexError"):
        load_mesh(tmp_path / "missing vertex.obj")


def test_views_rendered_in_groups_equal_views_rendered_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large meshes are rendered a few views per call to bound memory; the images must not change."""
    from recon.datamodules import views

    mesh = normalize_mesh(_tower())
    at_once = views.ViewRenderer(ViewsLayout(num_views=5))(mesh)
    monkeypatch.setattr(views, "FACE_VIEWS_PER_CALL", 2 * len(mesh.faces))  # 2 views per call: 2 + 2 + 1
    np.testing.assert_array_equal(views.ViewRenderer(ViewsLayout(num_views=5))(mesh), at_once)


def test_textures_are_sampled_at_the_vertices(tmp_path: Path) -> None:
    from PIL import Image

    texture = np.zeros((2, 2, 3), np.uint8)
    texture[:, 0], texture[:, 1] = [255, 0, 0], [0, 0, 255]  # left half red, right half blue
    Image.fromarray(texture).save(tmp_path / "paint.png")
    (tmp_path / "sheet.mtl").write_text("newmtl paint\nKd 1 1 1\nmap_Kd paint.png\n")
    (tmp_path / "sheet.obj").write_text("mtllib sheet.mtl\nusemtl paint\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 1\n"
                                        "vt 0.1 0.5\nvt 0.9 0.5\nf 1/1 2/1 4/1\nf 2/2 3/2 4/2\n")
    loaded = load_mesh(tmp_path / "sheet.obj")
    assert loaded.colors == "texture"
    np.testing.assert_allclose(loaded.mesh.face_colors, [[1, 0, 0], [0, 0, 1]], atol=1e-6)


def test_normalisations() -> None:
    mesh = _tower()._replace(vertices=(_tower().vertices * 3 + 1).astype(np.float32))
    longest = normalize_mesh(mesh, "longest").vertices
    assert np.ptp(longest, axis=0).max() == pytest.approx(1.0) and np.allclose(longest.max(0) + longest.min(0), 0, atol=1e-6)
    diagonal = normalize_mesh(mesh, "diagonal").vertices
    assert np.linalg.norm(np.ptp(diagonal, axis=0)) == pytest.approx(1.0)
    with pytest.raises(MeshError, match="outside the voxel cube"):
        normalize_mesh(mesh, "none")
    assert np.abs(normalize_mesh(mesh, "none", clip=True).vertices).max() == pytest.approx(0.5)
    np.testing.assert_array_equal(normalize_mesh(normalize_mesh(mesh), "none").vertices, longest)


def test_sources_are_detected(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cube = trimesh.creation.box()
    for version, inner in (("v1", "model.obj"), ("v2", "models/model_normalized.obj")):
        for synset in ("02691156", "02801938"):  # airplane, and basket (not one of the 13)
            for model in ("m1", "m2"):
                (tmp_path / version / synset / model / inner).parent.mkdir(parents=True, exist_ok=True)
                cube.export(tmp_path / version / synset / model / inner)
    (tmp_path / "v2" / "taxonomy.json").write_text(json.dumps([{"synsetId": "02801938", "name": "basket,handbasket"}]))
    v1, v2 = discover(tmp_path / "v1"), discover(tmp_path / "v2", ["all"])
    assert v1.kind == "shapenetcore-v1" and [c.name for c in v1.categories] == ["airplane"]  # the 13 by default
    assert v2.kind == "shapenetcore-v2" and [c.name for c in v2.categories] == ["airplane", "basket"]
    assert [o.object_id for o in v1.objects] == ["02691156/m1", "02691156/m2"]
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,category,split\nv1/02691156/m1/model.obj,airplane,test\nv1/02691156/m2/model.obj,mugs,\n")
    found = discover(manifest)
    assert found.kind == "manifest" and [(o.category.name, o.split) for o in found.objects] == [
        ("airplane", "test"), ("mugs", None)]
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": "v1/02691156/m1/model.obj", "category": "chair",
                                                     "split": "val", "id": "a"}) + "\n")
    assert discover(tmp_path / "list.jsonl").objects[0][::3] == ("a", "val")
    assert main(["render", str(tmp_path / "v2"), str(tmp_path / "out.h5"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "shapenetcore-v2" in printed and "airplane" in printed and not (tmp_path / "out.h5").exists()
    assert main(["render", str(tmp_path / "nowhere"), str(tmp_path / "out.h5")]) == 1
    assert "nowhere: no such file or folder" in " ".join(capsys.readouterr().err.split())  # wrapped or not


def test_a_spreadsheets_csv_manifest_is_read(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts with a byte-order mark; hand-written headers have spaces after the commas
    trimesh.creation.box().export(tmp_path / "a.off")
    manifest = tmp_path / "list.csv"
    manifest.write_bytes("path, category, split , id\n a.off , mugs, test , m1\n".encode("utf-8-sig"))
    found = discover(manifest)
    assert [(o.object_id, o.path, o.category.name, o.split) for o in found.objects] == [
        ("m1", tmp_path / "a.off", "mugs", "test")]


def test_repeated_object_ids_say_which_files_or_rows(tmp_path: Path) -> None:
    (tmp_path / "src" / "k").mkdir(parents=True)
    for suffix in ("stl", "off"):
        trimesh.creation.box().export(tmp_path / "src" / "k" / f"box.{suffix}")
    with pytest.raises(ValueError) as refused:
        discover(tmp_path / "src")
    message = str(refused.value)
    assert "box.off and " in message and "box.stl give the same object id 'k/box'" in message
    assert "rename one of them" in message and "manifest rows" not in message
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps({"path": f"src/k/box.{s}", "category": "k", "id": i})
                                                   for s, i in (("stl", "a"), ("off", "b"), ("stl", "a"))) + "\n")
    with pytest.raises(ValueError, match=r"list.jsonl: rows 1 and 3 give the same object id 'a'; give each row a "
                                         r"unique 'id'"):
        discover(tmp_path / "list.jsonl")
    # One file under two ids, one row in train and one in test: the test would score an object trained on.
    (tmp_path / "twice.csv").write_text("path,category,split,id\nsrc/k/box.stl,k,train,a\nsrc/k/box.off,k,val,b\n"
                                        "src/k/../k/box.stl,k,test,c\n")
    with pytest.raises(ValueError, match=r"twice.csv: rows 2 and 4 list the same mesh file .*box.stl \(ids 'a', "
                                         r"'c'\): one object would be rendered twice"):
        discover(tmp_path / "twice.csv")
    (tmp_path / "src" / "k" / "box.off").unlink()
    (tmp_path / "src" / "k" / "copy.stl").symlink_to(tmp_path / "src" / "k" / "box.stl")
    with pytest.raises(ValueError, match=r"box.stl and .*copy.stl are the same mesh file"):
        discover(tmp_path / "src")


def test_splits_come_from_a_hash_of_the_id() -> None:
    splits = [assign_split(f"chair/{n:05d}") for n in range(3000)]
    fractions = [splits.count(s) / len(splits) for s in ("train", "val", "test")]
    assert np.allclose(fractions, [0.7, 0.1, 0.2], atol=0.03)
    assert splits == [assign_split(f"chair/{n:05d}") for n in range(3000)]
    assert {assign_split(f"x{n}", (0.0, 0.0, 1.0)) for n in range(100)} == {"test"}


def test_a_small_category_gets_an_object_in_every_split_and_a_large_one_keeps_its_hash_splits() -> None:
    def objects(category: str, n: int, split: str | None = None) -> list[MeshSource]:
        return [MeshSource(f"{category}/{i:03d}", Path(f"{category}/{i:03d}.obj"), Category(category, category), split)
                for i in range(n)]

    small = [o for c in range(30) for o in objects(f"c{c}", 6)]
    hashed = [assign_split(o.object_id) for o in small]
    assert any(hashed[i:i + 6].count("val") == 0 for i in range(0, 180, 6))  # the hash alone leaves some empty
    placed = assign_splits(small)
    assert [o.object_id for o in placed] == [o.object_id for o in small]
    for c in range(30):
        splits = [o.split for o in placed[6 * c:6 * c + 6]]
        assert {"train", "val", "test"} <= set(splits) and splits.count("train") >= 2, splits
        moved = sum(a != b for a, b in zip(splits, hashed[6 * c:6 * c + 6], strict=True))
        assert moved == len({"train", "val", "test"}.difference(hashed[6 * c:6 * c + 6]))  # one per empty split
    assert assign_splits(small) == placed  # the same on every run

    large = objects("big", 400)
    assert [o.split for o in assign_splits(large)] == [assign_split(o.object_id) for o in large]
    two = objects("two", 2)  # fewer objects than splits: as hashed
    assert [o.split for o in assign_splits(two)] == [assign_split(o.object_id) for o in two]
    given = objects("given", 5, "train")  # a manifest's splits are kept
    assert {o.split for o in assign_splits(given)} == {"train"}
    assert {o.split for o in assign_splits(objects("zero", 6), (0.8, 0.0, 0.2))} == {"train", "test"}


def test_a_render_whose_split_holds_no_object_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mine" / "mugs"
    folder.mkdir(parents=True)
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    _write_obj(folder / "a.obj", vertices, [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    for extra in ([], ["--workers", "1"]):
        args = ["render", str(tmp_path / "mine"), str(tmp_path / "out.h5"), *(extra or ["--dry-run"])]
        assert main(args) == 0
        printed = " ".join(capsys.readouterr().out.split())
        split = assign_split("mugs/a")
        empty = " and ".join(s for s in ("train", "val", "test") if s != split)
        assert f"warning: the {empty} splits hold no object: recon fit needs train and val objects" in printed


def test_category_folders_without_meshes_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a category whose meshes are in a format recon does not read, or were not copied, would vanish from the
    # dataset without a word: the dry run and the render name each such folder and what it holds
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    (tmp_path / "mine" / "mugs").mkdir(parents=True)
    _write_obj(tmp_path / "mine" / "mugs" / "a.obj", vertices, [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    (tmp_path / "mine" / "lamps" / "x").mkdir(parents=True)
    for name in ("a.fbx", "b.fbx", "x/c.blend"):
        (tmp_path / "mine" / "lamps" / name).write_bytes(b"not read")
    (tmp_path / "mine" / "sofas").mkdir()
    found = discover(tmp_path / "mine")
    assert [c.name for c in found.categories] == ["mugs"]
    assert found.left_out == ["lamps/ (2 .fbx files, 1 .blend file)", "sofas/ (empty)"]
    assert discover(tmp_path / "mine", ["mugs"]).left_out == []  # not asked for: not named
    with pytest.raises(ValueError, match=r"unknown or unavailable categories \['sofas'\]; available: mugs \(mugs\); "
                       r"these folders hold no mesh file \(.obj, .*\): sofas/ \(empty\)$"):
        discover(tmp_path / "mine", ["mugs", "sofas"])
    warning = ("warning: 2 category folders hold no mesh file (.obj, .glb, .gltf, .ply, .off, .stl) and are left out: "
               "lamps/ (2 .fbx files, 1 .blend file); sofas/ (empty)")
    assert main(["render", str(tmp_path / "mine"), str(tmp_path / "out.h5"), "--dry-run"]) == 0
    assert warning in " ".join(capsys.readouterr().out.split())
    assert main(["render", str(tmp_path / "mine"), str(tmp_path / "out.h5"), "--workers", "1"]) == 0
    assert warning in " ".join(capsys.readouterr().err.split())
    # ShapeNetCore: a synset folder of the 13 whose models were not extracted is named; others are not
    cube = trimesh.creation.box()
    for synset, model in (("02691156", "m1/model.obj"), ("03001627", "m1/model.txt"), ("02801938", "m1/x.txt")):
        (tmp_path / "v1" / synset / model).parent.mkdir(parents=True)
        cube.export(tmp_path / "v1" / synset / model, file_type="obj")
    assert discover(tmp_path / "v1").left_out == ["03001627/ (1 .txt file)"]  # chair; basket is not one of the 13
    assert discover(tmp_path / "v1", ["all"]).left_out == ["02801938/ (1 .txt file)", "03001627/ (1 .txt file)"]


def test_names_beyond_ascii_are_rendered_and_read_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Folder and file names are the ids and categories: any name a file system takes must reach the file (the
    # write after every object is rendered once failed on a non-ASCII one, and --resume failed the same way).
    folder = tmp_path / "mine" / "Stühle café"
    folder.mkdir(parents=True)
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    _write_obj(folder / "mésh ü 椅子.obj", vertices, [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    out = tmp_path / "out.h5"
    assert main(["render", str(tmp_path / "mine"), str(out), "--split", "1,0,0", "--workers", "1"]) == 0
    info = read_info(out)
    assert info.category_names == ["Stühle café"] and info.split_sizes["train"] == 1
    with open_views(out) as file:
        assert [i.decode() for i in file["train"]["object_id"][()]] == ["Stühle café/mésh ü 椅子"]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0 and "Stühle café" in capsys.readouterr().out


def test_shards_refuse_to_mix_runs(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "out.h5.partial")
    assert store.open({"objects": 3}, resume=False, overwrite=False) == 0
    with pytest.raises(FileExistsError, match="--resume"):
        ShardStore(store.folder).open({"objects": 3}, resume=False, overwrite=False)
    with pytest.raises(ValueError, match="objects"):
        ShardStore(store.folder).open({"objects": 4}, resume=True, overwrite=False)
    assert ShardStore(store.folder).open({"objects": 3}, resume=True, overwrite=False) == 0


def test_recon_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    args = ["render", str(tmp_path / "nowhere"), str(tmp_path / "out.h5")]
    monkeypatch.delenv("RECON_DEBUG", raising=False)
    assert main(args) == 1 and "nowhere: no such file or folder" in capsys.readouterr().err
    monkeypatch.setenv("RECON_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="nowhere: no such file or folder"):
        main(args)


def _interrupted_render(src: Path, out: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> None:
    """A render stopped after every object was rendered, before the file is written: every shard is kept."""
    from recon.datamodules import rendering

    with monkeypatch.context() as patch:
        patch.setattr(rendering, "_assemble", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main(["render", str(src), str(out), *options]) == 130
    assert len(list(partial_folder(out).glob("*.npz"))) == 3


def _three_balls(tmp_path: Path) -> tuple[Path, list[str], Path, Path]:
    """(the folder ``src/ball`` of three spheres, small render options, the file they render to uninterrupted, an
    output path for the test's own render)."""
    src = tmp_path / "src" / "ball"
    src.mkdir(parents=True)
    for n in range(3):
        trimesh.creation.icosphere(subdivisions=1, radius=0.3 + 0.1 * n).export(src / f"{n}.ply")
    options = ["--views", "2", "--image-size", "16", "--supersample", "1", "--workers", "1"]
    whole, out = tmp_path / "whole.h5", tmp_path / "out.h5"
    assert main(["render", str(src.parent), str(whole), *options]) == 0
    return src, options, whole, out


def test_resume_renders_damaged_shards_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    src, options, whole, out = _three_balls(tmp_path)
    shards = partial_folder(out)

    # a shard cut short (a full disk, a copy): its outcome cannot be read; resuming renders it again
    _interrupted_render(src.parent, out, monkeypatch, *options)
    cut = shards / "0000001.npz"
    cut.write_bytes(cut.read_bytes()[:200])
    capsys.readouterr()
    assert main(["render", str(src.parent), str(out), *options, "--resume"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"--resume: removed 1 damaged shard (0000001.npz) in {shards}; its object is rendered again" in err
    assert _objects(out).keys() == _objects(whole).keys()
    for object_id, (images, voxels) in _objects(whole).items():
        np.testing.assert_array_equal(_objects(out)[object_id][0], images)
        np.testing.assert_array_equal(_objects(out)[object_id][1], voxels)

    # a flipped bit inside a shard's images shows only when they are inflated: named, removed, rendered on --resume
    out.unlink()
    _interrupted_render(src.parent, out, monkeypatch, *options)
    flipped = shards / "0000002.npz"
    with zipfile.ZipFile(flipped) as archive:
        member = archive.getinfo("images.npy")
    data = bytearray(flipped.read_bytes())
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)  # the local header's size
    data[start + member.compress_size // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["render", str(src.parent), str(out), *options, "--resume"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"recon-data render: error: {flipped}: damaged shard, cannot be read back (")
    assert "removed it: rerun with --resume to render ball/2 again" in err
    assert not out.exists() and not flipped.exists() and len(list(shards.glob("*.npz"))) == 2
    assert main(["render", str(src.parent), str(out), *options, "--resume"]) == 0
    assert not shards.exists()
    np.testing.assert_array_equal(_objects(out)["ball/2"][0], _objects(whole)["ball/2"][0])


# ---- real processes: kills, resume, workers that exit with their parent ---------------------------------


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, parent = stat.rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid and state != "Z":
                found.append(int(entry.name))
    return found


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _recon_data(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "recon.datamodules.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_and_check_workers(process: subprocess.Popen, workers: list[int], sig: int) -> None:
    """Kill the parent; its workers must follow. A worker still importing torch when its parent dies exits
    as soon as its start-up reaches the pool's initializer, so the allowance covers one slow import."""
    os.kill(process.pid, sig)
    process.wait(timeout=30)
    if not _wait_for(lambda: not _alive(workers), 40.0):
        survivors = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for pid in _alive(workers)}
        pytest.fail(f"processes outlived their parent (signal {sig}): {survivors}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.slow
def test_synth_workers_exit_when_synth_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "synth.h5"
    process = _recon_data("synth", str(out), "--train", "2", "--val", "0", "--test", "0", "--workers", "2")
    try:
        assert _wait_for(lambda: len(_children(process.pid)) >= 2, 60.0), "synth started no workers"
        workers = _children(process.pid)  # the two workers (and multiprocessing's resource tracker)
        _kill_and_check_workers(process, workers, signal.SIGKILL)
    finally:
        process.kill()
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.slow
def test_resume_after_a_kill_writes_the_same_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for category in ("cup", "ball"):
        (src / category).mkdir(parents=True)
        for n in range(10):
            sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3 + 0.02 * n)
            sphere.vertices *= [1.0 + 0.1 * n, 1.0, 1.0 - 0.05 * n]
            sphere.export(src / category / f"{n:02d}.ply")
    whole, resumed = tmp_path / "whole.h5", tmp_path / "resumed.h5"
    assert main(["render", str(src), str(whole), "--workers", "1"]) == 0

    process = _recon_data("render", str(src), str(resumed), "--workers", "2")
    shards = partial_folder(resumed)
    try:
        assert _wait_for(lambda: len(list(shards.glob("*.npz"))) >= 2, 90.0), "no object was finished"
        _kill_and_check_workers(process, _children(process.pid), signal.SIGKILL)
    finally:
        process.kill()
    finished = len(list(shards.glob("*.npz")))
    assert not resumed.exists() and 2 <= finished < 20, finished  # killed mid-run, whole shards kept
    assert main(["render", str(src), str(resumed), "--workers", "1"]) == 1  # refuses to discard them silently
    assert main(["render", str(src), str(resumed), "--workers", "1", "--resume"]) == 0
    assert hashlib.sha256(resumed.read_bytes()).digest() == hashlib.sha256(whole.read_bytes()).digest()
    assert not shards.exists()


def test_a_job_that_kills_its_worker_is_found_and_the_others_go_on() -> None:
    from pool_jobs import always_dies, dies_on_three

    from recon.datamodules.pool import WorkerDied, map_jobs

    # the jobs in flight when the worker died are run again one by one, each alone: job 3 dies again, alone
    died = list(map_jobs(dies_on_three, range(7), 2, in_flight=2, died=lambda job, why: (job, why)))
    assert died == [0, 10, 20, (3, "killed by SIGKILL (out of memory?)"), 40, 50, 60]  # in order, none lost
    with pytest.raises(WorkerDied, match=r"a job killed its worker process \(killed by SIGKILL \(out of memory\?\)\); "
                                         r"rerun "):
        list(map_jobs(dies_on_three, range(5), 2, in_flight=2))
    # workers that cannot live at all: not every job skipped one by one, but an end after three in a row
    with pytest.raises(WorkerDied, match=r"3 jobs in a row each killed its worker process"):
        list(map_jobs(always_dies, range(10), 2, in_flight=2, died=lambda job, why: job))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.slow
def test_a_render_worker_killed_mid_run_costs_no_object(tmp_path: Path) -> None:
    # (the out-of-memory killer, on a huge mesh): the run used to end in a BrokenProcessPool traceback
    src = tmp_path / "src" / "ball"
    src.mkdir(parents=True)
    for n in range(16):
        trimesh.creation.icosphere(subdivisions=3, radius=0.2 + 0.015 * n).export(src / f"{n:02d}.ply")
    whole, out = tmp_path / "whole.h5", tmp_path / "out.h5"
    assert main(["render", str(src.parent), str(whole), "--workers", "1"]) == 0
    process = _recon_data("render", str(src.parent), str(out), "--workers", "2")
    try:
        assert _wait_for(lambda: len(list(partial_folder(out).glob("*.npz"))) >= 2, 90.0), "no object was finished"
        workers = [pid for pid in _children(process.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        os.kill(workers[0], signal.SIGKILL)
        assert process.wait(timeout=300) == 0
    finally:
        process.kill()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(whole.read_bytes()).digest()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fit_and_test_run_on_a_rendered_file(tmp_path: Path, shrink_flags, monkeypatch) -> None:
    from recon.cli import run_cli

    monkeypatch.setattr(sys, "argv", ["recon"])
    rows = ["path,category,split"]
    for category, make in (("airplane", trimesh.creation.box), ("chair", trimesh.creation.icosphere)):
        for n, split in enumerate(("train", "train", "val", "test")):
            mesh = make()
            mesh.vertices *= [1.0 + 0.3 * n, 1.0, 1.0]
            mesh.export(tmp_path / f"{category}{n}.off")
            rows.append(f"{category}{n}.off,{category},{split}")
    (tmp_path / "objects.csv").write_text("\n".join(rows) + "\n")
    data = tmp_path / "rendered.h5"
    assert main(["render", str(tmp_path / "objects.csv"), str(data), "--workers", "1"]) == 0
    assert read_info(data).split_sizes == {"train": 4, "val": 2, "test": 2}  # the manifest's splits
    config = str(REPO / "configs" / "default.yaml")
    flags = shrink_flags({"data.path": str(data)})
    run_cli(["fit", "-c", config, *flags])
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    cli = run_cli(["test", "-c", config, *flags, f"--ckpt_path={checkpoint}"])
    assert 0 <= float(cli.trainer.callback_metrics["test/miou"]) <= 1
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data_source"] == "meshes" and results["data"] == str(data.resolve())


def test_an_obj_with_relative_indices_reads_as_its_absolute_twin(tmp_path: Path) -> None:
    # OBJ's negative indices count back from the latest vertex (texture coordinate, normal) *before* the face;
    # trimesh counted them from the file's end, so every part became the last part: one cube where two were.
    corners = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    relative, absolute = [], []
    for part, shift in enumerate((0.0, 2.5)):
        for x, y, z in corners:
            line = f"v {x + shift} {y} {z}\nvt {x} {y}\nvn 0 0 1"
            relative.append(line)
            absolute.append(line)
        for quad in quads:  # vertex/texture/normal: both index styles, with and without the texture index
            relative.append("f " + " ".join(f"{i - 8}/{i - 8}/{i - 8}" if part else f"{i - 8}//{i - 8}" for i in quad))
            absolute.append("f " + " ".join(f"{i + 1 + 8 * part}/{i + 1 + 8 * part}/{i + 1 + 8 * part}" if part
                                            else f"{i + 1}//{i + 1}" for i in quad))
    (tmp_path / "relative.obj").write_text("\n".join(relative) + "\n")
    (tmp_path / "absolute.obj").write_text("\n".join(absolute) + "\n")
    mesh, twin = load_mesh(tmp_path / "relative.obj").mesh, load_mesh(tmp_path / "absolute.obj").mesh
    assert np.ptp(mesh.vertices[mesh.faces][..., 0]) == 3.5  # both cubes: x from 0 to 3.5
    np.testing.assert_array_equal(mesh.vertices[mesh.faces], twin.vertices[twin.faces])


def test_resume_continues_a_render_that_was_to_replace_its_output_or_was_stopped_after_writing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from recon.datamodules.shards import ShardStore

    src, options, whole, out = _three_balls(tmp_path)
    out.write_bytes(b"an earlier render")

    # Ctrl-C in a render --overwrite: its shards are kept, and --resume (with or without --overwrite) continues them
    # (it was refused for the existing OUT, and --resume --overwrite threw the shards away)
    _interrupted_render(src.parent, out, monkeypatch, *options, "--overwrite")
    assert "no output file was written" in capsys.readouterr().err and out.read_bytes() == b"an earlier render"
    rendered = []
    monkeypatch.setattr("recon.datamodules.rendering.render_object",
                        lambda job: rendered.append(job) or (_ for _ in ()).throw(AssertionError("rendered again")))
    for extra in (["--resume"], ["--resume", "--overwrite"]):
        _interrupted_render(src.parent, out, monkeypatch, *options, *extra)  # continued: nothing rendered again
    assert rendered == []

    # from another folder, with SRC typed another way: the same objects
    monkeypatch.chdir(src.parent)
    with monkeypatch.context() as patch:  # stopped as it removes its shards, after writing OUT
        patch.setattr(ShardStore, "remove", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main(["render", ".", str(out), *options, "--resume"]) == 130
    assert f"the output file {out} was written before it" in " ".join(capsys.readouterr().err.split())
    assert partial_folder(out).exists()
    assert main(["render", ".", str(out), *options, "--resume"]) == 0  # was refused: OUT already exists
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(whole.read_bytes()).digest()
    assert not partial_folder(out).exists()


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "ball").mkdir()
    trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "ball" / "one.ply")
    (tmp_path / "list.csv").write_text("path,category\nball/one.ply,ball\n")
    kept = {path: path.read_bytes() for path in (tmp_path / "list.csv", tmp_path / "ball" / "one.ply")}
    for src, out, said in ((tmp_path / "list.csv", tmp_path / "list.csv", "is the source"),
                           (tmp_path, tmp_path / "ball" / "one.ply", "is the mesh file of object ball/one")):
        assert main(["render", str(src), str(out), "--overwrite", "--workers", "1"]) == 1
        assert f"recon-data render: error: {out}: {said}" in capsys.readouterr().err
    assert all(path.read_bytes() == data for path, data in kept.items())


def test_a_manifest_without_its_columns_and_missing_files_are_said_before_rendering(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mugs"
    folder.mkdir()
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    _write_obj(folder / "a.obj", vertices, [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    (folder / "gone.obj").symlink_to(tmp_path / "nowhere.obj")  # a broken link: an object skipped, not unseen
    (tmp_path / "semicolons.csv").write_text("path;category\nmugs/a.obj;mugs\n")  # a spreadsheet's other CSV
    assert main(["render", str(tmp_path / "semicolons.csv"), str(tmp_path / "out.h5"), "--dry-run"]) == 1
    assert ("semicolons.csv: its header names the columns ['path;category']; expected a header row path,category "
            "(and optionally split, id), comma-separated") in " ".join(capsys.readouterr().err.split())
    (tmp_path / "list.csv").write_text("path,category\nmugs/a.obj,mugs\nmugs/typo.obj,mugs\n")
    for src, missing in ((tmp_path / "list.csv", "typo.obj"), (tmp_path / "mugs", "gone.obj")):
        assert main(["render", str(src), str(tmp_path / "out.h5"), "--dry-run"]) == 0
        printed = " ".join(capsys.readouterr().out.split())
        assert "warning: 1 mesh file listed is missing (a broken link, a mistyped manifest path) and will be " in printed
        assert missing in printed.split("will be skipped:")[1]
