"""Camera pipeline of SoftRas/NMR: eye positions from angles, look-at, perspective projection.

Conventions (see ``docs/conventions.md``): world y is up; the eye looks at the origin; the camera frame has
+z forward, +y up and is right-handed, so look-at followed by the perspective divide mirrors world x in the
image. This mirror is what NMR, SoftRas and their ShapeNet renders all do, and it is reproduced on purpose.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.render.constants import constant

# Depths closer to the eye than this are pushed to ±_MIN_DEPTH before the perspective divide, so a vertex at the
# eye gives a large but finite projection and finite gradients (SoftRas would divide by zero).
_MIN_DEPTH = 1e-6


def eye_from_angles(
    distance: float | Tensor, elevation: float | Tensor, azimuth: float | Tensor
) -> Tensor:
    """Eye positions on a sphere around the origin, SoftRas's ``get_points_from_angles``.

    Args:
        distance, elevation, azimuth: scalars or 1-D tensors (broadcast together); angles in degrees.

    Returns:
        eyes: (B, 3) float32 (the dtype of a floating tensor argument), with
        ``eye = (d·cos(el)·sin(az), d·sin(el), −d·cos(el)·cos(az))``. The ShapeNet set's view k is
        ``eye_from_angles(2.732, 30, -15 * k)``.
    """
    tensors = [a for a in (distance, elevation, azimuth) if isinstance(a, Tensor)]
    dtype = next((a.dtype for a in tensors if a.is_floating_point()), torch.float32)
    device = tensors[0].device if tensors else None
    d, el, az = (torch.as_tensor(a, dtype=dtype, device=device).reshape(-1) for a in (distance, elevation, azimuth))
    d, el, az = torch.broadcast_tensors(d, torch.deg2rad(el), torch.deg2rad(az))
    return torch.stack(
        (d * torch.cos(el) * torch.sin(az), d * torch.sin(el), -d * torch.cos(el) * torch.cos(az)), dim=-1
    )


def look_at_rotation(eyes: Tensor, at: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """World→camera rotations whose rows are the camera axes (x, y, z).

    Args:
        eyes: (B, 3). at: (3,) or (B, 3), default the origin. up: (3,) or (B, 3), default +y.

    Returns:
        (B, 3, 3) with z = normalize(at − eye), x = normalize(up × z), y = normalize(z × x), normalised with
        eps 1e-5 exactly as SoftRas's ``F.normalize`` calls.
    """
    at = eyes.new_zeros(3) if at is None else at.to(eyes)
    up = constant((0.0, 1.0, 0.0), eyes.device, eyes.dtype) if up is None else up.to(eyes)
    z = F.normalize(at - eyes, dim=-1, eps=1e-5)
    x = F.normalize(torch.linalg.cross(up.expand_as(z), z, dim=-1), dim=-1, eps=1e-5)
    y = F.normalize(torch.linalg.cross(z, x, dim=-1), dim=-1, eps=1e-5)
    return torch.stack((x, y, z), dim=-2)


def look_at(vertices: Tensor, eyes: Tensor) -> Tensor:
    """Move vertices into the camera frame of eyes looking at the origin with +y up.

    Args:
        vertices: (B, V, 3) world coordinates. eyes: (B, 3).

    Returns:
        (B, V, 3) camera coordinates ``(v − eye)·Rᵀ``; +z points from the eye towards the origin.
    """
    rotation = look_at_rotation(eyes)
    return torch.matmul(vertices - eyes[:, None, :], rotation.transpose(1, 2))


def perspective(vertices: Tensor, viewing_angle: float = 15.0) -> Tensor:
    """Perspective divide of camera-frame vertices to (x_ndc, y_ndc, z_view).

    Args:
        vertices: (B, V, 3) camera coordinates. viewing_angle: half field of view in degrees (SoftRas recon: 15).

    Returns:
        (B, V, 3): ``x/(z·tan θ)``, ``y/(z·tan θ)`` in NDC, where [−1, 1] spans the image, and z kept as the view
        depth used for the z-buffer. Depths within ±1e-6 of the eye are clamped (sign kept) to stay finite.
    """
    width = math.tan(math.radians(viewing_angle))
    z = vertices[..., 2]
    z_safe = torch.where(z >= 0, z.clamp(min=_MIN_DEPTH), z.clamp(max=-_MIN_DEPTH))
    x = vertices[..., 0] / (z_safe * width)
    y = vertices[..., 1] / (z_safe * width)
    return torch.stack((x, y, z), dim=-1)


def project(vertices: Tensor, eyes: Tensor, viewing_angle: float = 15.0) -> Tensor:
    """World vertices (B, V, 3) seen from eyes (B, 3) → (B, V, 3) as (x_ndc, y_ndc, z_view)."""
    return perspective(look_at(vertices, eyes), viewing_angle)


def ndc_to_pixel(xy: Tensor, image_size: int) -> Tensor:
    """NDC (…, 2) → continuous (row, col) pixel coordinates with pixel centres at integers, row 0 at the top."""
    col = (xy[..., 0] + 1) * image_size / 2 - 0.5
    row = (1 - xy[..., 1]) * image_size / 2 - 0.5
    return torch.stack((row, col), dim=-1)
