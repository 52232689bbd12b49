"""NMR npz → recon-views: bit-exact streaming conversion and every error case (no output file)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from recon.datamodules import nmr
from recon.datamodules.cli import main
from recon.datamodules.h5 import open_views, read_info
from recon.datamodules.nmr import NpyMemberReader, convert_nmr

AIRPLANE, CHAIR = "02691156", "03001627"
COUNTS = {"train": 5, "val": 1, "test": 2}


def _write_nmr(folder: Path, synset: str, split: str, n: int, seed: int, compressed: bool = True,
               images: np.ndarray | None = None, voxels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Files as NMR's make_dataset.py writes them: one positional array (arr_0) per npz."""
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, size=(n, 24, 4, 64, 64), dtype=np.uint8)
    if voxels is None:
        voxels = rng.random((n, 32, 32, 32)) < 0.2
    save = np.savez_compressed if compressed else np.savez
    save(folder / f"{synset}_{split}_images.npz", images)
    save(folder / f"{synset}_{split}_voxels.npz", voxels)
    return images, voxels


@pytest.fixture
def nmr_dir(tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "nmr"
    folder.mkdir()
    arrays = {}
    for c, synset in enumerate((AIRPLANE, CHAIR)):
        for s, (split, n) in enumerate(COUNTS.items()):
            # the chair files are stored uncompressed: both zip member kinds must stream
            arrays[synset, split] = _write_nmr(folder, synset, split, n, seed=10 * c + s, compressed=synset == AIRPLANE)
    return folder, arrays


def test_conversion_is_bit_exact_in_small_blocks(nmr_dir: tuple[Path, dict], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder, arrays = nmr_dir
    monkeypatch.setattr(nmr, "ROWS_PER_BLOCK", 2)  # 5 objects: blocks of 2, 2, 1
    out = tmp_path / "nmr.h5"
    info = convert_nmr(folder, out)
    assert [c.synset for c in info.categories] == [AIRPLANE, CHAIR]
    assert info.split_sizes == {split: 2 * n for split, n in COUNTS.items()}
    assert info.attributes["source"] == "nmr"
    with open_views(out) as file:
        for split in COUNTS:
            category = file[split]["category"][()]
            for c, synset in enumerate((AIRPLANE, CHAIR)):
                images, voxels = arrays[synset, split]
                rows = np.flatnonzero(category == c)
                np.testing.assert_array_equal(file[split]["images"][rows.min():rows.max() + 1], images)
                np.testing.assert_array_equal(file[split]["voxels"][rows.min():rows.max() + 1], voxels)
        assert file["train"]["object_id"][0].decode() == f"{AIRPLANE}/train/00000"


def test_reader_streams_rows_like_np_load(nmr_dir: tuple[Path, dict]) -> None:
    folder, arrays = nmr_dir
    for synset in (AIRPLANE, CHAIR):
        with NpyMemberReader(folder / f"{synset}_train_images.npz") as reader:
            assert reader.shape == (5, 24, 4, 64, 64) and reader.dtype == np.uint8
            blocks = list(reader.blocks(3))
        assert [len(b) for b in blocks] == [3, 2]
        np.testing.assert_array_equal(np.concatenate(blocks), arrays[synset, "train"][0])


def test_selected_categories_and_splits(nmr_dir: tuple[Path, dict], tmp_path: Path) -> None:
    folder, _ = nmr_dir
    info = convert_nmr(folder, tmp_path / "chairs.h5", categories=["chair"], splits=["val"])
    assert [c.name for c in info.categories] == ["chair"] and info.split_sizes == {"val": 1}


def _break(folder: Path, problem: str) -> None:
    if problem == "missing":
        (folder / f"{CHAIR}_test_voxels.npz").unlink()
    elif problem == "count":
        _write_nmr(folder, CHAIR, "val", 1, seed=0, voxels=np.zeros((2, 32, 32, 32), bool))
    elif problem == "shape":
        _write_nmr(folder, CHAIR, "val", 1, seed=0, images=np.zeros((1, 24, 3, 64, 64), np.uint8))
    elif problem == "dtype":
        _write_nmr(folder, CHAIR, "val", 1, seed=0, voxels=np.zeros((1, 32, 32, 32), np.float32))
    elif problem == "fortran":
        _write_nmr(folder, CHAIR, "val", 1, seed=0, voxels=np.asfortranarray(np.zeros((1, 32, 32, 32), bool)))
    elif problem == "not-zip":
        (folder / f"{CHAIR}_val_images.npz").write_bytes(b"not a zip file")
    elif problem == "truncated":  # a valid zip whose .npy data stops 2 rows early: found while copying
        images = folder / f"{CHAIR}_train_images.npz"
        np.savez(images, np.zeros((5, 24, 4, 64, 64), np.uint8))
        with zipfile.ZipFile(images) as archive:
            data = archive.read("arr_0.npy")
        with zipfile.ZipFile(images, "w") as archive:
            archive.writestr("arr_0.npy", data[: len(data) - 2 * 24 * 4 * 64 * 64])


@pytest.mark.parametrize(("problem", "error", "message"), [
    ("missing", FileNotFoundError, f"missing NMR files: .*{CHAIR}_test_voxels.npz"),
    ("count", ValueError, f"{CHAIR}_val_images.npz holds 1 objects but .*{CHAIR}_val_voxels.npz holds 2"),
    ("shape", ValueError, f"{CHAIR}_val_images.npz: array of shape \\(1, 24, 3, 64, 64\\) uint8; expected"),
    ("dtype", ValueError, f"{CHAIR}_val_voxels.npz: array of shape .* float32; expected \\(N, 32, 32, 32\\) bool"),
    ("fortran", ValueError, "Fortran-ordered"),
    ("not-zip", ValueError, f"{CHAIR}_val_images.npz: not a readable .npz"),
    ("truncated", ValueError, "ends after 3 of 5 rows; the file is truncated"),
])
def test_errors_are_clear_and_leave_no_output(nmr_dir: tuple[Path, dict], tmp_path: Path, problem: str,
                                              error: type[Exception], message: str) -> None:
    folder, _ = nmr_dir
    _break(folder, problem)
    out = tmp_path / "out" / "nmr.h5"
    with pytest.raises(error, match=message):
        convert_nmr(folder, out)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no temporary file left either


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        convert_nmr(tmp_path / "absent", tmp_path / "out.h5")
    with pytest.raises(FileNotFoundError, match="no NMR files"):
        convert_nmr(tmp_path, tmp_path / "out.h5")


def test_cli_convert_and_info(nmr_dir: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, _ = nmr_dir
    out = tmp_path / "cli.h5"
    assert main(["convert-nmr", str(folder), str(out), "--categories", AIRPLANE]) == 0
    assert read_info(out).split_sizes == COUNTS
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "airplane" in printed and "recon-views" in printed and "chair" not in printed
    assert main(["convert-nmr", str(folder), str(out)]) == 1  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["info", str(folder / f"{CHAIR}_val_images.npz")]) == 1
    assert "not an HDF5 file" in capsys.readouterr().err
    source = folder / f"{CHAIR}_val_images.npz"  # the output named as an input: --overwrite would replace it
    kept = source.read_bytes()
    assert main(["convert-nmr", str(folder), str(source), "--overwrite"]) == 1
    assert f"{source}: is among the NMR files it converts" in capsys.readouterr().err
    assert source.read_bytes() == kept


@pytest.mark.parametrize("command", ["synth", "convert-nmr", "render"])
def test_an_output_that_cannot_be_a_file_is_refused_before_any_work(command: str, nmr_dir: tuple[Path, dict],
                                                                    tmp_path: Path, capsys) -> None:
    tmp_path = tmp_path / "work"
    meshes = tmp_path / "meshes" / "mugs"
    meshes.mkdir(parents=True)
    (meshes / "tri.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    source = {"synth": [], "convert-nmr": [str(nmr_dir[0])], "render": [str(meshes.parent)]}[command]
    folder = tmp_path / "runs"
    (folder / "keep").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    for out, expected in ((folder, f"{folder}: is a folder; give the output file's name, e.g. {folder / 'data.h5'}"),
                          (tmp_path / "notes.txt" / "sub" / "data.h5",
                           f"{tmp_path / 'notes.txt'} is a file, not a folder")):
        for flags in ([], ["--overwrite"]):  # --overwrite replaces a file, never a folder
            assert main([command, *source, str(out), *flags]) == 1
            err = " ".join(capsys.readouterr().err.split())  # rich may wrap a long path
            assert f"recon-data {command}: error:" in err and expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshes", "notes.txt", "runs"]
    assert [p.name for p in folder.iterdir()] == ["keep"] and (tmp_path / "notes.txt").read_text() == "mine"
    if command == "synth":
        assert main(["synth", str(tmp_path / "none.h5"), "--train", "0", "--val", "0", "--test", "0"]) == 1
        assert "no object to generate" in capsys.readouterr().err and not (tmp_path / "none.h5").exists()
