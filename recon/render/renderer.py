"""``SoftRenderer``: SoftRas's look-at camera, lighting and soft rasterizer as one module."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from recon.render.camera import project
from recon.render.lighting import Lighting, check_face_indices, gather_face_vertices
from recon.render.precision import at_least_float32, full_precision
from recon.render.rasterize import soft_rasterize
from recon.render.settings import RasterSettings, resolve_settings


class SoftRenderer(nn.Module):
    """Render meshes seen from eye positions into soft images, differentiably, on the inputs' device.

    **For a silhouette call** :meth:`silhouette`: alpha only, 2–10× faster than ``renderer(vertices, faces,
    eyes)[:, 3]``, which also computes the lit RGB.

    It computes in float32 at least: autocast is off inside, and float16/bfloat16 vertices render as float32 into
    float32 images (see :mod:`recon.render.precision`).

    Args:
        settings: how faces become pixels (:class:`RasterSettings`; its defaults are SoftRas's reconstruction
            example: 64² images, σ = 1e-4, dist_eps = 1e-10, 'prod' alpha, 'softmax' RGB).
        viewing_angle: half field of view of the camera, degrees.
        lighting: applied to the colours in world space (default 0.5 ambient + 0.5 directional from +y), or
            None for unlit colours.
        **fields: fields of :class:`RasterSettings` to set, e.g. ``SoftRenderer(image_size=128, sigma=2.5e-5)``.

    ``settings`` is a frozen value: to change σ between calls, replace it whole,
    ``renderer.settings = dataclasses.replace(renderer.settings, sigma=3e-5)``.
    """

    def __init__(
        self,
        settings: RasterSettings | None = None,
        *,
        viewing_angle: float = 15.0,
        lighting: Lighting | None = Lighting(),  # noqa: B008 (frozen: one shared default is safe)
        **fields: Any,
    ) -> None:
        super().__init__()
        if lighting is not None and not isinstance(lighting, Lighting):
            raise TypeError(f"lighting must be a recon.render.Lighting or None (unlit), got {lighting!r}")
        self.settings = resolve_settings(settings, fields)
        self.viewing_angle = float(viewing_angle)
        self.lighting = lighting

    @property
    def image_size(self) -> int:
        """S, the side of the rendered images (``settings.image_size``)."""
        return self.settings.image_size

    @property
    def sigma(self) -> float:
        """The current σ (``settings.sigma``); read-only, replace ``settings`` to change it."""
        return self.settings.sigma

    @full_precision
    def forward(
        self,
        vertices: Tensor,
        faces: Tensor,
        eyes: Tensor,
        colors: Tensor | None = None,
        color_mode: Literal["auto", "face", "vertex"] = "auto",
    ) -> Tensor:
        """Render RGBA: lit colours, and the soft silhouette as alpha.

        Args:
            vertices: (B, V, 3) world coordinates (the dataset's objects lie in (−0.5, 0.5)³).
            faces: (F, 3) shared by the batch or (B, F, 3); integer vertex indices, CCW seen from outside.
            eyes: (B, 3) camera positions (see :func:`recon.render.eye_from_angles`), looking at the origin.
            colors: per face (B, F, 3) or per vertex (B, V, 3), RGB in [0, 1]; ``color_mode`` says which when
                F == V. None renders a white mesh, with a warning: for alpha alone :meth:`silhouette` is the
                fast call. The RGB of a white mesh is its lighting blended through the depth soft z-buffer, which
                the colour path computes; pass ``colors`` explicitly to render it without the warning.

        Returns:
            (B, 4, S, S): RGB (lit colours over the background) and alpha, the soft silhouette, last.
        """
        vertices, faces, eyes = self._check(vertices, faces, eyes)
        if colors is None:
            warnings.warn(
                "SoftRenderer(vertices, faces, eyes) without colors renders lit white RGBA, which costs 2-10x a "
                "silhouette; for the silhouette call renderer.silhouette(vertices, faces, eyes) (same alpha), or "
                "pass colors to render RGB",
                stacklevel=2,
            )
            colors, color_mode = vertices.new_ones(vertices.shape[0], faces.shape[1], 3), "face"
        corner_colors = self._corner_colors(vertices, faces, colors, color_mode)
        return soft_rasterize(self._project(vertices, faces, eyes), corner_colors, self.settings)

    @full_precision
    def silhouette(self, vertices: Tensor, faces: Tensor, eyes: Tensor) -> Tensor:
        """Alpha only, (B, S, S): the soft silhouette, without the cost of colour aggregation.

        The same values and gradients as the alpha channel of :meth:`forward`; arguments as there.
        """
        vertices, faces, eyes = self._check(vertices, faces, eyes)
        return soft_rasterize(self._project(vertices, faces, eyes), None, self.settings)[:, 0]

    @full_precision
    def face_vertices(self, vertices: Tensor, faces: Tensor, eyes: Tensor) -> Tensor:
        """(B, F, 3, 3) face corners as (x_ndc, y_ndc, z_view) seen from ``eyes``: the rasterizer's input.

        Arguments as in :meth:`forward`.
        """
        return self._project(*self._check(vertices, faces, eyes))

    def _project(self, vertices: Tensor, faces: Tensor, eyes: Tensor) -> Tensor:
        """:meth:`face_vertices` of already checked inputs, faces (B, F, 3)."""
        return gather_face_vertices(project(vertices, eyes, self.viewing_angle), faces)

    def _corner_colors(self, vertices: Tensor, faces: Tensor, colors: Tensor, color_mode: str) -> Tensor:
        """Lit RGB per face corner (B, F, 3, 3), or per face (B, F, 1, 3)."""
        b, v = vertices.shape[:2]
        f = faces.shape[1]
        if colors.dim() != 3 or colors.shape[0] != b or colors.shape[2] != 3:
            raise ValueError(f"colors must be (B, F, 3) or (B, V, 3) with B={b}, got {tuple(colors.shape)}")
        if color_mode == "auto":
            if f == v:
                raise ValueError("colors are ambiguous when F == V: pass color_mode='face' or 'vertex'")
            color_mode = "face" if colors.shape[1] == f else "vertex" if colors.shape[1] == v else "?"
        expected = {"face": f, "vertex": v}.get(color_mode)
        if expected is None or colors.shape[1] != expected:
            raise ValueError(
                f"colors must be per face (B, {f}, 3) or per vertex (B, {v}, 3), got {tuple(colors.shape)}"
            )
        colors = colors.to(vertices.dtype)
        if color_mode == "face":
            if self.lighting is not None:
                colors = colors * self.lighting.face_intensity(vertices, faces)
            return colors[:, :, None, :]
        if self.lighting is not None:
            colors = colors * self.lighting.vertex_intensity(vertices, faces)
        return gather_face_vertices(colors, faces)

    @staticmethod
    def _check(vertices: Tensor, faces: Tensor, eyes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[-1] != 3:
            raise ValueError(f"vertices must be a (B, V, 3) tensor, got {_shape(vertices)}")
        if not vertices.is_floating_point():
            raise ValueError(f"vertices must be floating point, got {vertices.dtype}")
        vertices = at_least_float32(vertices)  # float16/bfloat16 render in float32 (recon.render.precision)
        b, v = vertices.shape[:2]
        if not isinstance(faces, Tensor) or faces.dim() not in (2, 3) or faces.shape[-1] != 3:
            raise ValueError(f"faces must be a (F, 3) or (B, F, 3) tensor, got {_shape(faces)}")
        if faces.is_floating_point() or faces.dtype == torch.bool:
            raise ValueError(f"faces must hold integer vertex indices, got {faces.dtype}")
        check_face_indices(faces, v)
        faces = faces.to(device=vertices.device, dtype=torch.long)
        if faces.dim() == 2:
            faces = faces.expand(b, -1, -1)
        elif faces.shape[0] != b:
            raise ValueError(f"faces (B, F, 3) must have B={b}, got {tuple(faces.shape)}")
        if not isinstance(eyes, Tensor) or eyes.shape[-1] != 3 or eyes.dim() > 2:
            raise ValueError(f"eyes must be a (B, 3) tensor, got {_shape(eyes)}")
        eyes = eyes.to(vertices).reshape(-1, 3)
        if eyes.shape[0] == 1 and b != 1:
            eyes = eyes.expand(b, 3)
        if eyes.shape[0] != b:
            raise ValueError(f"eyes must be (B, 3) with B={b}, got {tuple(eyes.shape)}")
        return vertices, faces, eyes


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__
