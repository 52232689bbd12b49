"""Published figures the encoder table is shown beside (never mixed with our own runs), each with its source.

Mean voxel IoU at 32³ over the 13 ShapeNet categories of the NMR/SoftRas renderings, multi-class models
(docs/conventions.md#published-figures). Only means whose source a reader can open are listed: per-category
rows circulate for these methods, but none could be checked against a primary source, so none is printed.
"""

from __future__ import annotations

from typing import NamedTuple


class PublishedFigure(NamedTuple):
    """One published mean IoU (a fraction in [0, 1]) and where it is stated."""

    method: str
    mean_iou: float
    source: str


PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure(
        "NMR", 0.6031,
        "Kato et al. 2018, NMR README at github.com/hiroharu-kato/mesh_reconstruction (its per-category "
        "table averages to 0.6015)",
    ),
    PublishedFigure("SoftRas, silhouette", 0.6234, "SoftRas paper (Liu et al. 2019, arXiv:1904.01786), Table 1"),
    PublishedFigure(
        "SoftRas, full", 0.6464, "SoftRas paper, Table 1; silhouette + shading, on the authors' own renders"
    ),
    PublishedFigure(
        "SoftRas re-run, silhouette", 0.6184,
        "github.com/ShichenLiu/SoftRas/issues/75: a user's 61.838 with the SoftRas code on the NMR data after "
        "250k steps; the author expects over 62 with that data",
    ),
)

# The reproduction this project grew from (mean test loss, mean IoU), on the real ShapeNet data.
ORIGINAL_PROJECT: dict[str, tuple[float, float]] = {
    "Baseline": (0.2043, 0.5462),
    "ResNet-like": (0.2096, 0.5403),
    "Attention": (0.2053, 0.5389),
}
