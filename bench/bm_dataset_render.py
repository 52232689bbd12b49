"""Dataset rendering throughput (``recon-data render``): objects per second for meshes of ~1k, 10k, 100k faces.

One object is what a worker process does per mesh file: load it (binary PLY, trimesh), prepare it (clean
faces, normalise), render the 24 dataset views at 64² with 2× supersampling, voxelize at 32³, and keep the
result as a compressed shard. Each stage is timed on its own (best of a few runs, one torch thread, as in a
worker), so the row shows where the time goes. A last row runs the whole command (``render_collection``:
discovery aside, worker start-up, shards, assembly) on 1k-face meshes with the default worker count.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recon.datamodules.meshes import load_mesh
from recon.datamodules.pool import default_workers
from recon.datamodules.rendering import render_collection
from recon.datamodules.shards import Shard, ShardStore
from recon.datamodules.sources import discover
from recon.datamodules.views import ViewRenderer, ViewSettings, prepare_mesh, voxelize_mesh

# (rings, segments) of a UV sphere (trimesh.creation.uv_sphere count): about 1k, 10k and 100k faces.
SPHERES = {"1k": (12, 24), "10k": (36, 72), "100k": (112, 224)}


def _mesh_file(folder: Path, count: tuple[int, int]) -> Path:
    import trimesh

    sphere = trimesh.creation.uv_sphere(radius=0.4, count=list(count))
    rng = np.random.default_rng(0)
    sphere.vertices *= [1.0, 0.7, 1.3]
    sphere.vertices += rng.normal(0, 0.004, sphere.vertices.shape)  # a bumpy, asymmetric surface
    sphere.visual.vertex_colors = rng.integers(0, 255, (len(sphere.vertices), 4), dtype=np.uint8)
    path = folder / f"sphere_{count[0]}x{count[1]}.ply"
    sphere.export(path)
    return path


def _best(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def run(quick: bool = False) -> list[dict]:
    """Rows {"bench": "dataset_render", "faces", "load_ms", "prepare_ms", "render_ms", "voxelize_ms",
    "shard_ms", "objects_per_s"} per mesh size, one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    settings = ViewSettings()
    views = ViewRenderer(settings.layout, settings.supersample)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            store = ShardStore(Path(folder) / "shards")
            store.folder.mkdir()
            for label, count in SPHERES.items():
                if quick and label == "100k":
                    continue
                repeats = 1 if quick or label == "100k" else 3
                path = _mesh_file(Path(folder), count)
                load, loaded = _best(lambda p=path: load_mesh(p), repeats)
                prepare, mesh = _best(lambda m=loaded.mesh: prepare_mesh(m, settings), repeats)
                views(mesh)  # warm-up: first-call allocations
                render, images = _best(lambda m=mesh: views(m), repeats)
                voxelize, voxels = _best(lambda m=mesh: voxelize_mesh(m), repeats)
                shard, _ = _best(lambda i=images, v=voxels: store.write(0, Shard("x", i, v, "vertex", "")), repeats)
                total = load + prepare + render + voxelize + shard
                rows.append({
                    "bench": "dataset_render",
                    "mesh": label,
                    "faces": int(len(loaded.mesh.faces)),
                    "load_ms": round(1e3 * load, 1),
                    "prepare_ms": round(1e3 * prepare, 1),
                    "render_ms": round(1e3 * render, 1),
                    "voxelize_ms": round(1e3 * voxelize, 1),
                    "shard_ms": round(1e3 * shard, 1),
                    "objects_per_s": round(1 / total, 2),
                    "occupied_voxels": int(voxels.sum()),
                })  # fmt: skip
            rows.append(_whole_command(Path(folder), 8 if quick else 32))
    finally:
        torch.set_num_threads(threads)
    return rows


def _whole_command(folder: Path, objects: int) -> dict:
    """objects/s of ``render_collection`` over ``objects`` copies of a 1k-face mesh, default workers."""
    source = _mesh_file(folder, SPHERES["1k"])
    (folder / "collection" / "spheres").mkdir(parents=True)
    for n in range(objects):
        (folder / "collection" / "spheres" / f"{n:03d}.ply").write_bytes(source.read_bytes())
    workers = default_workers()
    start = time.perf_counter()
    render_collection(discover(folder / "collection"), folder / "out.h5", workers=workers)
    seconds = time.perf_counter() - start
    return {"bench": "dataset_render", "mesh": f"command, {objects} × 1k", "faces": 960, "workers": workers,
            "objects_per_s": round(objects / seconds, 2)}
