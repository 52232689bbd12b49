"""Soft rasterization (SoftRas, Liu et al. 2019) in pure PyTorch, evaluated only on the pairs culling keeps.

For every kept (pixel, face) pair: ``D = sigmoid(sign·d²/σ)`` with d the NDC distance from the pixel centre to
the closed triangle and sign = +1 strictly inside. Alpha aggregates D ('prod': ``1 − Π(1 − D)``), RGB aggregates
the face colours (:mod:`recon.render.rgb`). Formulas, constants and quirks are SoftRas's (see
``docs/conventions.md``); gradients match SoftRas's CUDA backward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.render import fused
from recon.render.numba_path import SoftRGBA
from recon.render.pairs import PixelFacePairs, find_pairs
from recon.render.precision import at_least_float32, full_precision
from recon.render.rgb import aggregate_rgb
from recon.render.settings import AlphaAggregation, RasterSettings, resolve_settings
from recon.render.silhouette import SILHOUETTE_MODES, soft_silhouette


class _SignedSquaredDistance(torch.autograd.Function):
    """``sign·|q − p|²`` per pair, q the nearest point of the triangle to pixel p.

    The backward is SoftRas's: the foot-point parameter t is held constant, which is exact here because the
    distance is minimal in t (envelope theorem) and the pixel is fixed. Only the pairs are stored, never the
    dense pixel × face product, and the gradient is scattered straight onto the face corners.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, corner_a: Tensor, corner_b: Tensor, t: Tensor, px: Tensor,
                py: Tensor, sign: Tensor) -> Tensor:
        # x, y: (N·3,) corner coordinates; the rest (P,) per pair.
        dx = torch.lerp(x.index_select(0, corner_a), x.index_select(0, corner_b), t) - px
        dy = torch.lerp(y.index_select(0, corner_a), y.index_select(0, corner_b), t) - py
        ctx.save_for_backward(corner_a, corner_b, t, dx, dy, sign)
        ctx.num_corners = x.shape[0]
        return sign * torch.addcmul(dx * dx, dy, dy)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        corner_a, corner_b, t, dx, dy, sign = ctx.saved_tensors
        g = 2 * grad * sign
        g_b = g * t
        g_a = g - g_b
        grads = []
        for d in (dx, dy):
            out = d.new_zeros(ctx.num_corners)
            out.index_add_(0, corner_a, g_a * d)
            out.index_add_(0, corner_b, g_b * d)
            grads.append(out)
        return grads[0], grads[1], None, None, None, None, None, None


def signed_squared_distance(xy: Tensor, pairs: PixelFacePairs) -> Tensor:
    """(P,) ``sign·d²`` in NDC² for the pairs, differentiable w.r.t. the (N, 3, 2) face corners xy."""
    sign = torch.where(pairs.inside, 1.0, -1.0).to(xy.dtype)
    flat = xy.reshape(-1, 2)
    return _SignedSquaredDistance.apply(
        flat[:, 0].contiguous(), flat[:, 1].contiguous(), pairs.corner_a, pairs.corner_b,
        pairs.t.to(xy.dtype), pairs.x, pairs.y, sign,
    )


@full_precision
def soft_rasterize(
    face_vertices: Tensor,
    face_colors: Tensor | None = None,
    settings: RasterSettings | None = None,
    **overrides: Any,
) -> Tensor:
    """Rasterize projected faces softly.

    Args:
        face_vertices: (B, F, 3, 3) corners as (x_ndc, y_ndc, z_view), after the camera transform.
        face_colors: (B, F, 3, 3) RGB per corner (interpolated with clipped barycentrics, SoftRas's 'vertex'
            texture), (B, F, 1, 3) one RGB per face (its 'surface' texture with R = 1; cheaper than the same colour
            repeated per corner), or None to compute alpha only.
        settings: :class:`RasterSettings` (default: its defaults). overrides: fields of it to replace for this
            call, e.g. ``sigma=1e-3``.

    Returns:
        (B, 4, S, S) RGBA when colours are given, else (B, 1, S, S) alpha; row 0 is the top of the image.
        Alpha without colours ('prod' or 'sum') comes from the window kernel of :mod:`recon.render.silhouette`,
        several times faster than the pair lists; on CPU both it and 'softmax' RGBA run on the numba kernels of
        :mod:`recon.render.numba_path` unless ``RECON_FUSED=0``. The values agree. float16/bfloat16 inputs render
        in float32, autocast off (:mod:`recon.render.precision`): the result is then float32.
    """
    settings = resolve_settings(settings, overrides)
    face_vertices, face_colors = at_least_float32(face_vertices), at_least_float32(face_colors)
    b, f = face_vertices.shape[:2]
    s = settings.image_size
    if face_colors is None and settings.aggr_alpha in SILHOUETTE_MODES:
        return soft_silhouette(face_vertices, settings)
    if face_colors is not None and (
        face_colors.dim() != 4 or face_colors.shape[:2] != (b, f) or face_colors.shape[2] not in (1, 3)
        or face_colors.shape[3] != 3
    ):
        raise ValueError(
            f"face_colors must be (B, F, 3, 3) per corner or (B, F, 1, 3) per face with B={b}, F={f}, "
            f"got {tuple(face_colors.shape)}"
        )
    if (
        face_colors is not None and settings.aggr_rgb == "softmax" and settings.aggr_alpha in SILHOUETTE_MODES
        and face_vertices.shape[-1] == 3
    ):
        if fused.triton_kernels("rgba", face_vertices):
            from recon.render.triton_path import TritonRGBA

            return TritonRGBA.apply(face_vertices, face_colors.to(face_vertices.dtype), settings)
        # One colour per face runs kernels compiled for it: their own first-call check, so that a caller compiles
        # only the layout it uses.
        if fused.numba_kernels("rgba" if face_colors.shape[2] == 3 else "rgba-face", face_vertices):
            return SoftRGBA.apply(face_vertices, face_colors.to(face_vertices.dtype), settings)
    if face_colors is not None:
        face_colors = face_colors.expand(b, f, 3, 3)
    xy = face_vertices[..., :2].reshape(b * f, 3, 2)
    pairs = find_pairs(xy, f, s, settings.culling_threshold)
    logits = signed_squared_distance(xy, pairs) / settings.sigma
    alpha = aggregate_alpha(logits, pairs, b * s * s, f, settings.aggr_alpha).view(b, 1, s, s)
    if face_colors is None:
        return alpha
    rgb = aggregate_rgb(face_vertices, face_colors, pairs, logits, settings)
    return torch.cat((rgb.view(b, s, s, 3).permute(0, 3, 1, 2), alpha), dim=1)


def aggregate_alpha(
    logits: Tensor, pairs: PixelFacePairs, num_pixels: int, faces_per_image: int, mode: AlphaAggregation
) -> Tensor:
    """Per-pixel alpha (num_pixels,) from the pair logits ``sign·d²/σ``."""
    if mode == "prod":
        # log(1 − D) = logsigmoid(−x): no log(0), no NaN, even where D rounds to 1 in float32.
        log_transmittance = logits.new_zeros(num_pixels).index_add(0, pairs.pixel, F.logsigmoid(-logits))
        return -torch.expm1(log_transmittance)
    if mode == "sum":
        return logits.new_zeros(num_pixels).index_add(0, pairs.pixel, torch.sigmoid(logits)) / faces_per_image
    if mode == "hard":
        covered = logits.new_zeros(num_pixels).index_add(0, pairs.pixel, (logits > 0).to(logits.dtype))
        return (covered > 0).to(logits.dtype)
    raise ValueError(f"aggr_alpha must be 'prod', 'sum' or 'hard', got {mode!r}")
