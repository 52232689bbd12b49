"""``recon-data render``: a mesh collection into a recon-views file, resumable and in parallel.

Two phases. Render: every object not yet finished is loaded (``recon.datamodules.meshes``), rendered and
voxelized by the dataset renderer that ``synth`` uses (``recon.datamodules.views``) in worker processes
that exit with this one, and kept as a shard (``recon.datamodules.shards``); an object that fails for any
reason becomes a shard with the reason, never a failed run (so does one the camera sees nothing of in
every view: a file of blank images would train nothing). Assemble: the shards are streamed in object
order (split, category, id) into a ``ViewsWriter``, whose attributes record the collection, every
rendering choice, the colour sources and each skipped object with its reason; the shard folder is removed.
Memory holds a few objects at a time whatever the collection's size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.progress import Progress

from recon.datamodules.h5 import SPLITS, ViewsFileInfo, ViewsWriter, read_info
from recon.datamodules.meshes import load_mesh, outside_cube
from recon.datamodules.pool import default_workers, map_jobs
from recon.datamodules.shards import DamagedShard, Shard, ShardStore, partial_folder
from recon.datamodules.sources import DEFAULT_SPLIT, Collection, MeshSource, assign_splits
from recon.datamodules.views import ViewSettings, dataset_renderer

SOURCE = "meshes"
APPEND_BATCH = 16  # objects per ViewsWriter.append while assembling (fewer dataset resizes)
# HDF5 keeps attributes in the object header, at most 64 KiB each by default: the skipped list is cut there.
MAX_ATTRIBUTE = 60_000


class RenderJob(NamedTuple):
    index: int
    source: MeshSource  # split resolved
    settings: ViewSettings
    shards: str


class RenderSummary(NamedTuple):
    """What a run made: the file's description, objects rendered, (object id, path, reason) skipped, colour
    sources and the ids of objects clamped into the voxel cube."""

    info: ViewsFileInfo
    rendered: int
    skipped: list[tuple[str, str, str]]
    colors: dict[str, int]
    clipped: list[str]


def plan(collection: Collection, split: Sequence[float] = DEFAULT_SPLIT) -> list[MeshSource]:
    """The collection's objects with their splits, in file order: split, then category, then id."""
    ordered = assign_splits(collection.objects, split)
    return sorted(ordered, key=lambda o: (SPLITS.index(o.split or ""), o.category, o.object_id))


def render_object(job: RenderJob) -> tuple[int, str]:
    """Load, render, voxelize and keep one object; returns (index, "" or the reason it was skipped)."""
    store = ShardStore(job.shards)
    try:
        loaded = load_mesh(job.source.path)
        images, voxels = dataset_renderer(job.settings)(loaded.mesh)
        if not images[:, 3].any():  # alpha: an object seen edge-on in some views is fine, in all of them not
            layout = job.settings.layout
            raise ValueError(f"every view's silhouette is empty: the camera (--distance {layout.distance:g}, "
                             f"--elevation {layout.elevation:g}) sees nothing of it")
        clipped = job.settings.clip and job.settings.normalize == "none" and outside_cube(loaded.mesh)
        shard = Shard(job.source.object_id, images, voxels, loaded.colors, "", clipped)
    except Exception as error:  # one broken object must never end the run: keep why, go on
        reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        shard = Shard(job.source.object_id, None, None, "", reason or type(error).__name__)
    store.write(job.index, shard)
    return job.index, shard.reason


def _worker_died(job: RenderJob, why: str) -> tuple[int, str]:
    """The outcome of an object whose rendering killed its worker process twice (alone the second time): skipped,
    with the reason, as any object that cannot be rendered."""
    reason = f"its worker process died while rendering it ({why})"
    ShardStore(job.shards).write(job.index, Shard(job.source.object_id, None, None, "", reason))
    return job.index, reason


def _start_worker() -> None:
    torch.set_num_threads(1)  # one thread per process scales best for the renderer's many small ops


def render_collection(collection: Collection, out: str | os.PathLike[str], settings: ViewSettings | None = None,
                      split: Sequence[float] = DEFAULT_SPLIT, workers: int | None = None, resume: bool = False,
                      overwrite: bool = False, progress: Progress | None = None,
                      notice: Callable[[str], None] | None = None) -> RenderSummary:
    """Render ``collection`` into the recon-views file ``out``; see the module docstring.

    ``resume`` continues from the shards of an interrupted run with the same settings (damaged ones are
    rendered again, and ``notice`` gets a line saying so); ``overwrite`` discards them. ``workers``: processes
    (default: the usable cores from 16 objects on; ≤ 1: this process). Raises ``ValueError`` when no object at
    all could be rendered, or when a shard turns out damaged while assembling (it is removed: ``resume``
    renders its object again).
    """
    settings = settings or ViewSettings()
    objects = plan(collection, split)
    store = ShardStore(partial_folder(out))
    record = {
        "collection": collection.kind, "root": str(Path(collection.root).resolve()),
        "settings": {**asdict(settings.layout), **settings.attributes()},
        "split": list(split), "objects": len(objects),
        "objects_sha256": hashlib.sha256(json.dumps(
            # the files as they are, however SRC was typed (relative, absolute, from another folder)
            [(o.object_id, str(o.path.resolve()), o.category.synset, o.split) for o in objects]).encode()).hexdigest(),
    }
    done = store.open(record, resume, overwrite, notice)
    jobs = [RenderJob(i, o, settings, str(store.folder)) for i, o in enumerate(objects) if not store.done(i)]
    if workers is None:  # a spawned worker costs seconds of imports: worth it only for many objects
        workers = default_workers() if len(jobs) >= 16 else 1
    task = progress.add_task("render", total=len(objects), completed=done) if progress is not None else None
    threads = torch.get_num_threads()
    try:
        for _ in map_jobs(render_object, jobs, min(workers, max(len(jobs), 1)), _start_worker, ordered=False,
                          died=_worker_died):
            if progress is not None and task is not None:
                progress.advance(task)
    finally:
        torch.set_num_threads(threads)
    return _assemble(collection, objects, store, settings, split, out, progress)


def _assemble(collection: Collection, objects: list[MeshSource], store: ShardStore, settings: ViewSettings,
              split: Sequence[float], out: str | os.PathLike[str], progress: Progress | None) -> RenderSummary:
    skipped: list[tuple[str, str, str]] = []
    colors: Counter[str] = Counter()
    clipped: list[str] = []
    for index, item in enumerate(objects):  # the attributes need every outcome before the file is opened
        try:
            kind, reason, clamped = store.outcome(index)
        except DamagedShard as error:
            raise _discarded(store, index, item, error) from error
        if reason:
            skipped.append((item.object_id, str(item.path), reason))
        else:
            colors[kind] += 1
        if clamped:
            clipped.append(item.object_id)
    if len(skipped) == len(objects):
        store.remove()  # nothing worth resuming
        reasons = "; ".join(f"{i}: {r}" for i, _, r in skipped[:3])
        what = (f"none of the {len(objects)} objects could be rendered" if len(objects) > 1
                else "its only object could not be rendered")
        raise ValueError(f"{collection.root}: {what} ({reasons}{' ...' if len(skipped) > 3 else ''}); nothing written")
    attributes = {
        "collection": collection.kind,
        "collection_path": str(Path(collection.root).resolve()),
        **settings.attributes(),
        "split": "manifest" if all(o.split for o in collection.objects) else ",".join(f"{f:g}" for f in split),
        "lighting": "0.5 ambient + 0.5 directional from +y, flat per face",
        "colors": json.dumps(dict(sorted(colors.items()))),
        "skipped_count": len(skipped),
        "skipped": _listing([{"id": i, "path": p, "reason": r} for i, p, r in skipped]),
    }
    if settings.clip:
        attributes |= {"clipped_count": len(clipped), "clipped": _listing(clipped)}
    category_index = {c: i for i, c in enumerate(collection.categories)}
    task = progress.add_task("write", total=len(objects)) if progress is not None else None
    with ViewsWriter(out, collection.categories, source=SOURCE, layout=settings.layout,
                     attributes=attributes) as writer:
        for name in SPLITS:
            writer.create_split(name)
        batch: list[tuple[MeshSource, Shard]] = []
        for index, item in enumerate(objects):
            try:
                shard = store.read(index)
            except DamagedShard as error:  # a flipped bit inside its arrays shows only now
                raise _discarded(store, index, item, error) from error
            if not shard.reason:
                batch.append((item, shard))
            if batch and (len(batch) == APPEND_BATCH or index + 1 == len(objects)
                          or objects[index + 1].split != item.split):
                writer.append(batch[0][0].split or "", np.stack([s.images for _, s in batch]),
                              np.stack([s.voxels for _, s in batch]), [category_index[o.category] for o, _ in batch],
                              [o.object_id for o, _ in batch])
                batch = []
            if progress is not None and task is not None:
                progress.advance(task)
    store.remove()
    return RenderSummary(read_info(out), len(objects) - len(skipped), skipped, dict(colors), clipped)


def _discarded(store: ShardStore, index: int, item: MeshSource, error: DamagedShard) -> ValueError:
    """Remove a damaged shard; the error says that ``--resume`` renders its object again (the others are kept)."""
    store.discard(index)
    return ValueError(f"{error}; removed it: rerun with --resume to render {item.object_id} again (the other "
                      f"finished objects are kept in {store.folder})")


def _listing(entries: list) -> str:
    """A JSON list cut to fit an HDF5 attribute, ending with "... N more" when cut (the counts have totals)."""
    text, kept = json.dumps(entries), list(entries)
    while len(text) > MAX_ATTRIBUTE and kept:
        kept = kept[: len(kept) * 3 // 4]
        text = json.dumps([*kept, f"... {len(entries) - len(kept)} more"])
    return text
