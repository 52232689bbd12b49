"""``SoftRenderer``: SoftRas's look-at camera, lighting and soft rasterizer as one module."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from recon.render.camera import project
from recon.render.lighting import directional_light, face_normals, gather_face_vertices, vertex_normals
from recon.render.rasterize import AlphaAggregation, RGBAggregation, soft_rasterize

_RGB_MODES = ("softmax", "hard")
_ALPHA_MODES = ("prod", "sum", "hard")


class SoftRenderer(nn.Module):
    """Render meshes seen from eye positions into soft RGBA images, differentiably, on the inputs' device.

    Defaults are those of SoftRas's reconstruction example (softras.md §1.5): 64² images, σ = 1e-4 (squared NDC
    units; ×0.3 late in training), dist_eps = 1e-10 (culling at ``T = σ·ln(1/dist_eps − 1)``, ≈ 1.5 px at 64²),
    a 15° half field of view, near/far 1/100, 'prod' alpha, and lighting 0.5 ambient + 0.5 directional from +y.
    ``sigma`` and ``gamma`` are plain attributes and may be changed between calls.
    """

    def __init__(
        self,
        image_size: int = 64,
        sigma: float = 1e-4,
        gamma: float = 1e-4,
        dist_eps: float = 1e-10,
        viewing_angle: float = 15.0,
        near: float = 1.0,
        far: float = 100.0,
        eps: float = 1e-3,
        aggr_rgb: RGBAggregation = "softmax",
        aggr_alpha: AlphaAggregation = "prod",
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        double_sided: bool = True,
        lighting: bool = True,
        light_ambient: float = 0.5,
        light_directional: float = 0.5,
        light_direction: tuple[float, float, float] = (0.0, 1.0, 0.0),
    ) -> None:
        super().__init__()
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        if not sigma > 0 or not gamma > 0:
            raise ValueError(f"sigma and gamma must be > 0, got sigma={sigma}, gamma={gamma}")
        if not 0 < dist_eps < 0.5:
            raise ValueError(f"dist_eps must be in (0, 0.5), got {dist_eps}")
        if aggr_rgb not in _RGB_MODES:
            raise ValueError(f"aggr_rgb must be one of {_RGB_MODES}, got {aggr_rgb!r}")
        if aggr_alpha not in _ALPHA_MODES:
            raise ValueError(f"aggr_alpha must be one of {_ALPHA_MODES}, got {aggr_alpha!r}")
        if not 0 < near < far:
            raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
        self.image_size = image_size
        self.sigma = sigma
        self.gamma = gamma
        self.dist_eps = dist_eps
        self.viewing_angle = viewing_angle
        self.near = near
        self.far = far
        self.eps = eps
        self.aggr_rgb = aggr_rgb
        self.aggr_alpha = aggr_alpha
        self.background = tuple(float(c) for c in background)
        self.double_sided = double_sided
        self.lighting = lighting
        self.light_ambient = light_ambient
        self.light_directional = light_directional
        self.light_direction = tuple(float(c) for c in light_direction)

    def forward(
        self,
        vertices: Tensor,
        faces: Tensor,
        eyes: Tensor,
        colors: Tensor | None = None,
        color_mode: Literal["auto", "face", "vertex"] = "auto",
    ) -> Tensor:
        """Render RGBA.

        Args:
            vertices: (B, V, 3) world coordinates (the dataset's objects lie in (−0.5, 0.5)³).
            faces: (F, 3) shared by the batch or (B, F, 3); integer vertex indices, CCW seen from outside.
            eyes: (B, 3) camera positions (see :func:`recon.render.eye_from_angles`), looking at the origin.
            colors: None (white), per face (B, F, 3) or per vertex (B, V, 3), RGB in [0, 1]; ``color_mode``
                says which when F == V.

        Returns:
            (B, 4, S, S): RGB (lit colours over ``background``) and alpha, the soft silhouette, last.
        """
        vertices, faces, eyes = self._check(vertices, faces, eyes)
        corner_colors = self._corner_colors(vertices, faces, colors, color_mode)
        return soft_rasterize(self._face_vertices(vertices, faces, eyes), corner_colors, **self._settings())

    def silhouette(self, vertices: Tensor, faces: Tensor, eyes: Tensor) -> Tensor:
        """Alpha only, (B, S, S): the soft silhouette, without the cost of colour aggregation."""
        vertices, faces, eyes = self._check(vertices, faces, eyes)
        return soft_rasterize(self._face_vertices(vertices, faces, eyes), None, **self._settings())[:, 0]

    def _settings(self) -> dict:
        return {
            "image_size": self.image_size,
            "sigma": self.sigma,
            "gamma": self.gamma,
            "dist_eps": self.dist_eps,
            "near": self.near,
            "far": self.far,
            "eps": self.eps,
            "aggr_rgb": self.aggr_rgb,
            "aggr_alpha": self.aggr_alpha,
            "background": self.background,
            "double_sided": self.double_sided,
        }

    def _face_vertices(self, vertices: Tensor, faces: Tensor, eyes: Tensor) -> Tensor:
        return gather_face_vertices(project(vertices, eyes, self.viewing_angle), faces)

    def _corner_colors(
        self, vertices: Tensor, faces: Tensor, colors: Tensor | None, color_mode: str
    ) -> Tensor:
        """(B, F, 3, 3) lit RGB per face corner."""
        b, v = vertices.shape[:2]
        f = faces.shape[1]
        if colors is None:
            colors, color_mode = vertices.new_ones(b, f, 3), "face"
        elif colors.dim() != 3 or colors.shape[0] != b or colors.shape[2] != 3:
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
        light = (self.light_ambient, self.light_directional, self.light_direction)
        if color_mode == "face":
            if self.lighting:
                colors = colors * directional_light(face_normals(vertices, faces), *light)
            return colors[:, :, None, :].expand(b, f, 3, 3)
        if self.lighting:
            colors = colors * directional_light(vertex_normals(vertices, faces), *light)
        return gather_face_vertices(colors, faces)

    @staticmethod
    def _check(vertices: Tensor, faces: Tensor, eyes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[-1] != 3:
            raise ValueError(f"vertices must be a (B, V, 3) tensor, got {_shape(vertices)}")
        if not vertices.is_floating_point():
            raise ValueError(f"vertices must be floating point, got {vertices.dtype}")
        b, v = vertices.shape[:2]
        if not isinstance(faces, Tensor) or faces.dim() not in (2, 3) or faces.shape[-1] != 3:
            raise ValueError(f"faces must be a (F, 3) or (B, F, 3) tensor, got {_shape(faces)}")
        if faces.is_floating_point() or faces.dtype == torch.bool:
            raise ValueError(f"faces must hold integer vertex indices, got {faces.dtype}")
        if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= v):
            raise ValueError(f"faces index vertices 0..{v - 1}, got indices {int(faces.min())}..{int(faces.max())}")
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
