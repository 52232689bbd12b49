"""Small constant tensors of the renderer (the up vector, the light direction, the background colour, the window
sizes), made once per value, device and dtype.

Made at every call with ``torch.tensor(…, device=…)``, each would be a copy from pageable host memory, and on a
GPU PyTorch waits for all queued work before such a copy returns: one synchronisation of the device per constant
per render call. The cached tensors are made outside inference mode, so a constant first made during a validation
(under ``torch.inference_mode``) still serves a training step's autograd graph. Callers must not modify them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import Tensor


def constant(values: Iterable[float], device: torch.device, dtype: torch.dtype) -> Tensor:
    """The tensor of ``values`` (numbers) on ``device`` in ``dtype``, shared by every call with the same three."""
    return _constant(tuple(values), torch.device(device), dtype)


@functools.lru_cache(maxsize=256)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):
        return torch.tensor(values, device=device, dtype=dtype)
