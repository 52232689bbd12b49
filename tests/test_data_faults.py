"""Faults in the data path, with real files and real processes: each gives one clear error and loses nothing.

Unwritten HDF5 chunks read as h5py reads them; truncated, corrupt or misnamed files and damaged ``.npz``
members give one line naming the file; Ctrl-C or SIGTERM stop ``recon-data`` with its temporary file
removed; a killed writer's temporary file is removed on the next write, a live one's never.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from recon.datamodules.categories import SHAPENET_CATEGORIES
from recon.datamodules.cli import main
from recon.datamodules.datamodule import ViewPairDataModule
from recon.datamodules.dataset import ViewPairDataset
from recon.datamodules.h5 import ViewsFormatError, ViewsLayout, ViewsWriter, read_info

CATS = SHAPENET_CATEGORIES[:2]
RECON_DATA = str(Path(sys.executable).parent / "recon-data")


def _write(path: Path, n: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with ViewsWriter(path, CATS, source="test") as writer:
        writer.append("train", rng.integers(0, 256, (n, 24, 4, 64, 64), dtype=np.uint8),
                      rng.random((n, 32, 32, 32)) < 0.3, np.arange(n) % 2, [str(i) for i in range(n)])


def test_chunks_never_written_read_as_h5py_reads_them(tmp_path: Path) -> None:
    # Valid HDF5 that no ViewsWriter makes: voxels created chunked + gzip and never written (fill value),
    # and a third object whose image chunks were never written either (the datasets only grew).
    path = tmp_path / "sparse.h5"
    _write(path, n=2)
    with h5py.File(path, "r+") as file:
        group = file["train"]
        del group["voxels"]
        group.create_dataset("voxels", (3, 32, 32, 32), bool, chunks=(1, 32, 32, 32), compression="gzip")
        for name in ("images", "category", "object_id"):
            group[name].resize(3, axis=0)
    data = ViewPairDataModule(str(path), batch_size=4, val_views_per_object=None)
    data.setup("fit")
    keys = [(0, 1, 2), (2, 5, 0), (1, 23, 23), (2, 7, 7)]
    batch = ViewPairDataset(path, "train", ViewsLayout(), 3, float_images=False)[keys]
    with h5py.File(path, "r") as file:
        images, voxels = file["train/images"][()], file["train/voxels"][()]
    assert not voxels.any() and not images[2].any() and images[:2].any()
    for i, (o, a, b) in enumerate(keys):
        assert torch.equal(batch["images_a"][i], torch.from_numpy(images[o, a]))
        assert torch.equal(batch["images_b"][i], torch.from_numpy(images[o, b]))
        assert torch.equal(batch["voxels"][i], torch.from_numpy(voxels[o]))
    epoch = [data.on_after_batch_transfer(b, 0) for b in data.train_dataloader()]
    assert sum(len(b["object_index"]) for b in epoch) == 3


def _truncated(path: Path) -> Path:
    _write(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_truncated_or_corrupt_file_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    truncated = _truncated(tmp_path / "truncated.h5")
    one_line = f"^{truncated}: truncated or corrupt HDF5 file \\(truncated file: eof = \\d+, [^\n]*\\)$"
    with pytest.raises(ViewsFormatError, match=one_line):
        read_info(truncated)
    with pytest.raises(ViewsFormatError, match=one_line):  # instantiating the DataModule checks the file
        ViewPairDataModule(str(truncated))
    corrupt = tmp_path / "corrupt.h5"
    _write(corrupt)
    content = bytearray(corrupt.read_bytes())
    content[100:400] = bytes(300)  # the superblock's signature survives, what follows does not
    corrupt.write_bytes(bytes(content))
    with pytest.raises(ViewsFormatError, match=f"^{corrupt}: truncated or corrupt HDF5 file \\([^\n]+\\)$"):
        read_info(corrupt)


def test_a_damaged_chunk_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "views.h5"
    _write(path)
    with h5py.File(path, "r") as file:
        chunk = file["train/images"].id.get_chunk_info_by_coord((1, 4, 0, 0, 0))
    with open(path, "r+b") as raw:  # overwrite the start of one compressed view with garbage
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * 64)
    dataset = ViewPairDataset(path, "train", ViewsLayout(), 3)
    assert dataset[(0, 4, 5)]["images_a"].shape == (4, 64, 64)  # other chunks still read
    with pytest.raises(ViewsFormatError, match=f"^{path}: truncated or corrupt HDF5 file \\(.+\\)$"):
        dataset[(1, 4, 5)]


def test_recon_data_info_errors_are_one_unwrapped_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    deep = tmp_path / "a-rather-long-folder-name-for-datasets" / "another-level-of-folders" / "shapenett.h5"
    assert main(["info", str(deep)]) == 1  # captured: not a terminal, so nothing may wrap at 80 columns
    assert capsys.readouterr().err.splitlines() == [
        f"recon-data info: error: {deep}: no such file; expected a recon-views HDF5 file — create one with "
        "`recon-data synth` or `recon-data convert-nmr`"]
    assert main(["info", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"recon-data info: error: {tmp_path}: is a directory; expected a recon-views HDF5 file (such as "
        "data/synthetic.h5) — create one with `recon-data synth` or `recon-data convert-nmr`"]
    assert main(["info", str(_truncated(tmp_path / "truncated.h5"))]) == 1
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1
    assert f"{tmp_path / 'truncated.h5'}: truncated or corrupt HDF5 file (truncated file: eof" in error


@pytest.mark.slow
def test_recon_data_output_to_a_pipe_is_not_wrapped(tmp_path: Path) -> None:
    deep = tmp_path / "a-rather-long-folder-name-for-datasets" / "another-level-of-folders" / "shapenett.h5"
    run = subprocess.run([RECON_DATA, "info", str(deep)], capture_output=True, text=True, timeout=120,
                         check=False, env={**os.environ, "COLUMNS": "80"})
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.splitlines() == [
        f"recon-data info: error: {deep}: no such file; expected a recon-views HDF5 file — create one with "
        "`recon-data synth` or `recon-data convert-nmr`"]


def _nmr_files(folder: Path, n: int, compressed_voxels: bool = True) -> tuple[Path, Path]:
    """NMR's two files of one split (random images stored, solid-ish voxels), as np.savez writes them."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images, voxels = folder / "02691156_train_images.npz", folder / "02691156_train_voxels.npz"
    np.savez(images, rng.integers(0, 256, (n, 24, 4, 64, 64), dtype=np.uint8))
    grids = np.zeros((n, 32, 32, 32), bool)
    grids[:, 8:24, 4:28, 10:20] = True
    (np.savez_compressed if compressed_voxels else np.savez)(voxels, grids)
    return images, voxels


def _member_data(path: Path) -> tuple[int, int]:
    """(offset, size) in the file of the first member's compressed data."""
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    with open(path, "rb") as raw:
        raw.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(raw.read(4), "<u2")
    return info.header_offset + 30 + int(name_length) + int(extra_length), info.compress_size


def _flip(path: Path, offset: int) -> None:
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("damage", ["crc", "zlib"])
def test_damaged_npz_member_is_one_error_naming_file_and_member(tmp_path: Path, damage: str,
                                                                capsys: pytest.CaptureFixture) -> None:
    images, voxels = _nmr_files(tmp_path / "nmr", n=2)
    if damage == "crc":  # stored member: a flipped byte is only noticed by the CRC at its end
        offset, size = _member_data(images)
        _flip(images, offset + size // 2)
        damaged = images
    else:  # deflated member: find a flipped byte that breaks the deflate stream itself, as zlib sees it
        offset, size = _member_data(voxels)
        original = voxels.read_bytes()
        for candidate in range(offset, offset + size):
            stream = bytearray(original[offset: offset + size])
            stream[candidate - offset] ^= 0xFF
            try:
                zlib.decompressobj(-15).decompress(bytes(stream))
            except zlib.error:
                break
        _flip(voxels, candidate)
        damaged = voxels
    out = tmp_path / "out.h5"
    assert main(["convert-nmr", str(tmp_path / "nmr"), str(out), "--splits", "train"]) == 1
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1, error
    assert error.startswith(f"recon-data convert-nmr: error: {damaged}: member arr_0.npy is damaged (")
    assert ("Bad CRC-32 for file 'arr_0.npy'" if damage == "crc" else "(zlib: Error -3") in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nmr"]  # no output, no temporary file


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "delays"), [(signal.SIGINT, (0.0, 0.1, 0.3)), (signal.SIGTERM, (0.0, 0.2))])
def test_stop_signals_during_convert_nmr_always_stop_and_clean_up(tmp_path: Path, stop: signal.Signals,
                                                                  delays: tuple[float, ...]) -> None:
    # Ctrl-C used to land in h5py's finalizers and be dropped: the conversion finished and exited 0.
    _nmr_files(tmp_path / "nmr", n=160, compressed_voxels=False)  # 63 MB of incompressible images: ~1-4 s
    out = tmp_path / "out.h5"
    for delay in delays:
        process = subprocess.Popen([RECON_DATA, "convert-nmr", str(tmp_path / "nmr"), str(out), "--splits", "train"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not glob.glob(str(tmp_path / ".out.h5.tmp-*")) and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(delay)
        if process.poll() is not None:  # finished before the signal (a fast machine): not a stop to test
            process.communicate(timeout=60)
            assert process.returncode == 0 and read_info(out).split_sizes["train"] > 0
            out.unlink()
            continue
        os.kill(process.pid, stop)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 128 + stop, (delay, err)
        assert "Exception ignored" not in err and "Traceback" not in err, err
        assert err.splitlines()[-1].startswith("recon-data: ") and "no output file was written" in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["nmr"], delay  # no output, no temporary file


WRITER_SCRIPT = """
import sys, time
from recon.datamodules.categories import SHAPENET_CATEGORIES
from recon.datamodules.h5 import ViewsWriter
with ViewsWriter(sys.argv[1], SHAPENET_CATEGORIES[:2], source="test") as writer:
    writer.create_split("train")
    print("writing", flush=True)
    time.sleep(120)
"""


def test_temporary_files_of_killed_writers_are_removed_live_ones_kept(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "views.h5"
    killed = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline() == "writing\n" and live.stdout.readline() == "writing\n"
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        stale, running = (tmp_path / f".views.h5.tmp-{p.pid}" for p in (killed, live))
        assert stale.exists() and running.exists()  # what kill -9 leaves
        with caplog.at_level(logging.WARNING, logger="recon.datamodules.h5"):
            _write(out)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["views.h5", running.name])
        assert read_info(out).split_sizes == {"train": 3}
        messages = [record.getMessage() for record in caplog.records]
        assert messages == [f"removed {stale}, left by a writer that is no longer running"]
    finally:
        for process in (killed, live):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
