"""What one step of :class:`~recon.module.ReconModule` computes, and the check on its meshes."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from recon.errors import NonFiniteMeshError


class StepOutput(NamedTuple):
    """What :meth:`ReconModule.model_step` computes for B view pairs (a, b). Renders are ordered
    ``[R_aa; R_ba; R_ab; R_bb]``: R_xy is the mesh predicted from image x seen from view y."""

    loss: Tensor  # () the objective
    loss_sil: Tensor  # () mean of 1 − soft IoU over the four render groups
    loss_lap: Tensor  # () mean Laplacian over the 2B meshes
    loss_flat: Tensor  # () mean flatten loss over the 2B meshes
    loss_color: Tensor | None  # () colour loss (colour models)
    vertices: Tensor  # (B, V, 3) the meshes predicted from views a
    colors: Tensor | None  # (B, V|F, 3) their albedo (colour models)
    silhouettes: Tensor  # (4B, S, S) soft silhouettes in [0, 1]
    rgba: Tensor | None  # (4B, 4, S, S) lit renders, colour not inverted (colour models)

    def group(self, renders: Tensor, name: str) -> Tensor:
        """``renders`` of group ``"aa"``, ``"ba"``, ``"ab"`` or ``"bb"``: the B items of that quarter."""
        size = self.vertices.shape[0]
        start = ("aa", "ba", "ab", "bb").index(name) * size
        return renders[start : start + size]


def check_finite(vertices: Tensor, batch: dict[str, Tensor], step: int) -> None:
    """Raise :class:`~recon.errors.NonFiniteMeshError` naming the batch items (and objects) whose predicted
    ``vertices`` ((2B, V, 3): [M_a; M_b]) are not all finite: checked before they reach the renderer."""
    finite = torch.isfinite(vertices).flatten(1).all(1)
    if bool(finite.all()):
        return
    size = batch["images_a"].shape[0]
    bad = sorted({int(i) % size for i in (~finite).nonzero().flatten()})
    objects = batch.get("object_index")
    named = [f"item {i}" + (f" (object {int(objects[i])})" if objects is not None else "") for i in bad]
    raise NonFiniteMeshError(
        f"step {step}: the predicted vertices of batch {', '.join(named)} are NaN or infinite; "
        "training diverged (try a lower model.lr and resume with --ckpt_path last)"
    )
