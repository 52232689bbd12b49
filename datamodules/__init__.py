"""recon's data path: the recon-views HDF5 format, view-pair datasets and samplers, the Lightning
DataModule, the NMR converter and the synthetic ShapeNet-like generator (``recon-data``).

Names are imported on first use (PEP 562), so ``recon-data`` and the format helpers start without
importing Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "recon.datamodules.categories": ["SHAPENET_CATEGORIES", "Category", "resolve_categories"],
    "recon.datamodules.datamodule": ["ViewPairDataModule"],
    "recon.datamodules.dataset": ["ViewPairDataset", "images_to_float", "view_eyes"],
    "recon.datamodules.h5": ["FORMAT", "SPLITS", "VERSION", "ViewsFileInfo", "ViewsFormatError", "ViewsLayout",
                             "ViewsWriter", "open_views", "read_info"],
    "recon.datamodules.nmr": ["convert_nmr"],
    "recon.datamodules.samplers": ["EvalPairSampler", "PairBatchSampler", "TrainPairSampler", "other_view"],
    "recon.datamodules.synthetic": ["generate_synthetic"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "Category",
    "EvalPairSampler",
    "FORMAT",
    "PairBatchSampler",
    "SHAPENET_CATEGORIES",
    "SPLITS",
    "TrainPairSampler",
    "VERSION",
    "ViewPairDataModule",
    "ViewPairDataset",
    "ViewsFileInfo",
    "ViewsFormatError",
    "ViewsLayout",
    "ViewsWriter",
    "convert_nmr",
    "generate_synthetic",
    "images_to_float",
    "open_views",
    "other_view",
    "read_info",
    "resolve_categories",
    "view_eyes",
]

if TYPE_CHECKING:
    from recon.datamodules.categories import SHAPENET_CATEGORIES, Category, resolve_categories
    from recon.datamodules.datamodule import ViewPairDataModule
    from recon.datamodules.dataset import ViewPairDataset, images_to_float, view_eyes
    from recon.datamodules.h5 import (
        FORMAT,
        SPLITS,
        VERSION,
        ViewsFileInfo,
        ViewsFormatError,
        ViewsLayout,
        ViewsWriter,
        open_views,
        read_info,
    )
    from recon.datamodules.nmr import convert_nmr
    from recon.datamodules.samplers import EvalPairSampler, PairBatchSampler, TrainPairSampler, other_view
    from recon.datamodules.synthetic import generate_synthetic


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'recon.datamodules' has no attribute {name!r}")
    value = getattr(import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
