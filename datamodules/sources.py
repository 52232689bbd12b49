"""Find the meshes of a collection: a folder per category, ShapeNetCore v1 or v2, or a manifest.

``discover(src)`` tells the kinds apart by what it finds:

- a ``.csv`` or ``.jsonl`` file: a manifest, one object per row with ``path`` (relative to the manifest's
  folder or absolute), ``category`` and an optional ``split`` (and ``id``); CSV needs a header row;
- a folder of synset folders holding ``MODEL/models/model_normalized.obj``: ShapeNetCore v2;
- a folder of synset folders holding ``MODEL/model.obj``: ShapeNetCore v1;
- any other folder: one subfolder per category, mesh files anywhere below it (``.obj``, ``.glb``,
  ``.gltf``, ``.ply``, ``.off``, ``.stl``); mesh files directly in the folder form one category named
  after it.

Categories that name one of the 13 ShapeNet categories of the NMR set (by synset id, name or NMR alias)
become that category, so ShapeNetCore's synsets get recon's names; others keep their folder name (or
ShapeNetCore's ``taxonomy.json`` name). Splits not given by a manifest come from a hash of the object id
(:func:`assign_splits`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from recon.datamodules.categories import SHAPENET_CATEGORIES, Category, resolve_categories
from recon.datamodules.h5 import SPLITS

MESH_SUFFIXES: tuple[str, ...] = (".obj", ".glb", ".gltf", ".ply", ".off", ".stl")
MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl")
DEFAULT_SPLIT: tuple[float, float, float] = (0.7, 0.1, 0.2)
# each ShapeNetCore version's mesh file in a model's folder
SHAPENET_MODEL_FILE: dict[str, Path] = {"shapenetcore-v2": Path("models", "model_normalized.obj"),
                                        "shapenetcore-v1": Path("model.obj")}


class MeshSource(NamedTuple):
    """One object: its id (unique in the collection), mesh file, category and split (None: from the hash)."""

    object_id: str
    path: Path
    category: Category
    split: str | None = None


class Collection(NamedTuple):
    """What ``discover`` found: the kind of source, its objects in (category, id) order, their categories, and the
    category folders left out because they hold no mesh (``"lamp/ (3 .fbx files)"``)."""

    kind: str
    root: Path
    objects: list[MeshSource]
    categories: list[Category]
    left_out: list[str] = []


def discover(src: str | os.PathLike[str], categories: Sequence[str] | None = None,
             per_category: int | None = None) -> Collection:
    """The objects of ``src``; ``categories`` keeps some (names or synsets; ShapeNetCore defaults to the 13
    NMR categories, ``["all"]`` takes every one); ``per_category`` keeps the first N ids of each."""
    root = Path(src)
    if per_category is not None and per_category < 1:
        raise ValueError(f"--per-category {per_category}; expected an integer ≥ 1 (objects kept per category)")
    rows: list[tuple[int, MeshSource]] | None = None  # a manifest's objects with their row numbers
    left_out: list[str] = []
    if root.is_file() and root.suffix.lower() in MANIFEST_SUFFIXES:
        rows = _manifest(root)
        kind, objects = "manifest", [o for _, o in rows]
    elif root.is_dir():
        kind = _shapenet_version(root)
        objects = _shapenet(root, kind) if kind else _folder(root)
        kind = kind or "folder"
        left_out = _folders_without_meshes(root, kind, categories)
    elif root.exists():
        raise ValueError(f"{root}: not a folder or a manifest; expected a folder of meshes, ShapeNetCore, "
                         f"or a {'/'.join(MANIFEST_SUFFIXES)} manifest")
    else:
        raise FileNotFoundError(f"{root}: no such file or folder; expected a folder of meshes, ShapeNetCore, "
                                f"or a {'/'.join(MANIFEST_SUFFIXES)} manifest")
    found = sorted({o.category for o in objects})
    if not objects:
        raise ValueError(f"{root}: found no mesh files ({', '.join(MESH_SUFFIXES)}) as a {kind} source")
    if categories and list(categories) != ["all"]:
        try:
            chosen = resolve_categories(categories, found)
        except ValueError as error:
            if not left_out:
                raise
            raise type(error)(f"{error}; these folders hold no mesh file ({', '.join(MESH_SUFFIXES)}): "
                              f"{'; '.join(left_out)}") from None
    elif kind.startswith("shapenetcore") and not categories:
        chosen = [c for c in found if c in SHAPENET_CATEGORIES]
        if not chosen:
            raise ValueError(f"{root}: none of the 13 NMR categories found; pass --categories all or some of "
                             f"{[c.synset for c in found]}")
    else:
        chosen = found
    kept: dict[Category, list[MeshSource]] = {c: [] for c in chosen}
    for item in sorted(objects, key=lambda o: (o.category, o.object_id)):
        if item.category in kept and (per_category is None or len(kept[item.category]) < per_category):
            kept[item.category].append(item)
    chosen_objects = [o for group in kept.values() for o in group]
    if len({o.object_id for o in chosen_objects}) != len(chosen_objects):
        raise ValueError(_repeated_id(root, chosen_objects, rows))
    if len({o.path.resolve() for o in chosen_objects}) != len(chosen_objects):
        raise ValueError(_repeated_file(root, chosen_objects, rows))
    return Collection(kind, root, chosen_objects, chosen, left_out)


def category_for(key: str, names: dict[str, str] | None = None) -> Category:
    """The category a folder name, synset id or manifest entry stands for."""
    try:
        return resolve_categories([key], SHAPENET_CATEGORIES)[0]
    except ValueError:
        return Category(key, (names or {}).get(key, key))


def _hash_position(object_id: str) -> float:
    """The object's place in [0, 1) from a hash of its id: the same on any machine and run."""
    return int.from_bytes(hashlib.sha256(object_id.encode()).digest()[:8], "big") / 2.0**64


def _intervals(fractions: Sequence[float]) -> list[tuple[float, float]]:
    """Each split's interval [lo, hi) of hash positions."""
    bounds = [0.0]
    for fraction in fractions:
        bounds.append(bounds[-1] + fraction)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def assign_split(object_id: str, fractions: Sequence[float] = DEFAULT_SPLIT) -> str:
    """The split of an object from a hash of its id: the same for the same id on any machine and run."""
    position = _hash_position(object_id)
    for split, (_, hi) in zip(SPLITS, _intervals(fractions), strict=True):
        if position < hi:
            return split
    return SPLITS[max(i for i, f in enumerate(fractions) if f > 0)]


def assign_splits(objects: Sequence[MeshSource], fractions: Sequence[float] = DEFAULT_SPLIT) -> list[MeshSource]:
    """``objects`` with their splits: a manifest's where it gives one, else :func:`assign_split`'s.

    A hash split can leave a small category without an object in some split (a 10% val split of 6 objects is
    empty half the time), and then ``recon fit`` refuses the file or the test scores no object of the category.
    So in a category with at least as many objects as splits of non-zero fraction, each such split left empty
    takes one object: from the split that holds the most hashed objects, the one whose hash lies nearest to the
    empty split's share. Categories of many objects are left as hashed (an object keeps its split when objects are
    added), unless a split of theirs is empty too.
    """
    intervals = dict(zip(SPLITS, _intervals(fractions), strict=True))
    wanted = [split for split, fraction in zip(SPLITS, fractions, strict=True) if fraction > 0]
    placed = [o._replace(split=o.split or assign_split(o.object_id, fractions)) for o in objects]
    hashed = {i for i, o in enumerate(objects) if not o.split}
    by_category: dict[Category, list[int]] = {}
    for i, o in enumerate(placed):
        by_category.setdefault(o.category, []).append(i)

    def distance(i: int, split: str) -> float:
        lo, hi = intervals[split]
        position = _hash_position(placed[i].object_id)
        return max(lo - position, position - hi, 0.0)

    for members in by_category.values():
        if len(members) < len(wanted):
            continue
        for split in wanted:
            if any(placed[i].split == split for i in members):
                continue
            movable = [i for i in members if i in hashed]
            sizes = {s: sum(placed[i].split == s for i in movable) for s in SPLITS}
            donor = max(SPLITS, key=lambda s: (sizes[s], -SPLITS.index(s)))
            if sizes[donor] < 2:
                continue  # nothing to give without emptying another split
            moved = min((i for i in movable if placed[i].split == donor),
                        key=lambda i: (distance(i, split), placed[i].object_id))
            placed[moved] = placed[moved]._replace(split=split)
    return placed


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` → (train, val, test) fractions; they must be ≥ 0 and sum to 1."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(map(math.isfinite, values)) or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"--split {text!r}; expected three fractions train,val,test that sum to 1, e.g. 0.7,0.1,0.2")
    return values  # type: ignore[return-value]


def _shapenet_version(root: Path) -> str | None:
    for synset in sorted(p for p in root.iterdir() if p.is_dir()):
        for model in sorted(p for p in synset.iterdir() if p.is_dir())[:5]:
            if (model / "models" / "model_normalized.obj").is_file():
                return "shapenetcore-v2"
            if (model / "model.obj").is_file():
                return "shapenetcore-v1"
    return None


def _shapenet(root: Path, kind: str) -> list[MeshSource]:
    inner = SHAPENET_MODEL_FILE[kind]
    names = _taxonomy_names(root)
    objects = []
    for synset in sorted(p for p in root.iterdir() if p.is_dir()):
        category = category_for(synset.name, names)
        for model in sorted(p for p in synset.iterdir() if p.is_dir()):
            if (model / inner).is_file():
                objects.append(MeshSource(f"{synset.name}/{model.name}", model / inner, category))
    return objects


def _taxonomy_names(root: Path) -> dict[str, str]:
    """synset → first name from ShapeNetCore's ``taxonomy.json``, when the download has it."""
    try:
        entries = json.loads((root / "taxonomy.json").read_text())
        return {e["synsetId"]: e["name"].split(",")[0].strip() for e in entries}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _meshes_below(folder: Path) -> list[Path]:
    # a broken link is an object too: skipped when rendered, with the reason, rather than left out unseen
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and (p.is_file() or p.is_symlink()))


def _folder(root: Path) -> list[MeshSource]:
    objects = []
    loose = [p for p in root.iterdir() if (p.is_file() or p.is_symlink()) and p.suffix.lower() in MESH_SUFFIXES]
    if loose:
        category = category_for(root.name)
        objects += [MeshSource(f"{root.name}/{p.stem}", p, category) for p in sorted(loose)]
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        category = category_for(folder.name)
        for path in _meshes_below(folder):
            objects.append(MeshSource(f"{folder.name}/{path.relative_to(folder).with_suffix('').as_posix()}",
                                      path, category))
    return objects


def _folders_without_meshes(root: Path, kind: str, categories: Sequence[str] | None) -> list[str]:
    """The category folders of ``root`` that give no object, each with what it holds instead: a category
    whose meshes are in a format recon does not read (or were not copied) would otherwise vanish from the
    dataset without a word. Folders of categories left out by ``categories`` are not named."""
    def named(name: str) -> bool:
        if categories and list(categories) != ["all"]:
            return category_for(name) in {category_for(str(c)) for c in categories}
        # ShapeNetCore without --categories keeps the 13 NMR categories
        return kind == "folder" or bool(categories) or category_for(name) in SHAPENET_CATEGORIES

    left_out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not named(folder.name):
            continue
        if kind in SHAPENET_MODEL_FILE:
            if any((model / SHAPENET_MODEL_FILE[kind]).is_file() for model in folder.iterdir() if model.is_dir()):
                continue
        elif _meshes_below(folder):
            continue
        others = Counter(p.suffix.lower() or "no-suffix" for p in folder.rglob("*") if p.is_file())
        held = ", ".join(f"{n} {suffix} file{'s' if n > 1 else ''}" for suffix, n in others.most_common(3))
        left_out.append(f"{folder.name}/ ({held + (', …' if len(others) > 3 else '') if others else 'empty'})")
    return left_out


def _manifest(path: Path) -> list[tuple[int, MeshSource]]:
    """The manifest's objects with their row numbers (a CSV's header is row 1, a JSON-lines file's rows are lines)."""
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which would stick to the first name
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as file:
                reader = csv.DictReader(file)
                columns = [str(name).strip() for name in reader.fieldnames or []]
                if "path" not in columns or "category" not in columns:
                    raise ValueError(f"{path}: its header names the columns {columns}; expected a header row "
                                     "path,category (and optionally split, id), comma-separated")
                rows = list(enumerate(reader, start=2))
        else:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
            rows = [(number, json.loads(line)) for number, line in enumerate(lines, start=1) if line.strip()]
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable manifest ({error})") from None
    objects = []
    for number, row in rows:
        if isinstance(row, dict):  # "path, category": names and values padded after the commas
            row = {str(k).strip(): v.strip() if isinstance(v, str) else v for k, v in row.items() if k is not None}
        if not isinstance(row, dict) or not row.get("path") or not row.get("category"):
            raise ValueError(f"{path}: row {number} has no 'path' or no 'category'; expected columns "
                             "path, category and optionally split, id")
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            raise ValueError(f"{path}: row {number} has split {split!r}; expected one of {list(SPLITS)}")
        mesh = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
        object_id = str(row.get("id") or Path(row["path"]).with_suffix("").as_posix())
        objects.append((number, MeshSource(object_id, mesh, category_for(str(row["category"]).strip()), split)))
    return objects


def _repeated_id(root: Path, objects: list[MeshSource], rows: list[tuple[int, MeshSource]] | None) -> str:
    """Which objects share an id, and what to change: the manifest's rows, or the folder's files."""
    repeated = _first_repeat([o.object_id for o in objects])
    if rows is not None:
        numbers = [str(n) for n, o in rows if o.object_id == repeated and o in objects]
        return (f"{root}: rows {', '.join(numbers[:-1])} and {numbers[-1]} give the same object id {repeated!r}; "
                "give each row a unique 'id'")
    paths = [o.path for o in objects if o.object_id == repeated]
    return (f"{root}: {paths[0]} and {paths[1]} give the same object id {repeated!r} (the path below the category "
            "folder, without its suffix); rename one of them, or list the files in a manifest with an 'id' column")


def _repeated_file(root: Path, objects: list[MeshSource], rows: list[tuple[int, MeshSource]] | None) -> str:
    """Which objects are one mesh file (two manifest rows, or a link beside its target): one object in two
    places, maybe in two splits, where a test would score objects it trained on."""
    repeated = _first_repeat([str(o.path.resolve()) for o in objects])
    twice = [o for o in objects if str(o.path.resolve()) == repeated]
    if rows is not None:
        numbers = [str(n) for n, o in rows if o in twice]
        return (f"{root}: rows {', '.join(numbers[:-1])} and {numbers[-1]} list the same mesh file {repeated} (ids "
                f"{', '.join(repr(o.object_id) for o in twice)}): one object would be rendered twice, in two splits "
                "if the rows put it there; list each file once")
    return (f"{root}: {twice[0].path} and {twice[1].path} are the same mesh file {repeated}: one object would be "
            "rendered twice, maybe into two splits; remove the link")


def _first_repeat(ids: list[str]) -> str:
    seen: set[str] = set()
    for object_id in ids:
        if object_id in seen:
            return object_id
        seen.add(object_id)
    return ""
