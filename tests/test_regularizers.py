"""recon.mesh LaplacianLoss and FlattenLoss against slow references, gradchecks and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from recon.mesh import FlattenLoss, LaplacianLoss, icosphere, template_sphere


def _random_meshes(
    level: int, batch: int, seed: int, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    vertices, faces = icosphere(level)
    g = torch.Generator().manual_seed(seed)
    noisy = vertices[None].to(dtype) * (
        1 + 0.3 * torch.rand(batch, vertices.shape[0], 3, generator=g, dtype=dtype)
    )
    return noisy, faces


def _octahedron() -> tuple[torch.Tensor, torch.Tensor]:
    vertices = torch.tensor(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64
    )
    faces = torch.tensor(
        [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    )
    return vertices, faces


# ----------------------------------------------------------------------------------------------------
# Laplacian


def _dense_laplacian_reference(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """SoftRas's construction: L = I − D⁻¹A as a dense V×V matrix, loss = Σ (L v)² per mesh."""
    n = vertices.shape[1]
    matrix = torch.zeros(n, n, dtype=vertices.dtype)
    for i, j in ((0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (0, 2)):
        matrix[faces[:, i], faces[:, j]] = -1
    matrix[range(n), range(n)] = -matrix.sum(1)
    matrix /= matrix.diagonal()[:, None].clone()
    return (matrix @ vertices).pow(2).sum(dim=(1, 2))


def _loop_laplacian_reference(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    neighbours: dict[int, set[int]] = {}
    for face in faces.tolist():
        for a in face:
            neighbours.setdefault(a, set()).update(b for b in face if b != a)
    totals = []
    for mesh in vertices:
        total = 0.0
        for i, ring in neighbours.items():
            mean = sum(mesh[j] for j in ring) / len(ring)
            total += float((mesh[i] - mean).pow(2).sum())
        totals.append(total)
    return torch.tensor(totals, dtype=vertices.dtype)


def test_laplacian_matches_dense_matrix_and_loop_references() -> None:
    vertices, faces = _random_meshes(level=2, batch=3, seed=0)
    loss = LaplacianLoss(faces, vertices.shape[1])
    got = loss(vertices)
    assert got.shape == (3,)
    torch.testing.assert_close(got, _dense_laplacian_reference(vertices, faces), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, _loop_laplacian_reference(vertices, faces), rtol=1e-12, atol=1e-12)
    big, big_faces = _random_meshes(level=3, batch=2, seed=1)
    torch.testing.assert_close(
        LaplacianLoss(big_faces, 642)(big), _dense_laplacian_reference(big, big_faces), rtol=1e-10, atol=1e-10
    )


def test_laplacian_of_template_corner_vertex_by_hand() -> None:
    # Vertex 0 is an icosahedron corner with 5 neighbours symmetric about it: their mean is (v0·n)·v0 for any
    # neighbour n, so the Laplacian there is (1 − v0·n)·v0.
    vertices, faces = template_sphere()
    vertices = vertices.double()
    ring = faces[(faces == 0).any(1)].unique()
    ring = ring[ring != 0]
    assert ring.numel() == 5
    dots = vertices[ring] @ vertices[0]
    torch.testing.assert_close(dots, dots[0].expand(5), rtol=1e-6, atol=1e-6)
    laplacian = LaplacianLoss(faces, 642).laplacian(vertices[None])[0]
    expected = (1 - dots.mean()) * vertices[0]
    torch.testing.assert_close(laplacian[0], expected, rtol=0, atol=2e-7)  # float32 template positions
    assert 0 < float(expected.norm()) < 0.05  # a small bump: neighbours ~0.19 rad away, 1 − cos ≈ 0.018


def test_laplacian_translation_invariant_and_zero_on_isolated_vertex() -> None:
    vertices, faces = _random_meshes(level=1, batch=2, seed=2)
    loss = LaplacianLoss(faces, vertices.shape[1])
    torch.testing.assert_close(
        loss(vertices + torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64)), loss(vertices)
    )
    with_extra = torch.cat([vertices, torch.ones(2, 1, 3, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(LaplacianLoss(faces, vertices.shape[1] + 1)(with_extra), loss(vertices))


def test_laplacian_gradcheck() -> None:
    vertices, faces = _octahedron()
    loss = LaplacianLoss(faces, 6)
    noisy = vertices + 0.1 * torch.randn(
        6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    assert torch.autograd.gradcheck(loss, (noisy[None].requires_grad_(),))


# ----------------------------------------------------------------------------------------------------
# Flatten


def _loop_flatten_reference(vertices: torch.Tensor, faces: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """SoftRas's losses.py, one edge at a time: edges from sorted face[0:2], face[1:3]; v2, v3 from a scan."""
    face_list = faces.tolist()
    edges = sorted({tuple(sorted(pair)) for f in face_list for pair in ((f[0], f[1]), (f[1], f[2]))})
    quads = []
    for v0, v1 in edges:
        opposite = [next(v for v in f if v not in (v0, v1)) for f in face_list if v0 in f and v1 in f]
        quads.append((v0, v1, opposite[0], opposite[1]))
    totals = []
    for mesh in vertices.tolist():
        total = 0.0
        for v0, v1, v2, v3 in quads:
            p0, p1 = mesh[v0], mesh[v1]
            a = [p1[k] - p0[k] for k in range(3)]
            a_sq = sum(x * x for x in a)
            a_len = math.sqrt(a_sq + eps)
            perpendicular = []
            for other in (mesh[v2], mesh[v3]):
                b = [other[k] - p0[k] for k in range(3)]
                b_len = math.sqrt(sum(x * x for x in b) + eps)
                ab = sum(a[k] * b[k] for k in range(3))
                cos = ab / (a_len * b_len + eps)
                sin = math.sqrt(1 - cos * cos + eps)
                perpendicular.append(([b[k] - a[k] * ab / (a_sq + eps) for k in range(3)], b_len * sin))
            (cb1, l1), (cb2, l2) = perpendicular
            cos = sum(cb1[k] * cb2[k] for k in range(3)) / (l1 * l2 + eps)
            total += (cos + 1) ** 2
        totals.append(total)
    return torch.tensor(totals, dtype=vertices.dtype)


def test_flatten_matches_loop_reference() -> None:
    vertices, faces = _random_meshes(level=2, batch=3, seed=4)
    loss = FlattenLoss(faces)
    assert loss.num_edges == 480
    got = loss(vertices)
    assert got.shape == (3,)
    torch.testing.assert_close(got, _loop_flatten_reference(vertices, faces), rtol=1e-12, atol=1e-12)
    # Degenerate geometry (a collapsed edge, coincident vertices) keeps SoftRas's ε-regularised values.
    collapsed = vertices.clone()
    collapsed[:, 1] = collapsed[:, 0]
    collapsed[:, 5] = collapsed[:, 7]
    value = loss(collapsed)
    assert torch.isfinite(value).all()
    torch.testing.assert_close(value, _loop_flatten_reference(collapsed, faces), rtol=1e-9, atol=1e-9)


def test_flatten_template_has_all_1920_edges_and_float32_matches() -> None:
    vertices, faces = template_sphere()
    loss = FlattenLoss(faces)
    assert loss.num_edges == 1920
    assert sorted(loss.edge_vertices[:, :2].flatten().bincount().unique().tolist()) == [5, 6]
    noisy = vertices[None] * (1 + 0.1 * torch.rand(2, 642, 3, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(loss(noisy).double(), loss(noisy.double()), rtol=1e-4, atol=1e-4)


def test_flatten_is_zero_for_flat_edges_and_four_for_folded_ones() -> None:
    # A zero-thickness "pillow": a square with a centre vertex on top and a coincident one below. The 8
    # spokes join coplanar faces (cos θ = −1, term 0); the 4 rim edges fold top onto bottom (cos θ = +1,
    # term 4), so the loss is 16.
    corners = torch.tensor([[1, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]], dtype=torch.float64)
    vertices = torch.cat([corners, torch.zeros(2, 3, dtype=torch.float64)])  # 4 = top centre, 5 = bottom
    top = [[i, (i + 1) % 4, 4] for i in range(4)]
    bottom = [[(i + 1) % 4, i, 5] for i in range(4)]
    loss = FlattenLoss(torch.tensor(top + bottom))
    assert loss.num_edges == 12
    torch.testing.assert_close(
        loss(vertices[None]), torch.tensor([16.0], dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_flatten_gradcheck() -> None:
    vertices, faces = icosphere(1)
    noisy = vertices.double() * (
        1 + 0.2 * torch.rand(42, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    )
    assert torch.autograd.gradcheck(FlattenLoss(faces), (noisy[None].requires_grad_(),))


def test_flatten_keeps_softras_edge_list_where_it_misses_an_edge() -> None:
    # On the level-0 icosahedron 5 edges are the (2, 0) side of both their faces, so SoftRas's face[0:2] ∪
    # face[1:3] construction never sees them: 25 of 30 edges, and the loss follows that list.
    vertices, faces = icosphere(0)
    loss = FlattenLoss(faces)
    assert loss.num_edges == 25
    noisy = vertices.double()[None] * (
        1 + 0.2 * torch.rand(2, 12, 3, generator=torch.Generator().manual_seed(7))
    )
    torch.testing.assert_close(loss(noisy), _loop_flatten_reference(noisy, faces), rtol=1e-12, atol=1e-12)


def test_flatten_rejects_open_meshes_and_bad_faces() -> None:
    with pytest.raises(ValueError, match="closed manifold"):
        FlattenLoss(torch.tensor([[0, 1, 2], [0, 2, 3]]))
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        FlattenLoss(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        LaplacianLoss(torch.zeros(4, 3), 4)
    vertices, faces = icosphere(0)
    with pytest.raises(ValueError, match="built for 12"):
        LaplacianLoss(faces, 12)(vertices[None, :10])
    with pytest.raises(ValueError, match="faces use 12"):
        FlattenLoss(faces)(vertices[None, :10])


def test_buffers_follow_the_module_and_stay_out_of_checkpoints() -> None:
    _, faces = icosphere(1)
    for module in (LaplacianLoss(faces, 42), FlattenLoss(faces)):
        assert module.state_dict() == {}
        assert all(buffer.device.type == "cpu" for buffer in module.buffers())
