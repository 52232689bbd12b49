"""recon.mesh.voxelize against a literal loop port of SoftRas's kernel, on closed meshes and conventions."""

from __future__ import annotations

import importlib
import itertools
from collections import deque

import numpy as np
import pytest
import torch

from recon.mesh import icosphere, template_sphere, voxelize

# ----------------------------------------------------------------------------------------------------
# Slow reference: SoftRas's voxelize_sub1..4 as plain loops over corners × faces, numpy float32 scalars.


def _reference_voxelize(vertices: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """One mesh: vertices (V, 3) float32 in mesh units, faces (F, 3) -> bool (S, S, S), dataset order."""
    f32 = np.float32
    grid = (vertices.astype(f32) * f32(1.0) * f32(size - 1.0) / f32(size) + f32(0.5)) * f32(size)
    face_vertices = grid[faces]  # (F, 3, 3)
    voxels = np.zeros((size, size, size), dtype=bool)

    for dim, order in enumerate(((2, 1, 0), (0, 2, 1), (0, 1, 2))):  # voxelize_sub1
        permuted = face_vertices[:, :, list(order)]
        marks = np.zeros((size, size, size), dtype=bool)
        for y, x in itertools.product(range(size), range(size)):  # one CUDA thread per corner
            for face in permuted:
                y1d, x1d, z1d = face[1] - face[0]
                y2d, x2d, z2d = face[2] - face[0]
                ypd, xpd = f32(y) - face[0, 0], f32(x) - face[0, 1]
                det = x1d * y2d - x2d * y1d
                if det == 0:
                    continue
                t1 = (y2d * xpd - x2d * ypd) / det
                t2 = (-y1d * xpd + x1d * ypd) / det
                if t1 < 0 or t2 < 0 or 1 < t1 + t2:
                    continue
                zi = int(np.floor(t1 * z1d + t2 * z2d + face[0, 2]))
                for yi, xi in ((y, x), (y - 1, x), (y, x - 1), (y - 1, x - 1)):
                    if 0 <= yi < size and 0 <= xi < size and 0 <= zi < size:
                        marks[yi, xi, zi] = True
        voxels |= np.swapaxes(marks, dim, -1)  # the kernel's transpose(dim + 1, -1) back to (x, y, z)

    for corner in face_vertices.reshape(-1, 3):  # voxelize_sub2
        index = np.floor(corner).astype(int)
        if ((0 <= index) & (index < size)).all():
            voxels[tuple(index)] = True

    # voxelize_sub3/4: empty voxels reachable from empty boundary voxels through 6-neighbours are outside.
    visible = np.zeros_like(voxels)
    queue = deque()
    for index in itertools.product(range(size), repeat=3):
        if (0 in index or size - 1 in index) and not voxels[index]:
            visible[index] = True
            queue.append(index)
    while queue:
        i, j, k = queue.popleft()
        for di, dj, dk in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            n = (i + di, j + dj, k + dk)
            if all(0 <= c < size for c in n) and not voxels[n] and not visible[n]:
                visible[n] = True
                queue.append(n)
    solid = ~visible
    return solid.transpose(1, 0, 2)[:, :, ::-1]  # SoftRas's evaluate_iou orientation


# ----------------------------------------------------------------------------------------------------
# Meshes


def _box(
    low: tuple[float, float, float], high: tuple[float, float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    corners = torch.tensor(list(itertools.product(*zip(low, high, strict=True))), dtype=torch.float32)
    faces = torch.tensor(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],
    )  # fmt: skip
    return corners, faces


def _random_soup(seed: int, num_faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vertices = (torch.rand(num_faces * 3, 3, generator=g) - 0.5) * 0.9
    # Shrink each triangle towards a random centre so faces are a few voxels wide, as on real meshes.
    centres = (torch.rand(num_faces, 1, 3, generator=g) - 0.5) * 0.8
    vertices = (centres + 0.4 * (vertices.view(num_faces, 3, 3) - centres)).reshape(-1, 3)
    return vertices, torch.arange(num_faces * 3).view(num_faces, 3)


def _bumpy_sphere(seed: int, level: int, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    vertices, faces = icosphere(level)
    g = torch.Generator().manual_seed(seed)
    scale = radius * (1 + 0.25 * (torch.rand(vertices.shape[0], 1, generator=g) - 0.5))
    return vertices * scale, faces


def _grid_aligned(vertices: torch.Tensor, size: int) -> torch.Tensor:
    """Move each coordinate to a float32 value whose grid coordinate (v·(S−1)/S + 0.5)·S is an integer."""
    f32 = np.float32
    target = np.round((vertices.numpy() * (size - 1) / size + 0.5) * size)
    value = ((target / size - 0.5) * size / (size - 1)).astype(f32)
    for _ in range(8):  # nudge by ulps until the forward formula lands exactly on the integer
        grid = (value * f32(1.0) * f32(size - 1.0) / f32(size) + f32(0.5)) * f32(size)
        value = np.where(grid < target, np.nextafter(value, f32(np.inf)), value)
        value = np.where(grid > target, np.nextafter(value, f32(-np.inf)), value)
    grid = (value * f32(1.0) * f32(size - 1.0) / f32(size) + f32(0.5)) * f32(size)
    assert (grid == target).all()
    return torch.from_numpy(value)


def _assert_matches_reference(vertices: torch.Tensor, faces: torch.Tensor, size: int) -> None:
    expected = _reference_voxelize(vertices.numpy(), faces.numpy(), size)
    got = voxelize(vertices[None], faces, size=size)[0].numpy()
    assert got.shape == (size, size, size)
    mismatch = np.argwhere(got != expected)
    assert mismatch.size == 0, f"{len(mismatch)} voxels differ, e.g. {mismatch[:5].tolist()}"


# ----------------------------------------------------------------------------------------------------
# (a) exactly the reference algorithm


@pytest.mark.parametrize(("seed", "size"), [(0, 8), (1, 11), (2, 16)])
def test_random_triangle_soup_matches_reference(seed: int, size: int) -> None:
    vertices, faces = _random_soup(seed, num_faces=24)
    _assert_matches_reference(vertices, faces, size)


@pytest.mark.parametrize(("level", "size", "radius"), [(1, 8, 0.4), (1, 13, 0.3), (2, 16, 0.45)])
def test_closed_bumpy_spheres_match_reference(level: int, size: int, radius: float) -> None:
    vertices, faces = _bumpy_sphere(seed=level * 100 + size, level=level, radius=radius)
    _assert_matches_reference(vertices, faces, size)


def test_vertices_on_corners_and_outside_grid_match_reference() -> None:
    # Grid-aligned vertices (exact corner hits, t1 + t2 == 1 ties, det == 0 projections) and a mesh that
    # pokes out of the cube: the edge cases where a bounding-box shortcut could drift from the kernel.
    size = 8
    vertices, faces = _box((-0.3, -0.3, -0.3), (0.3, 0.3, 0.3))
    _assert_matches_reference(_grid_aligned(vertices, size), faces, size)
    soup, soup_faces = _random_soup(seed=5, num_faces=12)
    _assert_matches_reference(_grid_aligned(soup, size), soup_faces, size)
    big, big_faces = _box((-0.7, -0.2, -0.1), (0.2, 0.6, 0.3))
    _assert_matches_reference(big, big_faces, size)
    sliver = torch.tensor([[-0.4, -0.4, 0.0], [0.4, 0.4, 0.05], [0.4, 0.4001, 0.1], [-0.1, 0.3, 0.2]])
    _assert_matches_reference(sliver, torch.tensor([[0, 1, 2], [0, 2, 3], [1, 3, 2]]), size)


@pytest.mark.parametrize("seed", [33, 39])
def test_faces_jittered_around_grid_corners_match_reference(seed: int) -> None:
    # Vertices within ±1e-7 of grid corners: corners on a face's bounding box pass or fail the kernel's test
    # by rounding alone, so a plain bounding-box shortcut (no rounding margin) differs here.
    size, num_faces = 8, 16
    rng = np.random.default_rng(seed)
    corner = rng.integers(0, size, (num_faces, 3, 3)).astype(np.float64)
    vertices = (corner / size - 0.5) * size / (size - 1) + rng.choice([0.0, 1e-7, -1e-7], corner.shape)
    vertices = torch.tensor(vertices.reshape(-1, 3), dtype=torch.float32)
    _assert_matches_reference(vertices, torch.arange(3 * num_faces).view(num_faces, 3), size)


# ----------------------------------------------------------------------------------------------------
# (b) closed meshes are solid and conservative


def _voxel_centres(size: int) -> torch.Tensor:
    """Mesh-unit centres (S, S, S, 3) of the dataset-oriented grid: out[i, j, k] ↔ (x=j, y=i, z=S−1−k)."""
    i, j, k = torch.meshgrid(*[torch.arange(size, dtype=torch.float64)] * 3, indexing="ij")
    grid = torch.stack([j, i, size - 1 - k], dim=-1) + 0.5
    return (grid / size - 0.5) * size / (size - 1)  # inverse of g = (v·(S−1)/S + 0.5)·S


def test_scaled_sphere_is_solid_and_within_conservative_band() -> None:
    size, radius = 32, 0.4
    vertices, faces = template_sphere()
    solid = voxelize(vertices[None] * radius, faces, size=size)[0]
    centres = _voxel_centres(size)
    # Inside the (convex) polyhedron: behind every face plane.
    v = (vertices * radius).double()
    tri = v[faces]
    normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    offsets = (normals * tri[:, 0]).sum(-1)
    inside = ((centres.reshape(-1, 3) @ normals.T) < offsets).all(-1).view(size, size, size)
    assert bool(solid[inside].all()), "a voxel whose centre is inside the mesh is empty"
    # Every marked voxel touches the solid: its centre lies within half a voxel diagonal of the sphere.
    voxel = 1.0 / (size - 1)  # one voxel in mesh units
    near = centres.norm(dim=-1) <= radius + voxel * 3**0.5 / 2 + 1e-6
    assert not bool(solid[~near].any()), "a voxel far outside the mesh is occupied"
    assert inside.sum() < solid.sum() < near.sum()


def test_off_centre_box_lands_at_dataset_indices() -> None:
    # Box in the +x, +y, +z octant; grid coordinate 31·v + 16 gives x ∈ [19.1, 25.3], y ∈ [17.55, 22.2],
    # z ∈ [22.2, 28.4], so the solid is x-index 19..25, y-index 17..22, z-index 22..28 (faces are axis
    # aligned, so each side marks exactly the voxel layer it lies in).
    vertices, faces = _box((0.1, 0.05, 0.2), (0.3, 0.2, 0.4))
    solid = voxelize(vertices[None], faces, size=32)[0]
    expected = torch.zeros(32, 32, 32, dtype=torch.bool)
    expected[17:23, 19:26, 31 - 28 : 31 - 22 + 1] = True  # [y-index, x-index, 31 − z-index]
    assert torch.equal(solid, expected)


@pytest.mark.parametrize("size", [63, 64])
def test_box_touching_the_grid_boundary_at_the_largest_sizes(size: int) -> None:
    # z reaches the last layer: at S = 64 that is bit 63 (the sign bit) of the fill's packed lines.
    vertices, faces = _box((-0.3, -0.49, -0.2), (0.45, 0.2, 0.499))
    solid = voxelize(vertices[None], faces, size=size)[0]
    grid = (vertices * (size - 1.0) / size + 0.5) * size
    low, high = grid.min(0).values.floor().long(), grid.max(0).values.floor().long()
    assert int(high[2]) == size - 1
    expected = torch.zeros(size, size, size, dtype=torch.bool)
    expected[low[1] : high[1] + 1, low[0] : high[0] + 1, size - 1 - high[2] : size - low[2]] = True
    assert torch.equal(solid, expected)


# ----------------------------------------------------------------------------------------------------
# (d) batching, (e) validation


def test_batch_equals_single_meshes_and_per_mesh_faces(monkeypatch: pytest.MonkeyPatch) -> None:
    base, faces = icosphere(2)
    g = torch.Generator().manual_seed(3)
    vertices = base[None] * (0.2 + 0.25 * torch.rand(5, base.shape[0], 3, generator=g))
    batched = voxelize(vertices, faces, size=20)
    singles = torch.cat([voxelize(vertices[b : b + 1], faces, size=20) for b in range(5)])
    assert torch.equal(batched, singles)
    assert batched.dtype == torch.bool and batched.shape == (5, 20, 20, 20)
    per_mesh = voxelize(vertices, faces[None].expand(5, -1, -1), size=20)
    assert torch.equal(per_mesh, batched)
    monkeypatch.setattr(importlib.import_module("recon.mesh.voxelize"), "_MESHES_PER_CPU_CHUNK", 2)
    assert torch.equal(voxelize(vertices, faces, size=20), batched), "chunks of 2, 2, 1 meshes"
    assert batched.flatten(1).any(1).all(), "every mesh occupies something"


def test_does_not_track_gradients() -> None:
    vertices, faces = icosphere(1)
    vertices = (vertices[None] * 0.3).requires_grad_()
    assert not voxelize(vertices, faces, size=8).requires_grad


@pytest.mark.parametrize(
    ("vertices", "faces", "size", "message"),
    [
        (torch.zeros(4, 3), torch.zeros(1, 3, dtype=torch.long), 8, "vertices must be a"),
        (torch.zeros(1, 4, 2), torch.zeros(1, 3, dtype=torch.long), 8, "vertices must be a"),
        (torch.zeros(1, 4, 3), torch.zeros(1, 4, dtype=torch.long), 8, "faces must be a"),
        (torch.zeros(1, 4, 3), torch.zeros(1, 3), 8, "integer vertex indices"),
        (torch.zeros(2, 4, 3), torch.zeros(3, 1, 3, dtype=torch.long), 8, "do not match the 2 meshes"),
        (torch.zeros(1, 4, 3), torch.full((1, 3), 4), 8, r"\[0, 4\)"),
        (torch.zeros(1, 4, 3), torch.zeros(1, 3, dtype=torch.long), 65, "size must be"),
        (torch.zeros(1, 4, 3), torch.zeros(1, 3, dtype=torch.long), 0, "size must be"),
    ],
)
def test_bad_inputs_raise_value_error(vertices, faces, size, message) -> None:
    with pytest.raises(ValueError, match=message):
        voxelize(vertices, faces, size=size)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    vertices, faces = _bumpy_sphere(seed=7, level=3, radius=0.45)
    batch = torch.stack([vertices, vertices * 0.7, vertices.roll(1, dims=1)])
    cpu = voxelize(batch, faces)
    cuda = voxelize(batch.cuda(), faces.cuda())
    assert cuda.is_cuda and torch.equal(cuda.cpu(), cpu)


def test_a_non_finite_vertex_raises_instead_of_leaking_the_surface():
    from recon.errors import NonFiniteMeshError
    from recon.mesh import template_sphere

    vertices, faces = template_sphere()
    batch = (0.4 * vertices.float())[None].repeat(3, 1, 1)
    assert voxelize(batch, faces, 32).sum() > 0  # finite: a solid ball, three times
    batch[1, 7, 2] = float("nan")
    batch[2, 0, 0] = float("inf")
    with pytest.raises(NonFiniteMeshError, match=r"meshes \[1, 2\] of the batch have NaN or infinite vertices"):
        voxelize(batch, faces, 32)
