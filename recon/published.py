"""Published figures the encoder table is shown beside (never mixed with our own runs).

Voxel IoU at 32³ on the NMR/SoftRas ShapeNet renderings, 13 categories, multi-class models, as listed in
SoftRas's Table 1. The per-category rows are recalled figures whose means are consistent with the stated
means; the means 0.6234 (silhouette) and 0.6464 (full) are the verified ones (see the project's reference notes).
"""

from __future__ import annotations

CATEGORIES = (
    "airplane", "bench", "cabinet", "car", "chair", "display", "lamp",
    "loudspeaker", "rifle", "sofa", "table", "telephone", "watercraft",
)


def _row(values: tuple[float, ...], mean: float) -> dict[str, float]:
    return {**dict(zip(CATEGORIES, values, strict=True)), "mean": mean}


PUBLISHED: dict[str, dict[str, float]] = {
    "NMR (Kato 2018)": _row(
        (0.6172, 0.4998, 0.7143, 0.7095, 0.4990, 0.5831, 0.4126, 0.6536, 0.6322, 0.6735, 0.4829, 0.7777, 0.5645),
        0.6015,
    ),
    "SoftRas, silhouette": _row(
        (0.6419, 0.5080, 0.7116, 0.7697, 0.5270, 0.6156, 0.4628, 0.6654, 0.6811, 0.6878, 0.4487, 0.7895, 0.5953),
        0.6234,
    ),
    "SoftRas, full": _row(
        (0.6670, 0.5429, 0.7382, 0.7876, 0.5470, 0.6298, 0.4580, 0.6807, 0.6702, 0.7220, 0.5325, 0.8127, 0.6145),
        0.6464,
    ),
}

# The reproduction this project grew from (mean test loss, mean IoU), on the real ShapeNet data.
ORIGINAL_PROJECT: dict[str, tuple[float, float]] = {
    "Baseline": (0.2043, 0.5462),
    "ResNet-like": (0.2096, 0.5403),
    "Attention": (0.2053, 0.5389),
}
