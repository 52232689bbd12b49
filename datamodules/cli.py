"""``recon-data``: create and inspect recon-views HDF5 files.

    recon-data synth OUT.h5 [--train N] [--val N] [--test N] [--seed S] [--categories NAME ...]
    recon-data convert-nmr SRC_DIR OUT.h5 [--categories SYNSET ...] [--splits train val test]
    recon-data render SRC OUT.h5 [--dry-run] [--resume] [--workers N] [--views N --elevation DEG ...]
    recon-data info FILE
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from recon.atomic import file_path_problem
from recon.datamodules.h5 import SPLITS, ViewsFileInfo, open_views, read_info
from recon.datamodules.interrupts import stop_signals_interrupt
from recon.errors import UserError, debug, disk_full_cause, full_disk_message


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("objects"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)


def _parser() -> argparse.ArgumentParser:
    from recon.datamodules.render_cli import add_render_parser  # these import torch: after the signal handlers
    from recon.datamodules.synthetic import DEFAULT_COUNTS

    parser = argparse.ArgumentParser(prog="recon-data", description="Create and inspect recon-views HDF5 datasets.")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate a synthetic ShapeNet-like dataset (13 categories)")
    synth.add_argument("out", type=Path, help="output .h5 file")
    for split in SPLITS:
        synth.add_argument(f"--{split}", type=int, default=DEFAULT_COUNTS[split], metavar="N",
                           help=f"{split} objects per category (default {DEFAULT_COUNTS[split]})")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    synth.add_argument("--categories", nargs="+", metavar="NAME", help="category names or synsets (default: all 13)")
    synth.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    synth.add_argument("--workers", type=int, metavar="N", help="worker processes (default: the usable cores)")

    convert = commands.add_parser("convert-nmr", help="convert the NMR/SoftRas {synset}_{split}_*.npz files")
    convert.add_argument("src_dir", type=Path, help="folder with {synset}_{split}_images.npz / _voxels.npz")
    convert.add_argument("out", type=Path, help="output .h5 file")
    convert.add_argument("--categories", nargs="+", metavar="SYNSET",
                         help="synsets or names (default: every category found in SRC_DIR)")
    convert.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to convert")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    add_render_parser(commands)

    info = commands.add_parser("info", help="show the splits × categories object counts and the file's attributes")
    info.add_argument("file", type=Path)
    return parser


def print_info(info: ViewsFileInfo, console: Console) -> None:
    """A table of object counts per category and split, then the file attributes."""
    counts: dict[str, np.ndarray] = {}
    with open_views(info.path) as file:
        for split in info.split_sizes:
            counts[split] = np.bincount(file[split]["category"][()], minlength=len(info.categories))
    table = Table(title=f"{info.path}  ({info.path.stat().st_size / 2**20:.1f} MiB)")
    table.add_column("category")
    table.add_column("synset")
    for split in counts:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for index, category in enumerate(info.categories):
        row = [int(counts[s][index]) for s in counts]
        table.add_row(category.name, category.synset, *map(str, row), str(sum(row)))
    totals = [info.split_sizes[s] for s in counts]
    table.add_row("[bold]all", "", *(f"[bold]{n}" for n in totals), f"[bold]{sum(totals)}", end_section=True)
    console.print(table)
    attributes = Table(title="attributes", show_header=False)
    for key, value in info.attributes.items():
        text = str(value)  # a long list (render's skipped objects) is cut here; `h5dump -a` shows it all
        attributes.add_row(key, text if len(text) <= 300 else f"{text[:300]} … ({len(text)} characters)")
    console.print(attributes)


def _refuse_existing(out: Path, overwrite: bool) -> None:
    """Refuse an output path that cannot take the file before any work: a folder (which ``--overwrite`` must not
    replace), a path below a file, or an existing file without ``--overwrite``."""
    if problem := file_path_problem(out, "output file", "data.h5"):
        raise FileExistsError(problem)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists; pass --overwrite to replace it")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recon-data`` console script; returns the exit status. Ctrl-C and SIGTERM stop any
    command the same way: the work unwinds, its temporary file is removed, and the status is 128 + the
    signal number (130, 143)."""
    output: dict[str, Any] = {}  # the output file and what stood there before, once the command is parsed
    with stop_signals_interrupt() as received:
        try:
            return _run(argv, received, output)
        except BaseException as error:
            # A stop signal can surface as another error when it lands inside a library call that converts
            # exceptions (h5py's type checks raise TypeError): once one was received, it is the reason.
            if not isinstance(error, KeyboardInterrupt) and not received:
                raise
            name = "terminated (SIGTERM)" if received and received[-1] == signal.SIGTERM else "interrupted"
            out = output.get("path")
            written = out is not None and _identity(out) not in (None, output.get("before"))
            outcome = (f"the output file {escape(str(out))} was written before it" if written
                       else "no output file was written")
            Console(stderr=True, soft_wrap=True).print(f"[red]recon-data: {name}[/red]; {outcome}", highlight=False)
            return 128 + (received[-1] if received else signal.SIGINT)


def _identity(path: Path) -> tuple[int, int, int] | None:
    """What tells a file written now from the one that stood there (inode, size, mtime), or None: no file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _run(argv: Sequence[str] | None, received: list[int], output: dict[str, Any]) -> int:
    args = _parser().parse_args(argv)
    if isinstance(getattr(args, "out", None), Path):
        output.update(path=args.out, before=_identity(args.out))
    if args.command in ("synth", "render"):
        from recon.allocator import keep_freed_memory

        keep_freed_memory()  # rendering and voxelizing every view, as `recon fit` does when it synthesizes
    # Not a terminal (a log file, CI): no hard wrapping, so a message stays on one line for grep.
    console = Console(soft_wrap=not sys.stdout.isatty())
    errors = Console(stderr=True, soft_wrap=not sys.stderr.isatty())
    try:
        if getattr(args, "workers", None) is not None and args.workers < 1:
            raise ValueError(f"--workers {args.workers}; expected an integer ≥ 1 (1 works in this process)")
        if args.command == "synth" and not 0 <= args.seed < 2**63:  # numpy's and HDF5's refusals name no option
            raise ValueError(f"--seed {args.seed}; expected an integer ≥ 0 and < 2**63 (it is stored as an int64)")
        if args.command == "synth":
            from recon.datamodules.synthetic import generate_synthetic

            _refuse_existing(args.out, args.overwrite)
            with _progress(console) as progress:
                info = generate_synthetic(args.out, {s: getattr(args, s) for s in SPLITS}, seed=args.seed,
                                          categories=args.categories, progress=progress, workers=args.workers)
            print_info(info, console)
        elif args.command == "render":
            from recon.datamodules.render_cli import run_render

            run_render(args, console)
        elif args.command == "convert-nmr":
            from recon.datamodules.nmr import convert_nmr

            _refuse_existing(args.out, args.overwrite)
            if args.out.resolve().parent == args.src_dir.resolve() and args.out.suffix.lower() == ".npz":
                raise ValueError(f"{args.out}: is among the NMR files it converts; give the output file another name")
            with _progress(console) as progress:
                info = convert_nmr(args.src_dir, args.out, args.categories, args.splits, progress=progress)
            print_info(info, console)
        else:
            print_info(read_info(args.file), console)
    except (FileNotFoundError, FileExistsError, ValueError, UserError) as error:
        if received:  # a stop signal that surfaced as this error: report the stop, not the error
            raise KeyboardInterrupt from error
        if debug():  # RECON_DEBUG=1: the traceback, as `recon` shows it
            raise
        errors.print(f"[red]recon-data {args.command}: error:[/red] {escape(str(error))}", highlight=False)
        return 1
    except OSError as error:  # a full disk under a write that is not the output file's (which names it)
        cause = disk_full_cause(error)
        if cause is None or received or debug():
            raise
        errors.print(f"[red]recon-data {args.command}: error:[/red] {escape(full_disk_message(cause))}",
                     highlight=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
