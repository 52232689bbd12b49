"""One mesh into one dataset object: its images in every view and its voxels, in the NMR dataset's conventions.

Both dataset renderers use this, ``recon-data synth`` for its procedural shapes and ``recon-data render``
for mesh files, so a shape gives the same object through either. The steps: drop degenerate and duplicate
faces, normalise into the voxel cube (bounding-box centre, longest side 1 by default), round colours to
8 bits per channel (as files store them), render the views, voxelize.

Images follow NMR's storage (docs/conventions.md): the colour lit by 0.5 ambient + 0.5 directional light
from +y over a white background, then ``1 − rgb`` (background 0), alpha = pixel coverage, uint8. Coverage
is anti-aliased like Blender's renders: a hard (binary) render at ``supersample`` × the resolution (2:
NMR's own anti-aliasing), averaged over supersample² blocks; with a white renderer background the averaged
RGB is exactly the colour composited over white with that coverage. Voxels come from
``recon.mesh.voxelize``, the voxelization that scores predictions, so they are in the dataset's voxel
orientation by construction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from recon.datamodules.h5 import ViewsLayout
from recon.datamodules.meshes import Normalization, clean_faces, normalize_mesh
from recon.datamodules.primitives import ColoredMesh

# 2x2 supersampling, as NMR's own renderer anti-aliases: 4x4 costs ~3x more for 16 instead of 4 alpha levels.
SUPERSAMPLE = 2
# The hard modes only test "inside or not"; a tiny σ shrinks the culling radius √(σ·ln(1/dist_eps − 1)) so
# that only covering (pixel, face) pairs are formed: same image, ~1.2-2x faster at 2x supersampling.
HARD_SIGMA = 1e-8
# Views rendered per renderer call are chosen so that views × faces stays under this: a 100k-face mesh's
# 24 views at once would hold ~90 MB of face corners alone; each view is independent, so the images are
# the same however they are grouped.
FACE_VIEWS_PER_CALL = 1 << 20


@dataclass(frozen=True)
class ViewSettings:
    """How a dataset's objects are made: camera and sizes, anti-aliasing, normalisation."""

    layout: ViewsLayout = field(default_factory=ViewsLayout)
    supersample: int = SUPERSAMPLE
    normalize: Normalization = "longest"
    clip: bool = False  # with normalize="none": clamp vertices outside the voxel cube instead of refusing

    def attributes(self) -> dict[str, str | int]:
        """What the file records beyond its layout."""
        return {"supersample": self.supersample, "normalize": self.normalize + (" (clipped)" if self.clip else "")}


class RenderedObject(NamedTuple):
    """images: uint8 (V, 4, S, S) in NMR's storage; voxels: bool (R, R, R) in the dataset orientation."""

    images: np.ndarray
    voxels: np.ndarray


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
        faces = torch.from_numpy(mesh.faces)
        vertices = torch.from_numpy(mesh.vertices).float()[None]
        colors = torch.from_numpy(mesh.face_colors).float()[None]
        step = max(1, FACE_VIEWS_PER_CALL // max(len(mesh.faces), 1))
        images = []
        for first in range(0, len(self.eyes), step):
            eyes = self.eyes[first:first + step]
            rgba = self.renderer(vertices.expand(len(eyes), -1, -1), faces, eyes,
                                 colors.expand(len(eyes), -1, -1), color_mode="face")
            rgba = F.avg_pool2d(rgba, self.supersample) if self.supersample > 1 else rgba
            stored = torch.cat([1.0 - rgba[:, :3], rgba[:, 3:]], dim=1)  # NMR: inverted RGB over white, alpha
            images.append((stored.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8))
        return torch.cat(images).numpy()


def voxelize_mesh(mesh: ColoredMesh, size: int = 32) -> np.ndarray:
    """bool (S, S, S) solid voxels of ``mesh`` in the dataset's (NMR) orientation, via ``recon.mesh.voxelize``."""
    from recon.mesh import voxelize

    return voxelize(torch.from_numpy(mesh.vertices)[None], torch.from_numpy(mesh.faces), size=size)[0].numpy()


def prepare_mesh(mesh: ColoredMesh, settings: ViewSettings) -> ColoredMesh:
    """The mesh as it is rendered: clean faces, in the voxel cube, 8-bit colours. Raises ``MeshError``."""
    mesh = normalize_mesh(clean_faces(mesh), settings.normalize, settings.clip)
    colors = np.round(np.clip(mesh.face_colors, 0.0, 1.0) * 255.0) / 255.0
    return mesh._replace(face_colors=colors.astype(np.float32))


class DatasetRenderer:
    """``renderer(mesh) -> RenderedObject``: one dataset object from a mesh in any coordinates."""

    def __init__(self, settings: ViewSettings = ViewSettings()) -> None:
        self.settings = settings
        self.views = ViewRenderer(settings.layout, settings.supersample)

    def __call__(self, mesh: ColoredMesh) -> RenderedObject:
        mesh = prepare_mesh(mesh, self.settings)
        return RenderedObject(self.views(mesh), voxelize_mesh(mesh, self.settings.layout.voxel_size))


@functools.cache
def dataset_renderer(settings: ViewSettings) -> DatasetRenderer:
    """This process's renderer for ``settings`` (made once: the camera and renderer are reused per object)."""
    return DatasetRenderer(settings)
