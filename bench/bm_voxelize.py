"""Voxelization throughput: SoftRas-exact 32³ voxels of randomly deformed 1280-face template spheres.

Rows at the default torch thread count and at one thread: on a busy 2-core machine the many mid-sized ops
of the voxelizer can run much slower multi-threaded (OpenMP barriers wait on descheduled threads), so the
pair tells load apart from code. On CUDA (when present) one more row per batch size.
"""

from __future__ import annotations

import time

import torch

from recon.mesh import template_sphere, voxelize


def _deformed_templates(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 642, 3) template spheres of radius ~0.35 with ±15 % random per-coordinate scaling (inside the
    voxel cube, like a decoder's output early in training) and the shared (1280, 3) faces."""
    vertices, faces = template_sphere()
    g = torch.Generator().manual_seed(seed)
    scale = 0.35 * (1 + 0.3 * (torch.rand(batch, vertices.shape[0], 3, generator=g) - 0.5))
    return (vertices[None] * scale).clamp(-0.49, 0.49), faces


def _best_seconds(vertices: torch.Tensor, faces: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Fastest of ``repeats`` calls (after a warm-up) and the occupied fraction of the grid."""
    voxelize(vertices[:2], faces)  # warm-up: first-call allocations, CUDA context
    seconds = []
    for _ in range(repeats):
        if vertices.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        occupied = voxelize(vertices, faces)
        if vertices.is_cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return min(seconds), float(occupied.float().mean())


def run(quick: bool = False) -> list[dict]:
    """Rows {"bench": "voxelize", "device", "threads", "batch", "faces", "size", "meshes_per_s", ...}."""
    batches = (64,) if quick else (64, 256)
    repeats = 2 if quick else 5
    settings = [("cpu", torch.get_num_threads())]
    if torch.get_num_threads() > 1:
        settings.append(("cpu", 1))
    if torch.cuda.is_available():
        settings.append(("cuda", torch.get_num_threads()))
    default_threads = torch.get_num_threads()
    rows = []
    try:
        for device, threads in settings:
            torch.set_num_threads(threads)
            for batch in batches:
                vertices, faces = _deformed_templates(batch)
                seconds, occupancy = _best_seconds(vertices.to(device), faces.to(device), repeats)
                rows.append({
                    "bench": "voxelize",
                    "device": device,
                    "threads": threads,
                    "batch": batch,
                    "faces": int(faces.shape[0]),
                    "size": 32,
                    "meshes_per_s": round(batch / seconds, 1),
                    "seconds": round(seconds, 4),
                    "occupancy": round(occupancy, 4),
                })  # fmt: skip
    finally:
        torch.set_num_threads(default_threads)
    return rows
