"""The ``recon-data render`` subcommand: its options, the dry run's listing and the end summary."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recon.datamodules.h5 import MIN_VIEWS, SPLITS, ViewsLayout
from recon.datamodules.meshes import NORMALIZATIONS
from recon.datamodules.shards import partial_folder, plural
from recon.datamodules.sources import MESH_SUFFIXES, Collection, discover, parse_split
from recon.datamodules.views import SUPERSAMPLE, ViewSettings

SKIPPED_SHOWN = 20  # the summary lists this many skipped objects; the file's `skipped` attribute has them all
LOOK_ALONG_UP = 1e-4  # |cos(elevation)| below this: the camera looks along +y (90° and 270°: no x axis)


def add_render_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``render`` to ``recon-data``'s subcommands."""
    default = ViewsLayout()
    render = commands.add_parser(
        "render", help="render a mesh collection (a folder per category, ShapeNetCore v1/v2, a manifest)",
        description="Render meshes into a recon-views file in the NMR dataset's camera and conventions.")
    render.add_argument("src", type=Path, help="folder with one subfolder per category, ShapeNetCore v1/v2, "
                        "or a .csv/.jsonl manifest (path, category[, split, id])")
    render.add_argument("out", type=Path, help="output .h5 file")
    render.add_argument("--dry-run", action="store_true", help="list what was found and exit")
    render.add_argument("--categories", nargs="+", metavar="NAME",
                        help="names or synsets to keep (ShapeNetCore default: the 13 NMR categories; 'all')")
    render.add_argument("--per-category", type=int, metavar="N", help="keep the first N objects of each category")
    render.add_argument("--split", default="0.7,0.1,0.2", metavar="TR,VA,TE",
                        help="train,val,test fractions, by a hash of each object id (default 0.7,0.1,0.2); "
                        "a manifest's split column wins")
    render.add_argument("--normalize", choices=NORMALIZATIONS, default="longest",
                        help="longest: bounding box centred, longest side 1 (default, NMR); diagonal: "
                        "diagonal 1 (ShapeNetCore v2); none: keep coordinates, which must lie in (-0.5, 0.5)³")
    render.add_argument("--clip", action="store_true",
                        help="with --normalize none: clamp vertices outside the cube instead of skipping the object")
    render.add_argument("--views", type=int, default=default.num_views, metavar="N",
                        help=f"views per object, evenly spaced in azimuth (default {default.num_views})")
    render.add_argument("--elevation", type=float, default=default.elevation, metavar="DEG",
                        help=f"camera elevation in degrees (default {default.elevation:g})")
    render.add_argument("--distance", type=float, default=default.distance, metavar="D",
                        help=f"camera distance from the origin (default {default.distance})")
    render.add_argument("--image-size", type=int, default=default.image_size, metavar="S",
                        help=f"image side in pixels (default {default.image_size})")
    render.add_argument("--supersample", type=int, default=SUPERSAMPLE, metavar="K",
                        help=f"anti-aliasing: render at K× the size and average (default {SUPERSAMPLE})")
    render.add_argument("--workers", type=int, metavar="N", help="worker processes (default: the usable cores)")
    render.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.h5.partial/")
    render.add_argument("--overwrite", action="store_true", help="replace OUT and discard an interrupted run")


def settings_from(args: argparse.Namespace) -> ViewSettings:
    """The rendering settings of the options, validated."""
    if args.views < MIN_VIEWS:
        raise ValueError(f"--views {args.views}; expected an integer ≥ {MIN_VIEWS}: recon trains on pairs of views of "
                         "an object (a view and another)")
    for name, value, low in (("--image-size", args.image_size, 8), ("--supersample", args.supersample, 1)):
        if value < low:
            raise ValueError(f"{name} {value}; expected an integer ≥ {low}")
    if not (math.isfinite(args.distance) and args.distance > 0.9):
        raise ValueError(f"--distance {args.distance}; expected a finite number > 0.9 (the camera must stay outside "
                         "the object)")
    if not math.isfinite(args.elevation):
        raise ValueError(f"--elevation {args.elevation}; expected a finite angle in degrees")
    if abs(math.cos(math.radians(args.elevation))) < LOOK_ALONG_UP:
        # the look-at camera takes its x axis from up (+y) × view direction: zero when it looks straight along +y
        raise ValueError(f"--elevation {args.elevation:g}; the camera would look straight along the up axis (+y) "
                         "and have no orientation: expected an angle short of ±90 (e.g. 89.9 or -89.9)")
    if args.clip and args.normalize != "none":
        raise ValueError("--clip only applies with --normalize none")
    layout = ViewsLayout(image_size=args.image_size, num_views=args.views, distance=args.distance,
                         elevation=args.elevation, azimuth_step=-360.0 / args.views)
    return ViewSettings(layout, args.supersample, args.normalize, args.clip)


def print_collection(collection: Collection, split: tuple[float, float, float], console: Console) -> None:
    """The dry run: source kind, objects per category and split, a few paths."""
    from recon.datamodules.rendering import plan

    objects = plan(collection, split)
    counts = Counter((o.category, o.split) for o in objects)
    table = Table(title=f"{collection.root}: {collection.kind}, {plural(len(objects), 'object')}")
    for column in ("category", "synset", *SPLITS, "total"):
        table.add_column(column, justify="left" if column in ("category", "synset") else "right")
    for category in collection.categories:
        row = [counts[(category, s)] for s in SPLITS]
        table.add_row(category.name, category.synset, *map(str, row), str(sum(row)))
    console.print(table)
    for item in collection.objects[:3]:
        console.print(f"  {escape(item.object_id)}: {escape(str(item.path))}", highlight=False)
    missing = [item for item in collection.objects if not item.path.is_file()]
    if missing:
        shown = ", ".join(str(item.path) for item in missing[:3]) + (" ..." if len(missing) > 3 else "")
        console.print(f"[yellow]warning:[/yellow] {plural(len(missing), 'mesh file')} listed "
                      f"{'is' if len(missing) == 1 else 'are'} missing (a broken link, a mistyped manifest path) and "
                      f"will be skipped: {escape(shown)}", highlight=False)
    _warn_empty_splits({s: sum(counts[(c, s)] for c in collection.categories) for s in SPLITS}, console)
    _warn_left_out(collection, console)


def _warn_left_out(collection: Collection, console: Console) -> None:
    """One line naming the category folders that hold no mesh recon reads, which the dataset will not have."""
    if collection.left_out:
        shown = "; ".join(collection.left_out[:SKIPPED_SHOWN]) + (
            f"; … {len(collection.left_out) - SKIPPED_SHOWN} more" if len(collection.left_out) > SKIPPED_SHOWN else "")
        console.print(f"[yellow]warning:[/yellow] {plural(len(collection.left_out), 'category folder')} "
                      f"{'holds' if len(collection.left_out) == 1 else 'hold'} no mesh file "
                      f"({', '.join(MESH_SUFFIXES)}) and {'is' if len(collection.left_out) == 1 else 'are'} left out: "
                      f"{escape(shown)}", highlight=False)


def _warn_empty_splits(sizes: dict[str, int], console: Console) -> None:
    """One line when a split holds no object: ``recon fit`` needs train and val objects, ``recon test`` test ones."""
    empty = [split for split in SPLITS if not sizes.get(split)]
    if empty and any(sizes.values()):
        console.print(f"[yellow]warning:[/yellow] the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} "
                      f"hold{'' if len(empty) > 1 else 's'} no object: recon fit needs train and val objects and "
                      "recon test needs test objects; add objects, change --split, or give splits in a manifest",
                      highlight=False)


def _refuse_inputs(out: Path, collection: Collection) -> None:
    """``ValueError`` when the output path is the source (a manifest) or one of its mesh files, which writing it
    (with ``--overwrite``) would replace."""
    target = Path(out).resolve()
    if target == Path(collection.root).resolve():
        raise ValueError(f"{out}: is the source {collection.root}; give the output file another name")
    for item in collection.objects:
        if target == item.path.resolve():
            raise ValueError(f"{out}: is the mesh file of object {item.object_id}; give the output file another name")


def run_render(args: argparse.Namespace, console: Console) -> None:
    """``recon-data render``: discover, then dry-run or render and summarise."""
    from recon.datamodules.cli import _progress, _refuse_existing, print_info
    from recon.datamodules.rendering import render_collection

    split = parse_split(args.split)
    settings = settings_from(args)
    collection = discover(args.src, args.categories, args.per_category)
    if args.dry_run:
        print_collection(collection, split, console)
        return
    _warn_left_out(collection, Console(stderr=True, soft_wrap=True))
    _refuse_inputs(args.out, collection)
    # --resume of a run that was to replace OUT (--overwrite), or was stopped as it removed its finished objects
    # after writing OUT, replaces OUT: the shards' run record says which collection and settings they are
    _refuse_existing(args.out, args.overwrite or (args.resume and partial_folder(args.out).exists()))
    if args.resume and not partial_folder(args.out).exists():
        # said, not refused: a script may always pass --resume; but a mistyped OUT must not restart hours unseen
        notice = (f"--resume: no interrupted run to continue for {args.out} (no {partial_folder(args.out)}); "
                  "rendering every object")
        Console(stderr=True, soft_wrap=True).print(escape(notice), highlight=False)
    try:
        with _progress(console) as progress:
            summary = render_collection(
                collection, args.out, settings, split, args.workers, args.resume, args.overwrite, progress,
                lambda line: Console(stderr=True, soft_wrap=True).print(escape(line), highlight=False))
    except KeyboardInterrupt:
        shards = partial_folder(args.out)
        if shards.exists():
            Console(stderr=True).print(f"finished objects are kept in {escape(str(shards))}; rerun with --resume "
                                       "to continue", highlight=False)
        raise
    print_info(summary.info, console)
    colors = ", ".join(f"{k} {n}" for k, n in sorted(summary.colors.items()))
    console.print(f"rendered {plural(summary.rendered, 'object')} (colours: {colors}); skipped "
                  f"{len(summary.skipped)}", highlight=False)
    for object_id, path, reason in summary.skipped[:SKIPPED_SHOWN]:
        console.print(f"  skipped {escape(object_id)} ({escape(path)}): {escape(reason)}", highlight=False)
    if len(summary.skipped) > SKIPPED_SHOWN:
        console.print(f"  ... {len(summary.skipped) - SKIPPED_SHOWN} more in the file's 'skipped' attribute")
    _warn_empty_splits(summary.info.split_sizes, console)
    if summary.clipped:
        shown = ", ".join(summary.clipped[:SKIPPED_SHOWN]) + (" ..." if len(summary.clipped) > SKIPPED_SHOWN else "")
        console.print(f"[yellow]warning:[/yellow] {plural(len(summary.clipped), 'object')} reached outside "
                      f"(-0.5, 0.5)³ and {'was' if len(summary.clipped) == 1 else 'were'} clamped onto it (--clip): "
                      f"{escape(shown)}", highlight=False)
