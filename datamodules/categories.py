"""The 13 ShapeNet categories of the NMR/SoftRas rendering set: synset ids, names, name lookup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from recon.errors import ConfigError


class Category(NamedTuple):
    """One ShapeNet category: its WordNet synset id (the NMR file prefix) and a human name."""

    synset: str
    name: str


# Order and synsets of SoftRas's evaluation; names follow SoftRas (lower-cased), with the NMR names
# accepted as aliases when resolving (docs/conventions.md#dataset).
SHAPENET_CATEGORIES: tuple[Category, ...] = (
    Category("02691156", "airplane"),
    Category("02828884", "bench"),
    Category("02933112", "cabinet"),
    Category("02958343", "car"),
    Category("03001627", "chair"),
    Category("03211117", "display"),
    Category("03636649", "lamp"),
    Category("03691459", "loudspeaker"),
    Category("04090263", "rifle"),
    Category("04256520", "sofa"),
    Category("04379243", "table"),
    Category("04401088", "telephone"),
    Category("04530566", "watercraft"),
)

_NMR_ALIASES = {"dresser": "cabinet", "speaker": "loudspeaker", "phone": "telephone", "vessel": "watercraft"}


def resolve_categories(requested: Sequence[str], available: Sequence[Category]) -> list[Category]:
    """Map user-given names or synset ids to entries of ``available``, keeping ``available``'s order.

    Raises ``ValueError`` naming every unknown or unavailable entry and listing what is available.
    """
    by_key: dict[str, Category] = {}
    for category in available:
        by_key[category.synset] = category
        by_key[category.name.lower()] = category
    chosen: set[Category] = set()
    unknown: list[str] = []
    for entry in requested:
        key = entry.strip().lower()
        key = _NMR_ALIASES.get(key, key)
        if key in by_key:
            chosen.add(by_key[key])
        else:
            unknown.append(entry)
    if unknown:
        listing = ", ".join(f"{c.name} ({c.synset})" for c in available)
        raise ConfigError(f"unknown or unavailable categories {unknown}; available: {listing}")
    return [c for c in available if c in chosen]
