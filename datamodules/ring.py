"""Batches from DataLoader workers through a ring of reused shared-memory slots.

A worker normally hands each batch to the main process in a fresh shared-memory segment, and on these VMs
a new segment costs ~3 ms/MB in page faults (measured on 2 cores) — more than reading the batch. Here the
main process allocates ``slots`` batch buffers in shared memory once; a worker writes batch number i into
slot ``i % slots`` and returns only ``(slot, n)``; the loader's iterator copies the slot into private
memory (pinned when asked) before yielding it. While the main process receives batch i, the DataLoader
has dispatched at most ``workers × prefetch_factor`` later batches, so ``slots = workers × prefetch + 2``
never lets a worker overwrite a slot not yet copied. A new epoch of persistent workers starts only after
every dispatched batch came back (``_reset`` drains them), which is why the ring needs persistent workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

ItemSpec = dict[str, tuple[tuple[int, ...], torch.dtype]]  # name -> (shape of one item, dtype)


def _row_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def carve(buffer: Tensor, spec: ItemSpec, capacity: int, n: int) -> dict[str, Tensor]:
    """Tensors of n items each, cut from a byte ``buffer`` laid out for ``capacity`` items per name."""
    out, offset = {}, 0
    for name, (shape, dtype) in spec.items():
        row = _row_bytes(shape, dtype)
        out[name] = buffer[offset : offset + n * row].view(dtype).view(n, *shape)
        offset += -(-capacity * row // 64) * 64  # 64-byte aligned regions
    return out


def batch_bytes(spec: ItemSpec, capacity: int) -> int:
    return sum(-(-capacity * _row_bytes(shape, dtype) // 64) * 64 for shape, dtype in spec.values())


class BatchRing:
    """``slots`` shared-memory buffers, each laid out for one batch of up to ``capacity`` items."""

    def __init__(self, spec: ItemSpec, capacity: int, slots: int) -> None:
        self.spec, self.capacity, self.slots = spec, capacity, slots
        self.buffer = torch.empty((slots, batch_bytes(spec, capacity)), dtype=torch.uint8).share_memory_()

    def views(self, slot: int, n: int) -> dict[str, Tensor]:
        return carve(self.buffer[slot], self.spec, self.capacity, n)

    def take(self, slot: int, n: int, pin_memory: bool = False) -> dict[str, Tensor]:
        """A private copy of the batch in ``slot`` (the slot may be rewritten as soon as this returns)."""
        out = carve(torch.empty(batch_bytes(self.spec, n), dtype=torch.uint8, pin_memory=pin_memory),
                    self.spec, n, n)
        for name, view in self.views(slot, n).items():
            out[name].copy_(view)
        return out


class RingSlot(NamedTuple):
    slot: int
    size: int


class NumberedBatches(Sampler[tuple[int, Any]]):
    """``(i, batch)`` for the i-th batch of ``batches`` in an epoch; forwards ``set_epoch``."""

    def __init__(self, batches: Sampler) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return enumerate(self.batches)


class RingBatches(Dataset):
    """What the workers index: ``(i, keys)`` → the batch written into the ring, returned as its ``RingSlot``
    (in the main process, where there is no copy to save, the batch itself)."""

    def __init__(self, dataset: Any, ring: BatchRing) -> None:
        self.dataset, self.ring = dataset, ring

    def __getitem__(self, numbered: tuple[int, list]) -> RingSlot | dict[str, Tensor]:
        number, keys = numbered
        if get_worker_info() is None:
            return self.dataset[keys]
        slot = number % self.ring.slots
        self.dataset.read_batch(keys, self.ring.views(slot, len(keys)))
        return RingSlot(slot, len(keys))


class RingLoader(DataLoader):
    """A DataLoader over ``RingBatches`` that turns each ``RingSlot`` into a private batch as it arrives.

    Build it with ``batch_size=None``, ``sampler=NumberedBatches(...)`` and ``persistent_workers=True``;
    ``pin_memory`` is applied while copying out of the ring, so pass ``pin_memory=False`` to the DataLoader
    and set ``ring_pin_memory``.
    """

    ring_pin_memory: bool = False

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ring = self.dataset.ring
        for item in super().__iter__():
            yield ring.take(item.slot, item.size, self.ring_pin_memory) if isinstance(item, RingSlot) else item
