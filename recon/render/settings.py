"""The soft rasterizer's settings: one frozen value, validated once, passed whole to every rasterization path.

``RasterSettings`` plays the role of pytorch3d's ``RasterizationSettings`` and ``BlendParams`` together. To
change one value (σ during training, for instance) make a new one with :func:`dataclasses.replace`, which
validates it again: ``renderer.settings = replace(renderer.settings, sigma=3e-5)``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from recon.render.culling import culling_threshold

AlphaAggregation = Literal["prod", "sum", "hard"]
RGBAggregation = Literal["softmax", "hard"]


@dataclass(frozen=True)
class RasterSettings:
    """How faces become soft pixels. Defaults are SoftRas's reconstruction example (see ``docs/conventions.md``).

    Attributes:
        image_size: S, the side of the square image in pixels.
        sigma: sharpness of the soft silhouette, in squared NDC units (one pixel at 64² is 2/64 NDC wide):
            a pair contributes ``D = sigmoid(sign·d²/σ)``.
        gamma: temperature of the soft z-buffer ('softmax' RGB).
        dist_eps: culling tolerance: a pair is dropped when ``D ≤ dist_eps`` outside the face, i.e. when
            ``d² ≥ T = σ·ln(1/dist_eps − 1)`` (≈ 1.5 px at 64² with the defaults).
        near, far: depth range of faces that add colour (alpha ignores it, as SoftRas).
        eps: background logit of the soft z-buffer.
        aggr_rgb: 'softmax' (the D·softmax(z/γ) soft z-buffer) or 'hard' (the nearest covering face).
        aggr_alpha: 'prod' (``1 − Π(1 − D)``), 'sum' (``ΣD / F``) or 'hard' (any face covers the pixel).
        background: RGB where no face adds colour.
        double_sided: when False, faces whose screen winding is counter-clockwise (back faces) add no colour.
    """

    image_size: int = 64
    sigma: float = 1e-4
    gamma: float = 1e-4
    dist_eps: float = 1e-10
    near: float = 1.0
    far: float = 100.0
    eps: float = 1e-3
    aggr_rgb: RGBAggregation = "softmax"
    aggr_alpha: AlphaAggregation = "prod"
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    double_sided: bool = True

    def __post_init__(self) -> None:
        size = self.image_size
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {self.image_size!r}")
        if not self.sigma > 0 or not self.gamma > 0:
            raise ValueError(f"sigma and gamma must be > 0, got sigma={self.sigma}, gamma={self.gamma}")
        if not 0 < self.dist_eps < 0.5:
            raise ValueError(f"dist_eps must be in (0, 0.5), got {self.dist_eps}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if self.aggr_rgb not in get_args(RGBAggregation):
            raise ValueError(f"aggr_rgb must be one of {get_args(RGBAggregation)}, got {self.aggr_rgb!r}")
        if self.aggr_alpha not in get_args(AlphaAggregation):
            raise ValueError(f"aggr_alpha must be one of {get_args(AlphaAggregation)}, got {self.aggr_alpha!r}")
        background = tuple(float(c) for c in self.background)
        if len(background) != 3:
            raise ValueError(f"background must be 3 RGB values, got {self.background!r}")
        # Frozen: normalise once, here (lists and ints from a config; numpy integers for the size).
        object.__setattr__(self, "background", background)
        object.__setattr__(self, "image_size", int(self.image_size))

    @property
    def culling_threshold(self) -> float:
        """``T = σ·ln(1/dist_eps − 1)``: the squared NDC distance at which ``D = sigmoid(−T/σ) = dist_eps``."""
        return culling_threshold(self.sigma, self.dist_eps)


def resolve_settings(settings: RasterSettings | None, overrides: dict[str, Any]) -> RasterSettings:
    """``settings`` (default :class:`RasterSettings`) with some fields replaced, e.g. ``{"sigma": 1e-3}``.

    An unknown field name raises ``TypeError`` naming it, from :func:`dataclasses.replace`.
    """
    settings = RasterSettings() if settings is None else settings
    if not isinstance(settings, RasterSettings):
        raise TypeError(f"settings must be a RasterSettings, got {type(settings).__name__}")
    return replace(settings, **overrides) if overrides else settings
