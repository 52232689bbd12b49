"""Data path throughput: view pairs/s and peak RSS of ViewPairDataModule streaming a large recon-views
file, against loading the same split into RAM first as SoftRas does.

The file (~3 GB; quick: ~120 MB) is written to a temp dir and deleted after. Its images are random bytes,
as the issue asks: deflate cannot shrink them, so the file is as large as the raw data a SoftRas-style
loader holds in RAM, and inflating them is cheap. A second streaming row uses chunks of real synthetic
renders (compressible, so inflate does real work) at the same object count, on a small file. Chunks are
compressed once into a pool and written with ``write_direct_chunk``; reading is unaffected (every chunk is
still read and inflated on its own); voxels are solid synthetic shapes in both files, as real grids are.
Rows with ``voxels`` false leave voxels out of the training batches (``train_voxels=False``), and the
measuring process runs torch on one thread (see the ``__main__`` block). Each measurement runs in a fresh subprocess and reports its own peak
RSS and its largest DataLoader worker's (``VmHWM``). A forked worker starts with its parent's pages
mapped, so main + worker double-counts the shared part: an upper bound.
The file stays in the page cache (not counted in RSS), as it would on a machine with enough RAM.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import h5py
import numpy as np

from recon.datamodules.categories import SHAPENET_CATEGORIES
from recon.datamodules.h5 import ViewsWriter

REPO = Path(__file__).resolve().parents[1]
BATCH = 64


def _chunk_pool(content: str, rng: np.random.Generator) -> tuple[list[bytes], list[bytes]]:
    """Compressed (gzip level 4, as ViewsWriter) view chunks and voxel chunks to assemble objects from.

    Voxels are always those of synthetic shapes: solid objects, as in the real data (random voxels would
    make inflate several times slower than any real grid)."""
    from recon.datamodules.shapes import make_shape
    from recon.datamodules.synthetic import ViewRenderer, object_rng, voxelize_mesh

    meshes = [make_shape(c.name, object_rng(0, "train", c.name, 0)) for c in SHAPENET_CATEGORIES]
    voxels = [voxelize_mesh(mesh).tobytes() for mesh in meshes]
    if content == "random":
        views = [rng.integers(0, 256, 4 * 64 * 64, dtype=np.uint8).tobytes() for _ in range(512)]
    else:  # renders of the synthetic objects
        render = ViewRenderer()
        views = [view.tobytes() for mesh in meshes for view in render(mesh)]
    return [zlib.compress(v, 4) for v in views], [zlib.compress(v, 4) for v in voxels]


def write_large_file(path: Path, objects: int, content: str, seed: int = 0) -> float:
    """A valid recon-views file with ``objects`` train objects over the 13 categories; returns its size in GB."""
    rng = np.random.default_rng(seed)
    view_pool, voxel_pool = _chunk_pool(content, rng)
    with ViewsWriter(path, SHAPENET_CATEGORIES, source=f"bench ({content} content)") as writer:
        writer.create_split("train")
    with h5py.File(path, "r+") as file:
        group = file["train"]
        for name in ("images", "voxels", "category", "object_id"):
            group[name].resize(objects, axis=0)
        group["category"][:] = np.arange(objects) % len(SHAPENET_CATEGORIES)
        group["object_id"][:] = np.array([str(i) for i in range(objects)], dtype=object)
        images, voxels = group["images"].id, group["voxels"].id
        for o in range(objects):
            for view, pick in enumerate(rng.integers(len(view_pool), size=24)):
                images.write_direct_chunk((o, view, 0, 0, 0), view_pool[pick])
            voxels.write_direct_chunk((o, 0, 0, 0), voxel_pool[o % len(voxel_pool)])
    return path.stat().st_size / 1e9


def _vm_hwm_mb(pid: int | str) -> float:
    """Peak resident set (``VmHWM``) of a live process in MB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0.0)


def _peak_rss_mb() -> tuple[float, float]:
    """(this process, its largest live child) peak RSS in MB, from ``VmHWM``. Not ``ru_maxrss``: Linux
    carries a parent's high-water mark into a forked and exec'd child, so it would report the bench's own
    size. A DataLoader worker starts with its parent's pages mapped (shared, not copied): its figure counts
    those again, so main + worker is an upper bound."""
    children = [pid for task in Path("/proc/self/task").glob("*/children") for pid in task.read_text().split()]
    return _vm_hwm_mb("self"), max([0.0] + [_vm_hwm_mb(pid) for pid in children])


def measure_stream(path: str, workers: int, pairs: int, voxels: bool) -> dict:
    """Iterate the DataModule's training loader until ``pairs`` view pairs came out (as float32 images: the
    DataModule's ``on_after_batch_transfer`` runs here, in the main process, as it does when training on CPU)."""
    from recon.datamodules.datamodule import ViewPairDataModule

    data = ViewPairDataModule(path, batch_size=BATCH, num_workers=workers, train_voxels=voxels)
    data.setup("fit")
    loader = data.train_dataloader()
    done, epoch, started = 0, 0, None
    while done < pairs:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if started is None:  # the first batch pays for worker start-up and file opening
                started = time.perf_counter()
                continue
            batch = data.on_after_batch_transfer(batch, 0)  # uint8 -> float32 [0, 1], as in training on CPU
            done += len(batch["images_a"])
            if done >= pairs:
                break
        epoch += 1
    seconds = time.perf_counter() - started
    own, child = _peak_rss_mb()
    return {"pairs_per_s": done / seconds, "load_s": 0.0, "rss_main_mb": own, "rss_worker_mb": child}


def measure_in_ram(path: str, pairs: int) -> dict:
    """SoftRas's loader: the whole split in RAM (uint8), class-balanced pairs gathered and scaled per batch."""
    import torch

    from recon.datamodules.dataset import view_eyes
    from recon.datamodules.h5 import ViewsLayout

    start = time.perf_counter()
    with h5py.File(path, "r") as file:
        images = file["train"]["images"][()]
        voxels = file["train"]["voxels"][()]
        category = file["train"]["category"][()]
    load = time.perf_counter() - start
    eyes = view_eyes(ViewsLayout())
    members = [np.flatnonzero(category == c) for c in np.unique(category)]
    rng = np.random.default_rng(0)
    start, done = time.perf_counter(), 0
    while done < pairs:
        classes = rng.integers(len(members), size=BATCH)
        objects = np.array([members[c][rng.integers(len(members[c]))] for c in classes])
        view_a, view_b = rng.integers(24, size=(2, BATCH))
        batch = {
            "images_a": torch.from_numpy(images[objects, view_a]).float() / 255.0,
            "images_b": torch.from_numpy(images[objects, view_b]).float() / 255.0,
            "eyes_a": eyes[view_a], "eyes_b": eyes[view_b], "voxels": torch.from_numpy(voxels[objects]),
        }
        done += len(batch["images_a"])
    own, _ = _peak_rss_mb()
    return {"pairs_per_s": done / (time.perf_counter() - start), "load_s": load, "rss_main_mb": own, "rss_worker_mb": 0.0}


def _in_subprocess(mode: str, path: Path, workers: int, pairs: int, voxels: bool) -> dict:
    command = [sys.executable, "-m", "bench.bm_data", mode, str(path), str(workers), str(pairs), str(int(voxels))]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    """Rows {"bench": "data", "loader", "content", "voxels", "workers", "objects", "file_gb", "pairs_per_s",
    "load_s", "rss_main_mb", "rss_worker_mb"}."""
    objects = 300 if quick else 7_500  # 7,500 objects × 24 random views ≈ 3 GB
    pairs = 3_000 if quick else 20_000
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="recon-bench-data-"))
    try:
        for content in ("random", "rendered"):
            path = folder / f"{content}.h5"
            size = write_large_file(path, objects, content)
            if quick:
                settings = [("stream", 1, True), ("stream", 1, False)]
            else:
                settings = [("stream", w, v) for w in (0, 1, 2) for v in (True, False)]
            if content == "random":
                settings.append(("in_ram", 0, True))
            for loader, workers, voxels in settings:
                result = _in_subprocess(loader, path, workers, pairs, voxels)
                rows.append({"bench": "data", "loader": loader, "content": content, "voxels": voxels,
                             "workers": workers, "objects": objects, "file_gb": round(size, 3), **result})
            path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


if __name__ == "__main__":  # one measurement: python -m bench.bm_data MODE PATH WORKERS PAIRS VOXELS
    import torch

    # One thread in the measuring process: on a busy 2-core machine OpenMP's second thread makes the one
    # tensor op here (uint8 -> float32) ~15x slower, which would measure the load, not the data path.
    torch.set_num_threads(1)
    mode, file, workers, pairs, voxels = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    result = measure_stream(file, workers, pairs, voxels) if mode == "stream" else measure_in_ram(file, pairs)
    print(json.dumps(result))
