"""Generate a synthetic ShapeNet-like recon-views file in the NMR dataset's exact camera and conventions.

Each object (``recon.datamodules.shapes``) is rendered with ``recon.render.SoftRenderer`` at the 24 dataset
views (distance 2.732, elevation 30°, azimuth −15°·k) and voxelized with ``recon.mesh.voxelize``, the
voxelization that scores predictions, so its grid is in the dataset's voxel orientation by construction.

Images follow NMR's storage (softras.md §3.4): the colour over a white background, then ``1 − rgb``
(background 0), alpha = pixel coverage, uint8. Coverage is anti-aliased like Blender's renders: a hard
(binary) render at ``supersample`` × the resolution (2: NMR's own anti-aliasing), averaged over
supersample² blocks; with a white
renderer background the averaged RGB is exactly the colour composited over white with that coverage.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from recon.datamodules.categories import SHAPENET_CATEGORIES, resolve_categories
from recon.datamodules.h5 import SPLITS, ViewsFileInfo, ViewsLayout, ViewsWriter, read_info
from recon.datamodules.primitives import ColoredMesh
from recon.datamodules.shapes import make_shape

# Objects per category and split for `recon-data synth` and `prepare_data`: 832 objects in all, a few
# minutes on 2 CPU cores, and enough pairs for a ~15 min CPU training run.
DEFAULT_COUNTS: dict[str, int] = {"train": 48, "val": 8, "test": 8}
# 2x2 supersampling, as NMR's own renderer anti-aliases: 4x4 costs ~3x more for 16 instead of 4 alpha levels.
SUPERSAMPLE = 2
# The hard modes only test "inside or not"; a tiny σ shrinks the culling radius √(σ·ln(1/dist_eps − 1)) so
# that only covering (pixel, face) pairs are formed: same image, ~1.2-2x faster at 2x supersampling.
HARD_SIGMA = 1e-8


class ViewRenderer:
    """Render a coloured mesh at every view of ``layout`` into NMR-convention uint8 RGBA (V, 4, S, S)."""

    def __init__(self, layout: ViewsLayout | None = None, supersample: int = SUPERSAMPLE) -> None:
        from recon.render import SoftRenderer, eye_from_angles

        self.layout = layout = layout or ViewsLayout()
        self.supersample = supersample
        self.eyes = eye_from_angles(layout.distance, layout.elevation,
                                    torch.from_numpy(layout.azimuths()).float()).float()
        self.renderer = SoftRenderer(image_size=layout.image_size * supersample, sigma=HARD_SIGMA, aggr_rgb="hard",
                                     aggr_alpha="hard", background=(1.0, 1.0, 1.0))

    @torch.no_grad()
    def __call__(self, mesh: ColoredMesh) -> np.ndarray:
        views = len(self.eyes)
        vertices = torch.from_numpy(mesh.vertices).float()[None].expand(views, -1, -1)
        colors = torch.from_numpy(mesh.face_colors).float()[None].expand(views, -1, -1)
        rgba = self.renderer(vertices, torch.from_numpy(mesh.faces), self.eyes, colors, color_mode="face")
        rgba = F.avg_pool2d(rgba, self.supersample) if self.supersample > 1 else rgba
        stored = torch.cat([1.0 - rgba[:, :3], rgba[:, 3:]], dim=1)  # NMR: inverted RGB over white, alpha
        return (stored.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()


def voxelize_mesh(mesh: ColoredMesh, size: int = 32) -> np.ndarray:
    """bool (S, S, S) solid voxels of ``mesh`` in the dataset's (NMR) orientation, via ``recon.mesh.voxelize``."""
    from recon.mesh import voxelize

    return voxelize(torch.from_numpy(mesh.vertices)[None], torch.from_numpy(mesh.faces), size=size)[0].numpy()


def object_rng(seed: int, split: str, category_name: str, index: int) -> np.random.Generator:
    """The generator of one object: fixed by (seed, split, category, index), whatever else is generated."""
    category = [c.name for c in SHAPENET_CATEGORIES].index(category_name)
    return np.random.default_rng([seed, SPLITS.index(split), category, index])


ObjectJob = tuple[int, str, str, int]  # (seed, split, category name, index)
_WORKER: dict[str, ViewRenderer] = {}


def _start_worker(supersample: int) -> None:
    # One thread per process: the renderer's many small ops scale better across processes than threads
    # (measured ~2x), and the output does not depend on the number of processes.
    torch.set_num_threads(1)
    _WORKER["render"] = ViewRenderer(supersample=supersample)


def make_object(job: ObjectJob) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (V, 4, S, S) and voxels bool (R, R, R) of one synthetic object."""
    seed, split, category, index = job
    mesh = make_shape(category, object_rng(seed, split, category, index))
    return _WORKER["render"](mesh), voxelize_mesh(mesh, _WORKER["render"].layout.voxel_size)


def _made_objects(jobs: list[ObjectJob], workers: int, supersample: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``make_object`` of every job, in order; ``workers`` > 1 spreads them over spawned processes with
    a bounded number in flight (the results wait in memory only until the writer takes them)."""
    if workers <= 1:
        threads = torch.get_num_threads()
        try:
            _start_worker(supersample)
            yield from map(make_object, jobs)
        finally:
            torch.set_num_threads(threads)
        return
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools exist
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(supersample,)) as pool:
        pending: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()
        queue = iter(jobs)
        try:
            for job in itertools.islice(queue, 4 * workers):
                pending.append(pool.submit(make_object, job))
            while pending:
                result = pending.popleft().result()
                for job in itertools.islice(queue, 1):
                    pending.append(pool.submit(make_object, job))
                yield result
        finally:
            for future in pending:
                future.cancel()


def default_workers() -> int:
    """The CPU cores this process may use (at most 8)."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def generate_synthetic(out: str | os.PathLike[str], counts: Mapping[str, int] = DEFAULT_COUNTS, seed: int = 0,
                       categories: Sequence[str] | None = None, progress: Progress | None = None,
                       supersample: int = SUPERSAMPLE, workers: int | None = None) -> ViewsFileInfo:
    """Write a synthetic recon-views file with ``counts[split]`` objects per category; returns its description.

    Deterministic: the same arguments give the same bytes whatever ``workers`` is (each object comes from
    its own seeded generator; hard rendering and voxelization are exact on CPU). ``workers``: processes
    (default: the usable cores from 32 objects on; 0 or 1 renders in this process).
    """
    unknown = [s for s in counts if s not in SPLITS]
    if unknown or any(n < 0 for n in counts.values()):
        raise ValueError(f"object counts {dict(counts)}; expected non-negative counts for splits in {list(SPLITS)}")
    chosen = resolve_categories(categories, SHAPENET_CATEGORIES) if categories else list(SHAPENET_CATEGORIES)
    splits = [s for s in SPLITS if s in counts]
    jobs = [(seed, split, c.name, i) for split in splits for c in chosen for i in range(counts[split])]
    if workers is None:  # a spawned worker costs seconds of imports: worth it only for many objects
        workers = default_workers() if len(jobs) >= 32 else 1
    workers = min(workers, len(jobs))
    task = progress.add_task("synth", total=len(jobs)) if progress is not None else None
    layout = ViewsLayout()
    attributes = {"seed": seed, "supersample": supersample}
    with ViewsWriter(out, chosen, source="synthetic", layout=layout, attributes=attributes) as writer:
        for split in splits:
            writer.create_split(split)
        made = _made_objects(jobs, workers, supersample)
        try:
            for (_, split, name, index), (images, voxels) in zip(jobs, made, strict=True):
                writer.append(split, images[None], voxels[None], [[c.name for c in chosen].index(name)],
                              [f"synthetic/{name}/{split}/{index:05d}"])
                if progress is not None and task is not None:
                    progress.advance(task)
        finally:
            made.close()  # stops the worker processes at once if writing failed
    return read_info(out)
