"""SoftRas's mesh regularizers: the Laplacian (smoothness) loss and the flatten (dihedral) loss.

Both take the connectivity once at construction (it is the template's, shared by every mesh of a batch) and
keep it as index buffers: they follow the module to CUDA, and are non-persistent (rebuilt from the faces, not
stored in checkpoints). Both are index gathers and ``index_add_``, which have deterministic CUDA kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _check_faces(faces: Tensor) -> Tensor:
    if not isinstance(faces, Tensor) or faces.dim() != 2 or faces.shape[1] != 3:
        got = tuple(faces.shape) if isinstance(faces, Tensor) else type(faces).__name__
        raise ValueError(f"faces must be a (F, 3) integer tensor, got {got}")
    if faces.dtype.is_floating_point or faces.dtype == torch.bool:
        raise ValueError(f"faces must hold integer vertex indices, got dtype {faces.dtype}")
    return faces.detach().long().cpu()


def _check_vertices(vertices: Tensor, num_vertices: int | None = None) -> None:
    if vertices.dim() != 3 or vertices.shape[2] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if num_vertices is not None and vertices.shape[1] != num_vertices:
        raise ValueError(
            f"vertices have {vertices.shape[1]} vertices per mesh, the loss was built for {num_vertices}"
        )


def unique_edges(faces: Tensor) -> Tensor:
    """Undirected edges of a triangle mesh as sorted pairs (E, 2) int64, in lexicographic order.

    Built as SoftRas's FlattenLoss builds them: the unique sorted pairs of face[0:2] and face[1:3]. The third
    side (face[2], face[0]) is not read, so an edge that is the (2, 0) side of every face it belongs to is
    missed. The template has all its 1920 edges this way (tested); the level-0 icosahedron lacks 5 of its 30.
    """
    faces = _check_faces(faces)
    pairs = torch.cat([faces[:, 0:2], faces[:, 1:3]], dim=0).sort(dim=1).values
    return torch.unique(pairs, dim=0)


class LaplacianLoss(nn.Module):
    """Uniform-Laplacian smoothness: per mesh Σ_i ‖v_i − mean_{j∈N(i)} v_j‖², summed over xyz.

    This is SoftRas's ``(I − D⁻¹A)·v`` with its dense V×V matrix replaced by a scatter over the directed
    edge list (2E entries instead of V²). N(i) are the vertices sharing a face with i; an isolated vertex
    (in no face) contributes 0, where SoftRas's dense matrix would divide by zero.

    Args:
        faces: (F, 3) int64 vertex indices.
        num_vertices: V, the number of vertices of every mesh this loss is applied to.

    Call: ``loss(vertices (B, V, 3)) -> (B,)``.
    """

    source: Tensor
    target: Tensor
    inverse_degree: Tensor

    def __init__(self, faces: Tensor, num_vertices: int) -> None:
        super().__init__()
        faces = _check_faces(faces)
        if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
            raise ValueError(f"faces index vertices outside [0, {num_vertices})")
        self.num_vertices = num_vertices
        # Every side of every face, both directions; SoftRas's matrix assignment de-duplicates, so do we.
        sides = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
        directed = torch.unique(torch.cat([sides, sides.flip(1)], dim=0), dim=0)
        degree = torch.bincount(directed[:, 0], minlength=num_vertices).double()
        self.register_buffer("source", directed[:, 0].contiguous(), persistent=False)
        self.register_buffer("target", directed[:, 1].contiguous(), persistent=False)
        # 0 marks a vertex without neighbours (see the class docstring).
        inverse = torch.where(degree > 0, 1.0 / degree.clamp(min=1), torch.zeros_like(degree))
        self.register_buffer("inverse_degree", inverse, persistent=False)

    def laplacian(self, vertices: Tensor) -> Tensor:
        """vertices (B, V, 3) -> (B, V, 3) per-vertex v_i − mean_{j∈N(i)} v_j (0 for isolated vertices)."""
        _check_vertices(vertices, self.num_vertices)
        neighbour_sum = torch.zeros_like(vertices).index_add_(1, self.source, vertices[:, self.target])
        inverse_degree = self.inverse_degree.to(vertices.dtype)[None, :, None]
        connected = (self.inverse_degree > 0).to(vertices.dtype)[None, :, None]
        return (vertices - neighbour_sum * inverse_degree) * connected

    def forward(self, vertices: Tensor) -> Tensor:
        """vertices (B, V, 3) -> (B,) per-mesh Laplacian energy."""
        return self.laplacian(vertices).pow(2).sum(dim=(1, 2))


class FlattenLoss(nn.Module):
    """SoftRas's flatten loss: per mesh Σ_edges (cos θ_e + 1)², θ_e the dihedral angle at edge e.

    For edge (v0, v1) with opposite vertices v2, v3 of its two faces, a = v1 − v0 and b_i = v_{2|3} − v0;
    the parts of b_1, b_2 perpendicular to a point into the two faces, and cos θ is the cosine between them:
    −1 for a flat pair of faces (loss 0), +1 for a fully folded one (loss 4).

    The ε = 1e-6 placements follow SoftRas's ``losses.py`` exactly (they decide the values at degenerate
    edges and the gradients near them): |a| = sqrt(|a|² + ε), |b| = sqrt(|b|² + ε),
    cos_i = a·b_i / (|a||b_i| + ε), the perpendicular part is b_i − a·(a·b_i)/(|a|² + ε) with norm
    |b_i|·sqrt(1 − cos_i² + ε), and cos θ = cb_1·cb_2 / (|cb_1||cb_2| + ε).

    Edges are SoftRas's (see ``unique_edges``): all 1920 for the template; on other meshes an edge that is
    only ever a (2, 0) face side is left out exactly as SoftRas leaves it out (``num_edges`` tells).

    Args:
        faces: (F, 3) int64 vertex indices of a closed manifold mesh (every edge in exactly two faces).

    Call: ``loss(vertices (B, V, 3)) -> (B,)``.
    """

    edge_vertices: Tensor

    def __init__(self, faces: Tensor, eps: float = 1e-6) -> None:
        super().__init__()
        faces = _check_faces(faces)
        self.eps = eps
        edges = unique_edges(faces)
        # For each edge, the faces containing both of its vertices, in face order (as SoftRas's loop finds
        # them): the first gives v2, the second v3.
        sides = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0).sort(dim=1).values
        opposite = torch.cat([faces[:, 2], faces[:, 0], faces[:, 1]])
        face_index = torch.arange(faces.shape[0]).repeat(3)
        num_vertices = int(faces.max()) + 1 if faces.numel() else 0
        self.min_vertices = num_vertices
        side_key = sides[:, 0] * num_vertices + sides[:, 1]
        edge_key = edges[:, 0] * num_vertices + edges[:, 1]
        order = torch.argsort(side_key * faces.shape[0] + face_index)  # by edge, then by face
        side_key, opposite = side_key[order], opposite[order]
        # Sides that are no listed edge (an edge that is the (2, 0) side of both its faces) are dropped, as
        # SoftRas's edge list drops them.
        position = torch.searchsorted(edge_key, side_key).clamp(max=max(edges.shape[0] - 1, 0))
        listed = (
            edge_key[position] == side_key if edges.shape[0] else torch.zeros_like(side_key, dtype=torch.bool)
        )
        position, opposite = position[listed], opposite[listed]
        counts = torch.bincount(position, minlength=edges.shape[0])
        if bool((counts != 2).any()):
            bad = edges[counts != 2][0].tolist()
            raise ValueError(
                f"FlattenLoss needs a closed manifold mesh (every edge in exactly two faces); edge {bad} "
                f"is in {int(counts[counts != 2][0])} face(s)"
            )
        opposite = opposite.view(-1, 2)
        self.register_buffer(
            "edge_vertices",
            torch.stack([edges[:, 0], edges[:, 1], opposite[:, 0], opposite[:, 1]], dim=1),
            persistent=False,
        )

    @property
    def num_edges(self) -> int:
        return self.edge_vertices.shape[0]

    def forward(self, vertices: Tensor) -> Tensor:
        """vertices (B, V, 3) -> (B,) per-mesh flatten energy."""
        _check_vertices(vertices)
        if vertices.shape[1] < self.min_vertices:
            raise ValueError(
                f"vertices have {vertices.shape[1]} vertices per mesh, the faces use {self.min_vertices}"
            )
        eps = self.eps
        v0, v1, v2, v3 = vertices[:, self.edge_vertices].unbind(dim=2)  # each (B, E, 3)
        a = v1 - v0
        a_sq = a.pow(2).sum(-1)
        a_len = (a_sq + eps).sqrt()

        def perpendicular(b: Tensor) -> tuple[Tensor, Tensor]:
            b_len = (b.pow(2).sum(-1) + eps).sqrt()
            ab = (a * b).sum(-1)
            cos = ab / (a_len * b_len + eps)
            sin = (1 - cos.pow(2) + eps).sqrt()
            return b - a * (ab / (a_sq + eps))[..., None], b_len * sin

        cb1, cb1_len = perpendicular(v2 - v0)
        cb2, cb2_len = perpendicular(v3 - v0)
        cos = (cb1 * cb2).sum(-1) / (cb1_len * cb2_len + eps)
        return (cos + 1).pow(2).sum(-1)
