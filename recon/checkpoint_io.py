"""``AtomicCheckpointIO``: checkpoints that a kill can never truncate.

Lightning's default ``TorchCheckpointIO`` writes through an fsspec transaction, whose temporary file lies in
``$TMPDIR``; when that is another filesystem than the run folder (a tmpfs is common), the final move is a
copy over the old ``last.ckpt``, and a kill during the copy leaves a truncated checkpoint that no longer
resumes. Here a checkpoint is written with :func:`recon.atomic.atomic_write` (temporary file in the
checkpoint's own folder, fsync, rename), so the previous checkpoint stays intact until the new one is
complete. Before the first write to a folder, temporary files left there by killed processes are removed. A
Ctrl-C during the write takes effect once the file is complete
(:func:`recon.callbacks.interrupt.checkpoint_writes_finish_first`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from recon.atomic import atomic_write, remove_stale_temporaries
from recon.callbacks.interrupt import checkpoint_writes_finish_first

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic in the checkpoint's folder; remote URLs
    (``s3://…``) keep Lightning's own path."""

    def __init__(self) -> None:
        super().__init__()
        self._swept: set[Path] = set()

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sweep(path.parent)
        with checkpoint_writes_finish_first(), atomic_write(path, "wb") as file:
            torch.save(checkpoint, file)

    def sweep(self, folder: Path) -> list[Path]:
        """Remove what killed writers left in ``folder`` (once per folder and process); returns the files."""
        folder = folder.resolve()
        if folder in self._swept:
            return []
        self._swept.add(folder)
        removed = remove_stale_temporaries(folder)
        for stale in removed:
            log.warning("removed %s, an unfinished checkpoint left by a killed run", stale)
        return removed
