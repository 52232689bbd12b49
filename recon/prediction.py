"""Writing predicted meshes: OBJ + GLB (+ PLY when coloured) per input image and a PNG preview beside the input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from recon.atomic import atomic_write, temporary_path
from recon.mesh import save_mesh
from recon.render import SoftRenderer, eye_from_angles

# the dataset's camera (docs/conventions.md#camera): the preview shows the mesh as the model was trained to see it
PREVIEW_DISTANCE = 2.732
PREVIEW_ELEVATION = 30.0
PREVIEW_AZIMUTHS = (0.0, -90.0, -180.0, -270.0)  # views 0, 6, 12, 18: front, side, back, other side
OUTPUT_SUFFIXES = (".obj", ".glb", ".ply", ".png")  # the files of one input (.ply with colours, .png a preview)
PREVIEW_COLOR = (0.62, 0.72, 0.90)  # a light blue: white on the white background would hide the lit top faces


def preview_renderer(image_size: int = 128) -> SoftRenderer:
    """A renderer for previews: white background, depth-softmax colour, σ sharp enough for crisp edges at
    ``image_size`` (σ scales with the squared pixel size: 1e-4 at 64² → 2.5e-5 at 128²)."""
    sigma = 1e-4 * (64 / image_size) ** 2
    return SoftRenderer(image_size=image_size, sigma=sigma, background=(1.0, 1.0, 1.0), aggr_rgb="softmax")


def render_preview(
    vertices: Tensor, faces: Tensor, image: Tensor | None, renderer: SoftRenderer, colors: Tensor | None = None
) -> Image.Image:
    """One row of panels: the input view (if given) then the mesh lit from ``PREVIEW_AZIMUTHS``.

    ``vertices (V, 3)``, ``faces (F, 3)``, ``image (4, S, S)`` in the dataset's convention (inverted RGB,
    alpha mask), shown composited over a light grey checkerboard, so that the panel shows what the model took for
    the object and what for background; ``colors`` ``(V, 3)`` or ``(F, 3)`` albedo in [0, 1] (a colour
    model's prediction), else ``PREVIEW_COLOR``. Returns an RGB PIL image of height ``renderer.image_size``.
    """
    size = renderer.image_size
    views = len(PREVIEW_AZIMUTHS)
    eyes = eye_from_angles(PREVIEW_DISTANCE, PREVIEW_ELEVATION, torch.tensor(PREVIEW_AZIMUTHS))
    batch = vertices.detach().float()[None].expand(views, -1, -1)
    if colors is None:
        colors, mode = batch.new_tensor(PREVIEW_COLOR).expand(views, faces.shape[0], 3), "face"
    else:
        mode = color_mode(vertices, faces, colors)
        colors = colors.detach().float()[None].expand(views, -1, -1)
    with torch.no_grad():
        rgba = renderer(batch, faces, eyes.to(batch), colors=colors, color_mode=mode)  # (views, 4, size, size)
    panels = list(rgba[:, :3].clamp(0, 1).cpu())
    if image is not None:
        image = F.interpolate(image.detach().float().cpu()[None], size=(size, size), mode="nearest")[0]
        mask = image[3:]
        # undo NMR's inversion: the object's colour premultiplied by its mask is mask − (1 − rgb)·mask
        panels.insert(0, (mask - image[:3]) + checkerboard(size) * (1.0 - mask))
    row = torch.cat(panels, dim=2)  # (3, size, panels·size)
    pixels = (row.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def checkerboard(size: int, square: int = 8) -> Tensor:
    """``(1, size, size)``: light grey squares of ``square`` pixels, two shades (a background no object takes)."""
    cells = (torch.arange(size) // square) % 2
    return torch.where((cells[:, None] + cells[None, :]) % 2 == 0, 0.93, 0.8)[None]


def save_image(path: str | os.PathLike[str], image: Image.Image) -> None:
    """Save a PIL image (format from the suffix) atomically (:mod:`recon.atomic`)."""
    path = Path(path)
    with atomic_write(path, "wb") as file:
        image.save(file, format=Image.registered_extensions()[path.suffix.lower()])


def write_prediction(
    directory: str | os.PathLike[str],
    name: str,
    vertices: Tensor,
    faces: Tensor,
    image: Tensor | None = None,
    renderer: SoftRenderer | None = None,
    colors: Tensor | None = None,
) -> list[Path]:
    """Write ``<name>.obj``, ``<name>.glb``, with ``colors`` ``<name>.ply``, and with a ``renderer`` ``<name>.png``.

    ``vertices (V, 3)``, ``faces (F, 3)``; ``image (4, S, S)`` is the input shown first in the preview;
    ``colors``: the mesh's albedo in [0, 1], per vertex ``(V, 3)`` or per face ``(F, 3)`` (told apart by
    their count; the template has V ≠ F), stored as 8-bit vertex colours in the GLB and PLY (per-face colours
    as per-face PLY colours, and as split flat-shaded vertices in the GLB) and as OBJ's "v x y z r g b".
    Returns the paths written. The files are written together: into a hidden folder beside them
    (``.<name>.tmp-<pid>``, which :func:`recon.atomic.remove_stale_temporaries` removes after a kill), then moved
    into place one after the other, and then this name's files of an earlier run into ``directory`` that this one
    did not write (a ``.ply`` without colours, a ``.png`` without a renderer) are removed: a kill while they are
    written leaves the earlier run's files of this name as they were, never some of each. The preview is rendered
    on the CPU.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vertices, faces = vertices.detach().float().cpu(), faces.detach().long().cpu()
    suffixes = [".obj", ".glb"]
    kwargs = {}
    if colors is not None:
        colors = colors.detach().float().cpu()
        kwargs = {f"{color_mode(vertices, faces, colors)}_colors": colors}
        suffixes.append(".ply")
    staging = temporary_path(directory / name)
    staging.mkdir()
    try:
        for suffix in suffixes:
            save_mesh(staging / f"{name}{suffix}", vertices, faces, **kwargs)
        if renderer is not None:
            save_image(staging / f"{name}.png", render_preview(vertices, faces, image, renderer, colors))
            suffixes.append(".png")
        for suffix in suffixes:
            os.replace(staging / f"{name}{suffix}", directory / f"{name}{suffix}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for suffix in set(OUTPUT_SUFFIXES) - set(suffixes):
        (directory / f"{name}{suffix}").unlink(missing_ok=True)
    return [directory / f"{name}{suffix}" for suffix in suffixes]


def color_mode(vertices: Tensor, faces: Tensor, colors: Tensor) -> str:
    """``"vertex"`` or ``"face"``: what ``colors (N, 3)`` (or ``(B, N, 3)``) are per, from N; else ValueError."""
    count = colors.shape[-2]
    if count == vertices.shape[-2] and count != faces.shape[-2]:
        return "vertex"
    if count == faces.shape[-2] and count != vertices.shape[-2]:
        return "face"
    raise ValueError(
        f"colors {tuple(colors.shape)} are neither per vertex ({vertices.shape[-2]}) nor per face ({faces.shape[-2]})"
    )
