"""``ChunkReader``: whole one-item chunks of an HDF5 dataset, read without h5py's per-call machinery.

A recon-views file stores one view (or one voxel grid) per gzip chunk, so a random read is exactly one
chunk. h5py's slicing costs ~3x the inflate itself per view, and even ``read_direct_chunk`` looks the chunk
up in the B-tree on every call (~50 µs here). When the filters are deflate alone (what ``ViewsWriter``
writes), the reader maps every chunk to its (file offset, size) once, with ``chunk_iter``, and then reads
with one ``os.pread`` and one ``zlib.decompress`` per chunk. Anything else falls back to h5py.
"""

from __future__ import annotations

import os
import zlib

import h5py
import numpy as np


def is_plain_gzip(dataset: h5py.Dataset, item_shape: tuple[int, ...]) -> bool:
    """True when every chunk is one item (``item_shape``) compressed by deflate and nothing else."""
    one_item = (1,) * (dataset.ndim - len(item_shape)) + tuple(item_shape)
    return (dataset.chunks == one_item and dataset.compression == "gzip" and not dataset.shuffle
            and not dataset.fletcher32 and dataset.scaleoffset is None)


class ChunkReader:
    """Reads items of ``dataset`` (N, ..., *item_shape) by their leading index into ``out`` arrays.

    Open it in the process that reads (it holds a file descriptor); ``close()`` releases it.
    """

    def __init__(self, dataset: h5py.Dataset, item_shape: tuple[int, ...]) -> None:
        self.dataset = dataset
        self.item_shape = tuple(item_shape)
        self.grid = dataset.shape[: dataset.ndim - len(item_shape)]
        self.direct = is_plain_gzip(dataset, self.item_shape)
        self._fd: int | None = None
        self._offsets: np.ndarray | None = None
        if self.direct and hasattr(dataset.id, "chunk_iter"):
            self._index_chunks()

    def _index_chunks(self) -> None:
        offsets = np.full(self.grid, -1, dtype=np.int64)
        sizes = np.zeros(self.grid, dtype=np.int64)
        raw = np.zeros(self.grid, dtype=bool)
        leading = len(self.grid)

        def record(info: h5py.h5d.StoreInfo) -> None:
            index = info.chunk_offset[:leading]
            offsets[index], sizes[index], raw[index] = info.byte_offset, info.size, info.filter_mask & 1

        try:
            self.dataset.id.chunk_iter(record)
        except (NotImplementedError, RuntimeError, ValueError):  # an HDF5 build without H5Dchunk_iter
            return
        self._offsets, self._sizes, self._raw = offsets, sizes, raw
        self._fd = os.open(self.dataset.file.filename, os.O_RDONLY)

    def read(self, indices: list[tuple[int, ...]], out: np.ndarray) -> None:
        """Fill ``out[i]`` (shape ``item_shape``) with the item at grid index ``indices[i]``."""
        tail = (0,) * len(self.item_shape)
        for i, index in enumerate(indices):
            if self._offsets is not None and self._offsets[index] >= 0:
                data = os.pread(self._fd, int(self._sizes[index]), int(self._offsets[index]))
                if not self._raw[index]:  # filter-mask bit 0 set: deflate was skipped, the chunk is raw
                    data = zlib.decompress(data, bufsize=out[i].nbytes)
            elif self.direct:  # not indexed (or never written): ask HDF5
                mask, data = self.dataset.id.read_direct_chunk(tuple(index) + tail)
                data = data if mask & 1 else zlib.decompress(data, bufsize=out[i].nbytes)
            else:  # other filters: let h5py decode
                out[i] = self.dataset[tuple(index)]
                continue
            out[i] = np.frombuffer(data, out.dtype).reshape(self.item_shape)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._offsets = None
