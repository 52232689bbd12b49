"""The rasterizer's kernels against each other: eager, numba (the CPU default), Triton (the silhouette on CUDA) and
inductor (``RECON_FUSED``).

Throughput of the silhouette and of the RGBA ('softmax') render, with per-face and with per-vertex colours, at the
training batch; the face-count × image-size grid, first-call cost with a cold and a warm compile cache, and
operations dispatched per render call.
All paths run in the same ``make bench`` on the same machine, each configuration group in a fresh subprocess
(``RECON_FUSED`` is read per call, but a fresh process keeps compile caches and allocator state apart). The
operation count is the number of ``aten::`` operations the profiler records for one forward+backward call: the
proxy for kernel launches on CUDA that can be measured on a CPU. On CUDA, ``device_syncs`` counts the times one
call waits for the GPU (copies to the host, data-dependent sizes), which stop the CPU from queueing ahead, and
``kernel_launches`` the CUDA kernels it launches (Triton's included, which are no ``aten::`` operations).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib.util import find_spec

_CHILD = r"""
import json, os, sys, time, torch
from recon.allocator import keep_freed_memory
keep_freed_memory()
from recon.mesh.template import icosphere
from recon.render import RasterSettings, SoftRenderer, eye_from_angles, fused, soft_rasterize
cfg = json.loads(sys.argv[1])
if cfg.get("threads"):
    torch.set_num_threads(cfg["threads"])
dev = torch.device(cfg["device"])
paths = cfg["paths"]  # RECON_FUSED values, measured alternately in this process: the same machine state for each
rows = []
first_call = None


def count_ops(fn):
    with torch.profiler.profile() as prof:
        fn()
    names = [e.name for e in prof.events()]
    return sum(n.startswith("aten::") for n in names), sum(n.startswith("## Call CompiledFxGraph") for n in names)


def count_launches(fn):  # CUDA kernel launches, Triton's included (they are no aten operations)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
    return sum("LaunchKernel" in e.name for e in prof.events())


def count_syncs(fn):  # the GPU synchronisations of one call: CUDA's sync debug mode warns at each
    import warnings
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


for level, size, b, backward, repeats in cfg["configs"]:
    vertices, faces = icosphere(level)
    g = torch.Generator().manual_seed(0)
    # A decoder-like deformation, as bench/bm_render.py.
    scale = 0.35 * (1 + 0.25 * torch.rand(b, 1, 3, generator=g))
    scale = scale * (1 + 0.05 * torch.randn(b, vertices.shape[0], 1, generator=g))
    verts, faces = (vertices[None] * scale).to(dev), faces.to(dev)
    eyes = eye_from_angles(2.732, 30.0, -15.0 * (torch.arange(b) % 24)).to(dev)
    renderer = SoftRenderer(RasterSettings(image_size=size, sigma=1e-4 * (64 / size) ** 2, dist_eps=1e-10))
    # 'face': one colour per face; 'vertex': per vertex, interpolated per corner (as colour training renders).
    per = vertices.shape[0] if cfg.get("rgba") == "vertex" else faces.shape[0]
    colors = torch.rand(b, per, 3, generator=g).to(dev)
    projected = renderer.face_vertices(verts, faces, eyes).detach()
    corner_colors = torch.rand(*projected.shape[:2], 3, 3, generator=g).to(dev)
    if cfg.get("rgba") == "face":
        corner_colors = corner_colors[:, :, :1]  # (B, F, 1, 3), as the renderer passes per-face colours

    def step(rgba=cfg.get("rgba")):
        v = verts.clone().requires_grad_(backward)
        if rgba:
            image = renderer(v, faces, eyes, colors=colors, color_mode=cfg["rgba"])
        else:
            image = renderer.silhouette(v, faces, eyes)
        if backward:
            image.sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def raster_only():  # the rasterizer alone, on projected faces: no camera, lighting or checks
        fv = projected.clone().requires_grad_(backward)
        image = soft_rasterize(fv, corner_colors if cfg.get("rgba") else None, renderer.settings)
        if backward:
            image.sum().backward()

    times = {path: [] for path in paths}
    silhouette_times = {path: [] for path in paths}  # RGBA rows: the silhouette's cost in the same loop
    for path in paths:  # warm-up (and, for the first, the first-call cost)
        os.environ["RECON_FUSED"] = path
        t = time.perf_counter(); step(); t = time.perf_counter() - t
        first_call = t if first_call is None else first_call
    for _ in range(repeats):
        for path in paths:
            os.environ["RECON_FUSED"] = path
            t = time.perf_counter(); step(); times[path].append(time.perf_counter() - t)
            if cfg.get("rgba"):
                t = time.perf_counter(); step(rgba=False); silhouette_times[path].append(time.perf_counter() - t)
    for path in paths:
        os.environ["RECON_FUSED"] = path
        best = min(times[path])
        row = {"path": path, "render": f"RGBA, {cfg['rgba']} colours" if cfg.get("rgba") else "silhouette",
               "faces": faces.shape[0],
               "image": size, "batch": b, "backward": backward, "ms_per_batch": 1000 * best,
               "ms_per_image": 1000 * best / b, "images_per_s": b / best}
        if len(paths) > 1:
            row["x_eager"] = min(times[paths[0]]) / best
        if cfg.get("rgba"):
            row["x_silhouette_cost"] = best / min(silhouette_times[path])
        if cfg.get("count_ops"):
            row["aten_ops"], row["compiled_calls"] = count_ops(step)
            row["aten_ops_rasterizer"], _ = count_ops(raster_only)
            if dev.type == "cuda":
                row["device_syncs"] = count_syncs(step)
                row["kernel_launches"] = count_launches(step)
        rows.append(row)
failed = fused._failed + fused._numba_failed + fused._triton_failed
print(json.dumps({"rows": rows, "first_call_s": first_call, "failed": failed}))
"""


PATHS = {"eager": "0", "numba": "auto", "inductor": "inductor", "triton": "triton"}


def _measure(paths: list[str], configs: list, device: str, threads: int | None, count_ops: bool = False,
             cache_dir: str | None = None, rgba: str | None = None) -> dict:
    env = dict(os.environ)
    if cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = env["NUMBA_CACHE_DIR"] = cache_dir
    cfg = {"configs": configs, "device": device, "threads": threads, "count_ops": count_ops, "rgba": rgba,
           "paths": [PATHS[p] for p in paths]}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1][:120]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    names = {value: name for name, value in PATHS.items()}
    for row in result["rows"]:
        row["path"] = names[row["path"]]
    return result


def _rows(res: dict, table: str, **extra) -> list[dict]:
    rows = []
    for row in res.get("rows", []):
        kind = "forward+backward" if row.pop("backward") else "forward"
        rows.append({"bench": "fused", "table": table, "path": row.pop("path"), "pass": kind, **extra, **row})
    if "error" in res or res.get("failed"):
        error = res.get("error") or res["failed"][0][:120]
        rows.append({"bench": "fused", "table": table, "error": error})
    return rows


def run(quick: bool = False) -> list[dict]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeats = 2 if quick else 6
    b = 8 if quick else 64
    rows: list[dict] = []
    # numba's kernels are CPU kernels; Triton's (the silhouette) run on CUDA.
    fast = ["eager", "numba"] if device == "cpu" else ["eager"] + (["triton"] if find_spec("triton") else [])

    # B=64 training setting (64², 1,280 faces): silhouette forward and forward+backward, the paths measured
    # alternately in one process, with the op counts; on one thread (the code's speed, not the shared machine's
    # load) and on every thread. Then the RGBA render, and inductor's kernels (their own process: they compile).
    b64 = [[3, 64, b, backward, repeats] for backward in (False, True)]
    thread_counts = [None] if device == "cuda" else list(dict.fromkeys([1, torch.get_num_threads()]))
    for threads in thread_counts:
        res = _measure(fast, b64, device, threads, count_ops=threads in (1, None))
        rows += _rows(res, f"B={b}", threads=threads or "all")
    one = 1 if device == "cpu" else None
    rgba = [[3, 64, b, backward, 2 if quick else 4] for backward in (False, True)]
    for layout in ("face", "vertex"):  # the RGBA render with one colour per face, and per vertex
        res = _measure(fast, rgba, device, one, count_ops=True, rgba=layout)
        rows += _rows(res, f"B={b}", threads=one or "all")
    rows += _rows(_measure(["inductor"], b64, device, one, count_ops=True), f"B={b}", threads=one or "all")

    # First call (compile) with an empty cache and with the one just filled.
    for path in ("numba", "inductor") if device == "cpu" else ("inductor",):
        with tempfile.TemporaryDirectory() as cache:
            for state in ("cold", "warm"):
                res = _measure([path], [[3, 64, 8, True, 1]], device, 1, cache_dir=cache)
                rows.append({"bench": "fused", "table": "first call", "path": f"{path}, {state} cache",
                             "first_call_s": res.get("first_call_s"), "error": res.get("error", "")})

    # Face count × image size, forward+backward, ms per image at B=16, one thread, the paths alternately.
    levels = (3, 4) if quick else (3, 4, 5)
    sizes = (64, 128) if quick else (64, 128, 256)
    grid = [[level, size, 4 if quick else 16, True, 1 if quick else 3] for level in levels for size in sizes]
    rows += _rows(_measure(fast, grid, device, one), "grid fwd+bwd")
    return rows
