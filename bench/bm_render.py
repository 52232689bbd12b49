"""Soft rasterizer throughput and peak memory: recon's culled SoftRenderer against the dense reference.

Setting of SoftRas's reconstruction training: 64² images, a 642-vertex / 1280-face sphere deformed like a
decoder output, σ = 1e-4, dist_eps = 1e-10, silhouettes ('prod' alpha) and, at one batch size, lit RGBA
('softmax' RGB through the pair lists). Each configuration runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = r"""
import json, resource, statistics, sys, time, torch
from recon.allocator import keep_freed_memory
keep_freed_memory()
from recon.mesh import template_sphere
from recon.render import RasterSettings, SoftRenderer, eye_from_angles
from recon.render.reference import dense_soft_rasterize
cfg = json.loads(sys.argv[1])
if cfg.get("threads"):
    torch.set_num_threads(cfg["threads"])
dev = torch.device(cfg["device"])
vertices, faces = template_sphere()
g = torch.Generator().manual_seed(0)
b = cfg["batch"]
# A decoder-like deformation: smooth random scaling per axis and per vertex, radius about 0.25-0.45.
scale = 0.35 * (1 + 0.25 * torch.rand(b, 1, 3, generator=g)) * (1 + 0.05 * torch.randn(b, vertices.shape[0], 1, generator=g))
verts = (vertices[None] * scale).to(dev)
faces = faces.to(dev)
eyes = eye_from_angles(2.732, 30.0, -15.0 * (torch.arange(b) % 24)).to(dev)
renderer = SoftRenderer(RasterSettings(image_size=64, sigma=1e-4, dist_eps=1e-10))
white = torch.ones(b, faces.shape[0], 3, device=dev)

def step():
    v = verts.clone().requires_grad_(cfg["backward"])
    if cfg["impl"] == "recon":
        alpha = renderer.silhouette(v, faces, eyes)
    elif cfg["impl"] == "rgba":  # lit white RGBA: what renderer(v, faces, eyes) without colours computes
        alpha = renderer(v, faces, eyes, colors=white, color_mode="face")
    else:
        alpha = dense_soft_rasterize(renderer.face_vertices(v, faces, eyes), None, renderer.settings)
    if cfg["backward"]:
        alpha.sum().backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()

step()
times = []
for _ in range(cfg["repeats"]):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
best = min(times)
peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"images_per_s": b / best, "ms_per_batch": 1000 * best,
                  "median_ms": 1000 * statistics.median(times), "peak_mb": peak}))
"""


def _measure(impl: str, batch: int, backward: bool, device: str, repeats: int, threads: int | None = None) -> dict:
    cfg = {"impl": impl, "batch": batch, "backward": backward, "device": device, "repeats": repeats,
           "threads": threads}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = (8,) if quick else (8, 64, 256)
    # On CPU, one thread and all of them: the pair tells the code's speed apart from the machine's load (with
    # more runnable threads than free cores, every parallel region waits on a descheduled thread).
    threads = [torch.get_num_threads()] if device == "cuda" else sorted({1, torch.get_num_threads()})
    rows = []
    dense_rate = {}
    for backward in (False, True):
        pass_name = "forward+backward" if backward else "forward"
        # The dense reference holds B·4096·1280 floats per tensor: measure it at a small batch only.
        dense = _measure("dense", 2 if quick else 4, backward, device, 1 if quick else 2)
        dense_rate[backward] = dense.get("images_per_s")
        rows.append({"bench": "render", "impl": "dense reference", "pass": pass_name, "batch": 2 if quick else 4,
                     "threads": threads[-1], **dense})
        for n_threads in threads:
            for batch in batches:
                res = _measure("recon", batch, backward, device, 2 if quick else 5, n_threads)
                rate = res.get("images_per_s", 0)
                speedup = rate / dense_rate[backward] if dense_rate[backward] else float("nan")
                rows.append({"bench": "render", "impl": "recon SoftRenderer", "pass": pass_name, "batch": batch,
                             "threads": n_threads, **res, "x_dense": speedup})
            # RGBA through the pair lists (colour training; also renderer(...) without colours), one batch size.
            batch = batches[0] if quick else 64
            res = _measure("rgba", batch, backward, device, 2 if quick else 3, n_threads)
            rows.append({"bench": "render", "impl": "recon SoftRenderer RGBA", "pass": pass_name, "batch": batch,
                         "threads": n_threads, **res})
    return rows
