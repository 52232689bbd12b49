"""recon.mesh.template_sphere: the 642-vertex icosphere the decoder deforms."""

from __future__ import annotations

import torch

from recon.mesh import icosphere, template_sphere, unique_edges


def test_counts_shapes_and_dtypes() -> None:
    vertices, faces = template_sphere()
    assert vertices.shape == (642, 3) and vertices.dtype == torch.float32
    assert faces.shape == (1280, 3) and faces.dtype == torch.int64
    assert torch.allclose(vertices.norm(dim=1), torch.ones(642), atol=1e-6)
    assert faces.min() == 0 and faces.max() == 641


def test_closed_manifold_with_1920_edges_and_degrees_5_or_6() -> None:
    _, faces = template_sphere()
    sides = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    # Every directed side appears exactly once (consistent winding), and its reverse once (closed).
    directed, counts = torch.unique(sides, dim=0, return_counts=True)
    assert directed.shape[0] == 3840 and bool((counts == 1).all())
    assert torch.equal(torch.unique(sides.flip(1), dim=0), directed)
    edges = torch.unique(sides.sort(dim=1).values, dim=0)
    assert edges.shape[0] == 1920
    assert torch.equal(unique_edges(faces), edges), "SoftRas's face[0:2] ∪ face[1:3] finds every edge"
    degree = torch.bincount(edges.flatten(), minlength=642)
    assert sorted(degree.unique().tolist()) == [5, 6] and int((degree == 5).sum()) == 12
    assert 642 - 1920 + 1280 == 2  # Euler characteristic of a sphere


def test_faces_are_counter_clockwise_seen_from_outside() -> None:
    for level in range(4):
        vertices, faces = icosphere(level)
        a, b, c = vertices[faces].unbind(1)
        normals = torch.linalg.cross(b - a, c - a)
        assert bool(((normals * (a + b + c)).sum(-1) > 0).all()), f"inward face at level {level}"
        volume = (torch.linalg.cross(a, b) * c).sum() / 6  # positive for outward orientation
        assert 0 < volume < 4 / 3 * torch.pi


def test_deterministic_and_callers_cannot_corrupt_the_cache() -> None:
    vertices, faces = template_sphere()
    vertices.mul_(0)
    faces.zero_()
    again_vertices, again_faces = template_sphere()
    assert torch.allclose(again_vertices.norm(dim=1), torch.ones(642), atol=1e-6)
    assert again_faces.max() == 641
    assert int((again_vertices == 0).sum()) == 96  # exact zeros: golden-rectangle planes (SoftRas's: 67)
