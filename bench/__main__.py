"""Run every benchmark (or some), print one table per benchmark and write bench/results.json.

    python -m bench [--quick] [--only render fused voxelize data train_step dataset_render] [--out bench/results.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from recon.allocator import keep_freed_memory, keeps_freed_memory
from recon.atomic import write_text

BENCHMARKS = ("render", "fused", "voxelize", "data", "train_step", "dataset_render")


def machine() -> dict:
    """Where the figures come from: they only compare within one machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "allocator": allocator(),
    }


def allocator() -> str:
    """The allocator the figures were measured with (see :mod:`recon.allocator`)."""
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return "jemalloc"
    return "glibc malloc, freed memory kept" if keeps_freed_memory() else "system malloc"


def print_rows(console: Console, name: str, rows: list[dict]) -> None:
    if not rows:
        return
    columns = [k for k in rows[0] if k != "bench"]
    for row in rows[1:]:
        columns += [k for k in row if k != "bench" and k not in columns]
    table = Table(title=name, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(_fmt(row.get(c, "")) for c in columns))
    console.print(table)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    args = parser.parse_args(argv)

    keep_freed_memory()  # as the recon command line does; RECON_KEEP_FREED_MEMORY=0 measures without it
    console = Console(width=max(Console().width, 150))
    info = machine()
    console.print(f"[bold]recon benchmarks[/] on {info['cpu']} ({info['cores']} cores, torch {info['torch']}, "
                  f"{info['cuda'] or 'no CUDA'}, {info['allocator']})")
    results: dict = {"machine": info, "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "results": {}}
    for name in args.only:
        try:
            module = importlib.import_module(f"bench.bm_{name}")
        except ModuleNotFoundError as err:
            console.print(f"[yellow]skipping {name}: {err}[/]")
            continue
        started = time.perf_counter()
        rows = module.run(quick=args.quick)
        results["results"][name] = rows
        print_rows(console, f"{name}  ({time.perf_counter() - started:.0f} s)", rows)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(results, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
