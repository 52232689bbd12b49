"""Rank-aware samplers of (object, view_a, view_b) keys for ``ViewPairDataset``.

The DataModule shards by itself (the recon Trainer runs with ``use_distributed_sampler=False``):
Lightning's DistributedSampler pads by repeating items, which would bias a DDP evaluation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

PairKey = tuple[int, int, int]


def distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def other_view(object_index: int, view: int, num_views: int) -> int:
    """The deterministic reference view of an evaluation item: pseudo-random in (object, view), never ``view``.

    A Knuth multiplicative hash picks an offset in 1..V−1, so every rank, worker and run agrees on it.
    """
    offset = 1 + ((object_index * 2_654_435_761 + view * 40_503) % 2**32) % (num_views - 1)
    return (view + offset) % num_views


class TrainPairSampler(Sampler[PairKey]):
    """Training keys: per item one object and two views drawn independently and uniformly (SoftRas).

    ``class_balanced`` draws the category uniformly, then the object uniformly within it (SoftRas's loader);
    otherwise the object uniformly. An epoch is ``ceil(num_objects / world_size)`` items per rank, drawn from
    a generator seeded by (seed, epoch, rank): different, reproducible pairs per epoch and per rank.

    objects: (N,) int indices into the split; categories: (N,) their category indices.
    """

    def __init__(self, objects: np.ndarray, categories: np.ndarray, num_views: int, class_balanced: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if len(objects) == 0:
            raise ValueError("no training objects: the split is empty for the selected categories")
        if len(objects) != len(categories):
            raise ValueError(f"{len(objects)} objects but {len(categories)} categories")
        order = np.argsort(categories, kind="stable")
        self.objects = np.asarray(objects, dtype=np.int64)[order]
        _, self._starts, self._counts = np.unique(np.asarray(categories)[order], return_index=True, return_counts=True)
        self.num_views = num_views
        self.class_balanced = class_balanced
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's draws (Lightning calls this at the start of every training epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.objects) / self.world_size)

    def __iter__(self) -> Iterator[PairKey]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        n = len(self)
        if self.class_balanced:
            category = rng.integers(len(self._counts), size=n)
            within = (rng.random(n) * self._counts[category]).astype(np.int64)
            picks = self.objects[self._starts[category] + within]
        else:
            picks = self.objects[rng.integers(len(self.objects), size=n)]
        views = rng.integers(self.num_views, size=(2, n))
        yield from zip(picks.tolist(), views[0].tolist(), views[1].tolist(), strict=True)


def evaluation_views(num_views: int, views_per_object: int | None) -> list[int]:
    """Evenly spaced view indices (all ``num_views`` when ``views_per_object`` is None or ≥ num_views)."""
    if views_per_object is None or views_per_object >= num_views:
        return list(range(num_views))
    if views_per_object < 1:
        raise ValueError(f"views_per_object={views_per_object}; expected ≥ 1 or None for all views")
    return [i * num_views // views_per_object for i in range(views_per_object)]


class EvalPairSampler(Sampler[PairKey]):
    """Evaluation keys: every (object, view) of ``objects`` × ``views`` (the NMR/SoftRas protocol), view b
    from ``other_view``; rank r of W takes items r, r+W, r+2W, … — no padding, no repeats, so the union
    over ranks is exactly the single-process set."""

    def __init__(self, objects: np.ndarray, num_views: int, views: list[int] | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        self.objects = np.asarray(objects, dtype=np.int64)
        self.num_views = num_views
        self.views = list(range(num_views)) if views is None else list(views)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, len(self.objects) * len(self.views), self.world_size))

    def __iter__(self) -> Iterator[PairKey]:
        per_object = len(self.views)
        for item in range(self.rank, len(self.objects) * per_object, self.world_size):
            o = int(self.objects[item // per_object])
            view = self.views[item % per_object]
            yield o, view, other_view(o, view, self.num_views)


class PairBatchSampler(Sampler[list[PairKey]]):
    """Groups a key sampler's keys into lists of ``batch_size`` (the last one may be shorter), so that a
    ``DataLoader(dataset, batch_size=None, sampler=PairBatchSampler(...))`` reads each batch in one
    ``dataset[keys]`` call. ``set_epoch`` is forwarded (Lightning calls it on ``dataloader.sampler``)."""

    def __init__(self, sampler: TrainPairSampler | EvalPairSampler, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected ≥ 1")
        self.sampler = sampler
        self.batch_size = batch_size
        self.skip = 0  # batches the next pass leaves out: those a fit resumed mid-epoch had already trained on

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, TrainPairSampler):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[list[PairKey]]:
        keys = iter(self.sampler)
        skip, self.skip = self.skip, 0
        for _ in range(skip):  # drawn and dropped: the pass goes on with the very keys it would have had
            list(itertools.islice(keys, self.batch_size))
        while batch := list(itertools.islice(keys, self.batch_size)):
            yield batch
