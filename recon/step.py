"""What one step of :class:`~recon.module.ReconModule` computes, and the check on its meshes."""

from __future__ import annotations

from typing import Any, NamedTuple

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


NAMED_ITEMS = 5  # batch items a non-finite mesh error names (a whole batch of a broken checkpoint is 32)


def check_finite(vertices: Tensor, batch: dict[str, Any], step: int, restored: torch.nn.Module | None = None) -> None:
    """Raise :class:`~recon.errors.NonFiniteMeshError` naming the batch items (and objects, or input images) whose
    predicted ``vertices`` ((2B, V, 3): [M_a; M_b], or (B, V, 3) for predict's ``images``) are not all finite:
    checked before they reach the renderer or a file. ``restored``: None in a fit (training diverged), else the
    model a test, validate or predict restored, whose weights the message describes (:func:`weights_note`)."""
    finite = torch.isfinite(vertices).flatten(1).all(1)
    if bool(finite.all()):
        return
    size = (batch["images_a"] if "images_a" in batch else batch["images"]).shape[0]
    bad = sorted({int(i) % size for i in (~finite).nonzero().flatten()})
    objects, names = batch.get("object_index"), batch.get("name")
    named = [f"item {i}" + (f" (object {int(objects[i])})" if objects is not None else "")
             + (f" ({names[i]})" if names is not None else "") for i in bad[:NAMED_ITEMS]]
    if len(bad) > NAMED_ITEMS:
        named[-1] += f" and {len(bad) - NAMED_ITEMS} more"
    if restored is None:
        raise NonFiniteMeshError(
            f"step {step}: the predicted vertices of batch {', '.join(named)} are NaN or infinite; "
            "training diverged (try a lower model.lr and resume with --ckpt_path last)"
        )
    raise NonFiniteMeshError(f"the model predicts NaN or infinite vertices for batch {', '.join(named)}; "
                             f"{weights_note(restored)}")


def weights_note(module: torch.nn.Module) -> str:
    """What a restored model's weights say about non-finite predictions: the tensors holding NaN or infinity (a
    checkpoint saved after training diverged), or that they are finite."""
    bad = [name for name, tensor in module.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if not bad:
        return "its weights are finite, so these inputs drive it out of range"
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return (f"the checkpoint's weights hold NaN or infinite values ({shown}): it was saved after training "
            "diverged; evaluate an earlier checkpoint, or resume its fit from one with a lower model.lr")
