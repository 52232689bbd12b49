"""One ReconModule training step (forward, backward, Adam) per encoder: steps/s and objects/s.

A step at batch B encodes 2B images, renders 4B soft silhouettes at 64² and back-propagates through all of
it (docs/conventions.md#regularizers); SoftRas's recipe uses B = 64. ``baseline+color`` adds the colour head
(per-vertex colours, configs/experiment/color.yaml): its 4B renders are lit RGBA. Inputs are random images with
the masks of a rendered sphere (the untrained decoder's output is a sphere too, so culling sees realistic
silhouette sizes); no data file is needed. Runs on CUDA when available, else CPU with torch's default threads.
The eager rasterizer kernels (``RECON_FUSED=0``) and the default ones run alternately, step by step, on the same
module.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from recon.mesh import template_sphere
from recon.models import AttentionEncoder, BaselineEncoder, ColorDecoder, ResNetEncoder
from recon.module import ReconModule
from recon.render import eye_from_angles

ENCODERS: dict[str, Callable[[], ReconModule]] = {
    "baseline": lambda: ReconModule(encoder=BaselineEncoder()),
    "resnet": lambda: ReconModule(encoder=ResNetEncoder()),
    "attention": lambda: ReconModule(encoder=AttentionEncoder()),
    "baseline+color": lambda: ReconModule(encoder=BaselineEncoder(), colors=ColorDecoder(mode="vertex")),
}


def _batch(module: ReconModule, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    views = torch.randint(0, 24, (2, size), generator=generator)
    eyes = eye_from_angles(2.732, 30.0, -15.0 * views.float().flatten()).float().view(2, size, 3)
    vertices = 0.3 * template_sphere()[0][None]  # a sphere of radius 0.3 as every object's mask
    with torch.no_grad():
        masks = module.renderer.silhouette(vertices.expand(2 * size, -1, -1), module.faces, eyes.view(-1, 3))
    images = torch.rand(2, size, 4, 64, 64, generator=generator)
    images[:, :, 3] = masks.view(2, size, 64, 64)
    batch = {"images_a": images[0], "images_b": images[1], "eyes_a": eyes[0], "eyes_b": eyes[1]}
    return {key: value.to(device) for key, value in batch.items()}


def _time_steps(encoder: str, batch_size: int, repeats: int, device: torch.device,
                kernels: tuple[str, ...]) -> dict[str, list[float]]:
    """Seconds per step for each ``RECON_FUSED`` value in ``kernels``, alternating step by step."""
    torch.manual_seed(0)
    module = ENCODERS[encoder]().to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    batch = _batch(module, batch_size, device)
    times: dict[str, list[float]] = {k: [] for k in kernels}
    before = os.environ.get("RECON_FUSED")
    try:
        for i in range(repeats + 1):  # the first round warms up the allocator, Adam's state and the kernels
            for k in kernels:
                os.environ["RECON_FUSED"] = k
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                loss = module.model_step(batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times[k].append(time.perf_counter() - start)
    finally:
        if before is None:
            os.environ.pop("RECON_FUSED", None)
        else:
            os.environ["RECON_FUSED"] = before
    return times


def run(quick: bool = False) -> list[dict]:
    """Rows per encoder and rasterizer kernels (the eager ones and the default, measured alternately): batch
    size, median seconds per step, steps/s, objects/s, renders/s."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size, repeats = (8, 2) if quick else (64, 4)
    rows = []
    for encoder in ENCODERS:
        times = _time_steps(encoder, batch_size, repeats, device, ("0", "auto"))
        for kernels, measured in times.items():
            seconds = statistics.median(measured)
            rows.append(
                {
                    "bench": "train_step",
                    "encoder": encoder,
                    "kernels": "eager" if kernels == "0" else "default",
                    "device": device.type,
                    "threads": torch.get_num_threads(),
                    "batch": batch_size,
                    "repeats": repeats,
                    "seconds_per_step": round(seconds, 4),
                    "steps_per_s": round(1.0 / seconds, 4),
                    "objects_per_s": round(batch_size / seconds, 2),
                    "renders_per_s": round(4 * batch_size / seconds, 1),
                }
            )
    return rows
