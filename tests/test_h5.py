"""The recon-views format v1: atomic writer, validating reader, and its error messages."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from recon.datamodules.categories import SHAPENET_CATEGORIES, resolve_categories
from recon.datamodules.h5 import ViewsFormatError, ViewsLayout, ViewsWriter, open_views, read_info

CATS = SHAPENET_CATEGORIES[:2]


def _objects(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(n, 24, 4, 64, 64), dtype=np.uint8)
    voxels = rng.random((n, 32, 32, 32)) < 0.3
    return images, voxels


def _write(path: Path, counts: dict[str, int], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    written = {}
    with ViewsWriter(path, CATS, source="test", attributes={"seed": seed}) as writer:
        for split, n in counts.items():
            images, voxels = _objects(rng, n)
            category = np.arange(n) % len(CATS)
            writer.create_split(split)
            for start in range(0, n, 2):  # several appends per split
                stop = min(n, start + 2)
                writer.append(split, images[start:stop], voxels[start:stop], category[start:stop],
                              [f"{split}-{i}" for i in range(start, stop)])
            written[split] = (images, voxels, category)
    return written


def test_round_trip_keeps_data_layout_and_attributes(tmp_path: Path) -> None:
    path = tmp_path / "views.h5"
    written = _write(path, {"train": 3, "val": 1, "test": 0})
    info = read_info(path)
    assert info.split_sizes == {"train": 3, "val": 1, "test": 0}
    assert info.categories == CATS and info.category_names == ["airplane", "bench"]
    assert info.layout == ViewsLayout()
    assert info.attributes["format"] == "recon-views" and info.attributes["version"] == 1
    assert info.attributes["source"] == "test" and info.attributes["seed"] == 0
    with open_views(path) as file:
        for split, (images, voxels, category) in written.items():
            np.testing.assert_array_equal(file[split]["images"][()], images)
            np.testing.assert_array_equal(file[split]["voxels"][()], voxels)
            np.testing.assert_array_equal(file[split]["category"][()], category)
            assert [x.decode() for x in file[split]["object_id"][()]] == [f"{split}-{i}" for i in range(len(images))]
        images = file["train"]["images"]
        assert images.chunks == (1, 1, 4, 64, 64) and images.compression == "gzip"
        assert file["train"]["voxels"].chunks == (1, 32, 32, 32) and file["train"]["voxels"].dtype == bool
        assert file["train"]["category"].dtype == np.int16


def test_writer_leaves_no_file_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "views.h5"
    with pytest.raises(RuntimeError, match="boom"), ViewsWriter(path, CATS, source="test") as writer:
        writer.append("train", *_objects(np.random.default_rng(0), 1), [0], ["a"])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_replaces_an_existing_file_only_on_success(tmp_path: Path) -> None:
    path = tmp_path / "views.h5"
    _write(path, {"train": 1})
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt), ViewsWriter(path, CATS, source="test") as writer:
        writer.create_split("train")
        raise KeyboardInterrupt
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("bad", ["images", "voxels", "category", "split"])
def test_writer_rejects_wrong_arrays(tmp_path: Path, bad: str) -> None:
    images, voxels = _objects(np.random.default_rng(0), 2)
    category, split = np.array([0, 1]), "train"
    if bad == "images":
        images = images[:, :, :3]
    elif bad == "voxels":
        voxels = voxels.astype(np.uint8)
    elif bad == "category":
        category = np.array([0, 2])
    else:
        split = "training"
    with pytest.raises(ValueError), ViewsWriter(tmp_path / "v.h5", CATS, source="test") as writer:
        writer.append(split, images, voxels, category, ["a", "b"])
    assert not (tmp_path / "v.h5").exists()


def test_missing_file_and_non_hdf5_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.h5.*recon-data synth"):
        read_info(tmp_path / "nothing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(ViewsFormatError, match="notes.h5: not an HDF5 file"):
        read_info(text)


def _corrupt(path: Path, change: str) -> None:
    with h5py.File(path, "r+") as file:
        if change == "no-format":
            del file.attrs["format"]
        elif change == "format":
            file.attrs["format"] = "something-else"
        elif change == "version":
            file.attrs["version"] = 2
        elif change == "no-distance":
            del file.attrs["distance"]
        elif change == "no-categories":
            del file["categories"]
        elif change == "names":
            file["categories"].attrs["names"] = ["airplane"]
        elif change == "images-shape":
            del file["train/images"]
            file.create_dataset("train/images", (2, 24, 3, 64, 64), np.uint8)
        elif change == "images-dtype":
            del file["train/images"]
            file.create_dataset("train/images", (2, 24, 4, 64, 64), np.float32)
        elif change == "count":
            del file["train/voxels"]
            file.create_dataset("train/voxels", (3, 32, 32, 32), bool)
        elif change == "no-voxels":
            del file["train/voxels"]
        elif change == "category-range":
            file["train/category"][0] = 7
        elif change == "no-splits":
            del file["train"]
        elif change == "one-view":
            file.attrs["num_views"] = 1
        elif change == "voxel-size":
            file.attrs["voxel_size"] = 128


@pytest.mark.parametrize(("change", "message"), [
    ("no-format", "not a recon-views file \\(attribute 'format' is missing\\).*recon-data"),
    ("format", "format is 'something-else'; expected 'recon-views'"),
    ("version", "version 2; this reader understands version 1"),
    ("no-distance", "attribute 'distance' is missing"),
    ("no-categories", "'/categories' is missing"),
    ("names", "'/categories' has 2 synsets but attribute 'names'"),
    ("images-shape", "/train/images has shape \\(2, 24, 3, 64, 64\\); expected \\(N, 24, 4, 64, 64\\)"),
    ("images-dtype", "/train/images has dtype float32; expected uint8"),
    ("count", "/train holds 2 images but 3 entries in /train/voxels"),
    ("no-voxels", "/train/voxels is missing"),
    ("category-range", "/train/category has values outside \\[0, 2\\)"),
    ("no-splits", "no split groups"),
    ("one-view", "attribute 'num_views' is 1; recon trains on pairs of views of an object, so a file needs at least 2"),
    ("voxel-size", "attribute 'voxel_size' is 128; recon's voxelizer scores IoU on grids of 1 to 64 voxels a side"),
])
def test_reader_refuses_what_it_does_not_understand(tmp_path: Path, change: str, message: str) -> None:
    path = tmp_path / "views.h5"
    _write(path, {"train": 2})
    _corrupt(path, change)
    with pytest.raises(ViewsFormatError, match=f"^{path}: .*{message}"):
        read_info(path)


def test_categories_resolve_names_synsets_and_nmr_aliases() -> None:
    chosen = resolve_categories(["Chair", "02691156", "vessel", "speaker"], SHAPENET_CATEGORIES)
    assert [c.name for c in chosen] == ["airplane", "chair", "loudspeaker", "watercraft"]
    with pytest.raises(ValueError, match="unknown or unavailable categories \\['spoon'\\]"):
        resolve_categories(["chair", "spoon"], SHAPENET_CATEGORIES)
