"""Generate a synthetic ShapeNet-like recon-views file in the NMR dataset's exact camera and conventions.

Each object (``recon.datamodules.shapes``) goes through the dataset renderer of
``recon.datamodules.views``, the same code path as ``recon-data render`` takes for mesh files: rendered
at the 24 dataset views (distance 2.732, elevation 30°, azimuth −15°·k) in NMR's image storage and
voxelized with ``recon.mesh.voxelize``, the voxelization that scores predictions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from rich.progress import Progress

from recon.datamodules.categories import SHAPENET_CATEGORIES, resolve_categories
from recon.datamodules.h5 import SPLITS, ViewsFileInfo, ViewsLayout, ViewsWriter, read_info
from recon.datamodules.pool import default_workers, map_jobs
from recon.datamodules.shapes import make_shape
from recon.datamodules.views import (  # noqa: F401 (ViewRenderer, voxelize_mesh: re-exported)
    SUPERSAMPLE,
    RenderedObject,
    ViewRenderer,
    ViewSettings,
    dataset_renderer,
    voxelize_mesh,
)

# Objects per category and split for `recon-data synth` and `prepare_data`: 832 objects in all, about a minute
# on 2 CPU cores, and enough pairs for the default 1000-step CPU training run (~6 min).
DEFAULT_COUNTS: dict[str, int] = {"train": 48, "val": 8, "test": 8}


def object_rng(seed: int, split: str, category_name: str, index: int) -> np.random.Generator:
    """The generator of one object: fixed by (seed, split, category, index), whatever else is generated."""
    category = [c.name for c in SHAPENET_CATEGORIES].index(category_name)
    return np.random.default_rng([seed, SPLITS.index(split), category, index])


ObjectJob = tuple[int, str, str, int, ViewSettings]  # (seed, split, category name, index, settings)


def _start_worker() -> None:
    # One thread per process: the renderer's many small ops scale better across processes than threads
    # (measured ~2x), and the output does not depend on the number of processes.
    torch.set_num_threads(1)


def make_object(job: ObjectJob) -> RenderedObject:
    """Images uint8 (V, 4, S, S) and voxels bool (R, R, R) of one synthetic object."""
    seed, split, category, index, settings = job
    return dataset_renderer(settings)(make_shape(category, object_rng(seed, split, category, index)))


def _made_objects(jobs: list[ObjectJob], workers: int) -> Iterator[RenderedObject]:
    """``make_object`` of every job, in order; ``workers`` > 1 spreads them over worker processes that exit
    with this one (``recon.datamodules.pool``)."""
    threads = torch.get_num_threads()
    try:
        yield from map_jobs(make_object, jobs, workers, initializer=_start_worker)
    finally:
        torch.set_num_threads(threads)


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
    if not any(counts.values()):
        raise ValueError(f"object counts {dict(counts)}: no object to generate; expected at least one")
    chosen = resolve_categories(categories, SHAPENET_CATEGORIES) if categories else list(SHAPENET_CATEGORIES)
    splits = [s for s in SPLITS if s in counts]
    settings = ViewSettings(ViewsLayout(), supersample)
    jobs = [(seed, split, c.name, i, settings) for split in splits for c in chosen for i in range(counts[split])]
    if workers is None:  # a spawned worker costs seconds of imports: worth it only for many objects
        workers = default_workers() if len(jobs) >= 32 else 1
    workers = min(workers, len(jobs))
    task = progress.add_task("synth", total=len(jobs)) if progress is not None else None
    attributes = {"seed": seed, **settings.attributes()}
    with ViewsWriter(out, chosen, source="synthetic", layout=settings.layout, attributes=attributes) as writer:
        for split in splits:
            writer.create_split(split)
        made = _made_objects(jobs, workers)
        try:
            for (_, split, name, index, _), (images, voxels) in zip(jobs, made, strict=True):
                writer.append(split, images[None], voxels[None], [[c.name for c in chosen].index(name)],
                              [f"synthetic/{name}/{split}/{index:05d}"])
                if progress is not None and task is not None:
                    progress.advance(task)
        finally:
            made.close()  # stops the worker processes at once if writing failed
    return read_info(out)
