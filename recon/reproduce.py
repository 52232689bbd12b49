"""``make reproduce-table``: the encoder comparison in one command.

Trains and tests every encoder of a profile (and the baseline with colour supervision, ``baseline+color``)
with the same data, seeds, budget and recipe, then writes ``results/table.md`` and ``results/table.csv`` (mean
loss, mean IoU, PSNR, per-category IoU) and prints the table, with the published means and their sources
below it.

    python -m recon.reproduce --profile quick [--data data/shapenet.h5] [--redo] [-- extra recon flags]

A profile is a YAML file under ``configs/table/`` naming the LightningCLI configs to compose, the encoders
(each one more config), the seeds and any extra flags. Each (encoder, seed) run lives in
``runs/table/<profile>/<encoder>-seed<seed>/``; a run whose results exist is skipped unless ``--redo`` (a run
finished with other settings is refused, not reused), and an interrupted run resumes from its ``last.ckpt``.
All runs of one table share the W&B group ``table-<profile>`` so the dashboard compares them side by side.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recon.atomic import file_above, write_text
from recon.datamodules.categories import SHAPENET_CATEGORIES
from recon.lifetime import STOPPED, child_env
from recon.published import ORIGINAL_PROJECT, PUBLISHED
from recon.report import markdown_table, rich_table
from recon.shipped import shipped_config

ENTRY = "table-entry.json"
CATEGORIES = tuple(category.name for category in SHAPENET_CATEGORIES)


class Terminated(Exception):
    """SIGTERM reached the table (a scheduler ending the job), raised where it was waiting."""


class RunInterrupted(Exception):
    """A run stopped on Ctrl-C or SIGTERM (its last.ckpt saved, for a fit); the table stops too."""

    def __init__(self, run_dir: Path, status: int) -> None:
        super().__init__(f"{run_dir}: {STOPPED.get(status, 'interrupted')}")
        self.run_dir = run_dir
        self.status = 143 if STOPPED.get(status) == "SIGTERM" else 130


@dataclass(frozen=True)
class TableProfile:
    """One way to build the table: configs composed for every run, encoders, seeds, extra flags."""

    name: str
    configs: list[str]
    encoders: dict[str, str]
    seeds: list[int]
    args: list[str]
    description: str = ""


def load_profile(name_or_path: str, config_dir: Path = Path("configs/table")) -> TableProfile:
    """Read ``configs/table/<name>.yaml`` (or a path); refuse a malformed one with a message naming it.

    The profile and the configs it names are the working folder's (the repository's root, or a project's own
    ``configs/``) where they exist, else the copies recon ships, so that the table builds from any folder."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = _here_or_shipped(config_dir / f"{name_or_path}.yaml")
    if not path.is_file():
        folders = [config_dir, *filter(None, [shipped_config(config_dir)])]
        known = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
        raise FileNotFoundError(f"{path}: no such table profile; known profiles: {', '.join(known) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not a YAML table profile ({' '.join(str(error).split())})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a table profile is a mapping of configs, encoders and seeds, got {raw!r}")
    missing = [key for key in ("configs", "encoders", "seeds") if key not in raw]
    if missing:
        raise ValueError(f"{path}: table profile lacks {', '.join(missing)} (expected configs, encoders, seeds)")
    shapes = {
        "configs": (_strings(raw["configs"]), "a list of config files, e.g. [configs/default.yaml]"),
        "encoders": (isinstance(raw["encoders"], dict) and bool(raw["encoders"])
                     and _strings(list(raw["encoders"].values())),
                     "a mapping of row names to encoder configs, e.g. {baseline: configs/encoder/baseline.yaml}"),
        "seeds": (isinstance(raw["seeds"], list) and bool(raw["seeds"])
                  and all(isinstance(seed, int) and not isinstance(seed, bool) for seed in raw["seeds"]),
                  "a list of integers, e.g. [0, 1]"),
        "args": (_strings(raw.get("args", [])) or raw.get("args") == [], "a list of recon flags"),
    }
    for key, (right, expected) in shapes.items():
        if not right:
            raise ValueError(f"{path}: {key} is {raw.get(key)!r}; expected {expected}")
    for config in [*raw["configs"], *raw["encoders"].values()]:
        if not _here_or_shipped(Path(config)).is_file():
            raise FileNotFoundError(f"{path}: names config {config}, which does not exist")
    return TableProfile(
        name=path.stem,
        configs=[str(_here_or_shipped(Path(config))) for config in raw["configs"]],
        encoders={name: str(_here_or_shipped(Path(config))) for name, config in raw["encoders"].items()},
        seeds=[int(s) for s in raw["seeds"]],
        args=[str(a) for a in raw.get("args", [])],
        description=str(raw.get("description", "")),
    )


def _here_or_shipped(path: Path) -> Path:
    """``path`` where the working folder has it, else recon's copy of that ``configs/…`` file (as it is, where
    recon ships none): a table run from the repository's root records the same relative paths as before."""
    return path if path.is_file() else shipped_config(path) or path


def _strings(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


class TableError(Exception):
    """A table that cannot be built as asked (one line, exit status 1)."""


def run_encoder(
    profile: TableProfile, encoder: str, seed: int, root: Path, data: str | None, redo: bool, extra: Sequence[str]
) -> dict:
    """Fit then test one (encoder, seed) in its own run folder; return its results with the training time."""
    run_dir = root / f"{encoder}-seed{seed}"
    entry = run_dir / ENTRY
    common = _command(profile, encoder, seed, run_dir, data, extra)
    if entry.is_file() and not redo:
        finished = json.loads(entry.read_text())
        _check_same_run(run_dir, finished.get("command"), common)
        return finished
    env = {
        **os.environ,
        "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
        "WANDB_RUN_GROUP": f"table-{profile.name}",
        "WANDB_TAGS": f"table,{profile.name},{encoder}",
    }
    last = run_dir / "checkpoints" / "last.ckpt"
    fit_done = run_dir / "fit.done"
    partial = run_dir / "fit.partial"  # the seconds of the interrupted attempts, added to the one that finishes
    if redo:
        fit_done.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    if not fit_done.is_file():
        resume = ["--ckpt_path", "last"] if last.is_file() and not redo else []
        before = _earlier_attempts(run_dir, partial, last, common) if resume and partial.is_file() else 0.0
        # written before the fit starts: a table killed with it (kill -9) leaves when the attempt began, and its
        # fit's last.ckpt, saved as it stops, when it ended
        made, previous = not run_dir.exists(), partial.read_text() if partial.is_file() else None
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(partial, json.dumps({"train_seconds": before, "started": time.time(), "command": common}))
        started = time.perf_counter()
        try:
            _run([sys.executable, "-m", "recon", "fit", *common, *resume], env, run_dir)
        except RunInterrupted:
            seconds = before + time.perf_counter() - started
            write_text(partial, json.dumps({"train_seconds": seconds, "command": common}))
            raise
        except SystemExit:  # a fit that failed (a setting refused before it made anything): no attempt to add
            if previous is not None:
                write_text(partial, previous)
            else:
                partial.unlink(missing_ok=True)
                if made and not any(run_dir.iterdir()):
                    run_dir.rmdir()
            raise
        seconds = before + time.perf_counter() - started
        write_text(fit_done, json.dumps({"train_seconds": seconds, "resumed": bool(resume), "command": common}))
        partial.unlink(missing_ok=True)
    else:
        _check_same_run(run_dir, json.loads(fit_done.read_text()).get("command"), common)
    written = run_dir / "results.json"  # the results writer's file in the run folder
    written.unlink(missing_ok=True)
    _run([sys.executable, "-m", "recon", "test", *common, "--ckpt_path", str(last)], env, run_dir)
    if not written.is_file():
        raise RuntimeError(f"{run_dir}: `recon test` wrote no results.json (is VoxelIoULogger in the config?)")
    results = json.loads(written.read_text())
    results.update(json.loads(fit_done.read_text()), encoder_name=encoder, seed=seed, profile=profile.name)
    write_text(entry, json.dumps(results, indent=2) + "\n")
    return results


def _command(profile: TableProfile, encoder: str, seed: int, run_dir: Path, data: str | None,
             extra: Sequence[str]) -> list[str]:
    """The flags of every recon command of one run: its configs, seed, run folder, data and the table's flags."""
    configs = [arg for config in [*profile.configs, profile.encoders[encoder]] for arg in ("-c", config)]
    command = [*configs, "--seed_everything", str(seed), "--trainer.default_root_dir", str(run_dir)]
    # a data file given is used as it is: never generated in place of a mistyped path
    return [*command, *profile.args, *(["--data.path", data, "--data.synthesize", "false"] if data else []), *extra]


def generate_data(profile: TableProfile, encoder: str, root: Path, extra: Sequence[str]) -> None:
    """Generate the synthetic data file the table's fits would (a missing ``data/synthetic.h5``) before the first
    of them starts: its minute would otherwise count as that run's training time. The data settings are read from
    the run's resolved config (``recon fit --print_config``); a config the fit refuses is left for the fit to say
    so in its own words."""
    from recon.datamodules.datamodule import ViewPairDataModule

    command = _command(profile, encoder, profile.seeds[0], root / f"{encoder}-seed{profile.seeds[0]}", None, extra)
    resolved = subprocess.run([sys.executable, "-m", "recon", "fit", *command, "--print_config"],
                              env=child_env(dict(os.environ)), capture_output=True, text=True)
    if resolved.returncode != 0:
        return
    settings = (yaml.safe_load(resolved.stdout) or {}).get("data")
    if isinstance(settings, dict) and not Path(str(settings.get("path"))).exists():
        ViewPairDataModule(**settings).generate_missing()


def _earlier_attempts(run_dir: Path, partial: Path, last: Path, command: list[str]) -> float:
    """The training seconds of a run's interrupted attempts, which the attempt that finishes adds to its own. An
    attempt whose table was killed (``kill -9``: no time recorded, only when it began) ran until its fit saved
    ``last.ckpt`` on its way out. A run interrupted with other settings (another data file, a flag after ``--``) is
    refused as a finished one is, rather than resumed into a row trained on both; its budget
    (``--trainer.max_steps``) may change."""
    attempts = json.loads(partial.read_text())
    if isinstance(attempts.get("command"), list):
        _check_same_run(run_dir, _without_budget(attempts["command"]), _without_budget(command), "interrupted")
    seconds = float(attempts.get("train_seconds", 0.0))
    if isinstance(attempts.get("started"), (int, float)):
        seconds += max(0.0, last.stat().st_mtime - attempts["started"])
    return seconds


def _without_budget(command: list[str]) -> list[str]:
    """``command`` without its ``--trainer.max_steps`` flags (``=N`` or ``N`` after it)."""
    kept, skip = [], False
    for arg in command:
        if not skip and not arg.startswith("--trainer.max_steps"):
            kept.append(arg)
        skip = arg == "--trainer.max_steps"
    return kept


def _check_same_run(run_dir: Path, recorded: list[str] | None, command: list[str], state: str = "finished") -> None:
    """A finished (or interrupted) run is reused only for the table it was made for: the same configs, seed, data
    and flags. Otherwise its row would sit beside rows trained otherwise (another budget, another data file)
    without a word."""
    if recorded is None or recorded == command:  # (a run from before runs recorded their command: reused)
        return
    then = [arg for arg in recorded if arg not in command]
    now = [arg for arg in command if arg not in recorded]
    raise TableError(f"{run_dir}: {state} with other settings than this table's (then: {' '.join(then) or '-'}; "
                     f"now: {' '.join(now) or '-'}); --redo (REDO=1) trains it again, or give the table a folder "
                     "of its own (--runs, TABLE_RUNS)")


def clear_run(run_dir: Path) -> None:
    """What makes a run finished or resumable (its results, its checkpoints): ``--redo`` clears it for every run of
    the table before training any, so that an interrupted redo continues without it."""
    for name in (ENTRY, "fit.done", "fit.partial", "results.json"):
        (run_dir / name).unlink(missing_ok=True)
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):
        checkpoint.unlink()


def _folder_problem(path: Path, flag: str) -> str | None:
    """Why ``path`` cannot be (or be made as) a folder: checked before any run trains."""
    if path.exists() and not path.is_dir():
        return f"{flag} {path}: is a file; expected a folder (it is made when missing)"
    if (below := file_above(path)) is not None:
        return f"{flag} {path}: {below} is a file, not a folder, so nothing can be made below it"
    return None


def _run(command: list[str], env: dict[str, str], run_dir: Path) -> None:
    """Run one recon command to its end. It runs in a process group of its own, so Ctrl-C reaches it once, from
    here: on Ctrl-C or SIGTERM the same signal is passed on once and the table waits for the run to stop (a fit
    saves ``last.ckpt`` first), then raises :class:`RunInterrupted`. A run that ends on such a signal of its own
    does too. The run also stops if this process is killed (:mod:`recon.lifetime`)."""
    console = Console(stderr=True, soft_wrap=True)  # paths stay whole, on one line
    console.print(f"[dim]$ {escape(' '.join(command[2:]))}[/dim]")  # `--data.categories=[chair]` is no markup
    process = subprocess.Popen(command, env=child_env(env), start_new_session=True)
    passed_on = None
    while True:
        try:
            status = process.wait()
            break
        except (KeyboardInterrupt, Terminated) as stop:
            if passed_on is None:
                passed_on = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM
                process.send_signal(passed_on)
                console.print(f"stopping {run_dir.name}: waiting for it to end (a fit saves its last.ckpt first)",
                              highlight=False)
    if passed_on is not None:
        raise RunInterrupted(run_dir, 130 if passed_on == signal.SIGINT else 143)
    if status in STOPPED:
        raise RunInterrupted(run_dir, status)
    if status != 0:
        raise SystemExit(f"command failed with exit status {status}: {' '.join(command)}")


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def summarize(runs: list[dict]) -> list[dict]:
    """One row per encoder: mean and half-range over seeds of mean loss, mean IoU and each category's IoU."""
    rows = []
    for encoder in dict.fromkeys(run["encoder_name"] for run in runs):
        mine = [run for run in runs if run["encoder_name"] == encoder]
        row = {"encoder": encoder, "seeds": [run["seed"] for run in mine]}
        row["loss"] = _spread([run["loss"] for run in mine])
        row["miou"] = _spread([run["miou"] for run in mine])
        row["psnr"] = _spread([run.get("mpsnr") for run in mine])  # results from before PSNR existed: "–"
        row["psnr_colors"] = mine[0].get("psnr_colors")
        row["iou"] = {c: _spread([run["iou"].get(c) for run in mine]) for c in CATEGORIES}
        row["train_minutes"] = statistics.fmean(run["train_seconds"] for run in mine) / 60
        # which file the numbers come from and what made it (results.json's data and data_source)
        row["data"] = "; ".join(dict.fromkeys(
            f"{Path(run['data']).name if run.get('data') else '?'} ({run.get('data_source') or '?'})" for run in mine))
        rows.append(row)
    return rows


def _spread(values: list[float | None]) -> tuple[float, float] | None:
    """(mean, half the range): the ± a reader needs to tell a ranking from seed noise."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return statistics.fmean(present), (max(present) - min(present)) / 2


def _cell(value: tuple[float, float] | None, seeds: int, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value[0]:.{digits}f}" if seeds < 2 else f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def _psnr_cell(row: dict, seeds: int) -> str:
    """PSNR in dB; a row without colours is marked ``(gray)``: its meshes were scored painted flat mid-grey."""
    cell = _cell(row.get("psnr"), seeds, digits=2)
    return f"{cell} (gray)" if row.get("psnr") and row.get("psnr_colors") == "gray" else cell


HEADER = ["encoder", "mean loss", "mean IoU", "PSNR (dB)", *CATEGORIES, "train min", "data"]


def table_cells(rows: list[dict], digits: int = 4) -> list[list[str]]:
    """The text cells of :data:`HEADER` for every row of :func:`summarize` (per-category IoU to ``digits``)."""
    cells = []
    for row in rows:
        n = len(row["seeds"])
        cells.append([row["encoder"], _cell(row["loss"], n), _cell(row["miou"], n), _psnr_cell(row, n),
                      *(_cell(row["iou"][c], n, digits) for c in CATEGORIES), f"{row['train_minutes']:.1f}",
                      row.get("data") or "?"])
    return cells


def render_markdown(profile: TableProfile, rows: list[dict]) -> str:
    lines = [f"# Encoder comparison — profile `{profile.name}`", "", profile.description, ""]
    lines += markdown_table(HEADER, table_cells(rows))
    seeds = sorted({s for row in rows for s in row["seeds"]})
    lines += ["", f"Mean ± half-range over seeds {seeds}. Voxel IoU at 32³, mean over categories. PSNR: the "
              "predicted mesh rendered in each test item's held view against the dataset image (inverted colour "
              "on black), mean over categories; `(gray)`: a model without colours, its mesh painted flat mid-grey "
              "(albedo 0.5) — the score of the shape alone, to compare with colour supervision. data: the file "
              "the numbers come from and its source (`synthetic`, `nmr`, …).", ""]
    lines += ["## Published figures (not our runs)", ""]
    lines += markdown_table(["method", "mean IoU", "source"],
                            [[figure.method, f"{figure.mean_iou:.4f}", figure.source] for figure in PUBLISHED])
    original = [[name, f"{loss:.4f}", f"{iou:.4f}"] for name, (loss, iou) in ORIGINAL_PROJECT.items()]
    lines += [""] + markdown_table(["original project (ShapeNet, 13 categories)", "mean loss", "mean IoU"], original)
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["encoder", "seeds", "mean_loss", "mean_loss_halfrange", "mean_iou", "mean_iou_halfrange",
                     "mean_psnr", "mean_psnr_halfrange", "psnr_colors", *CATEGORIES, "train_minutes", "data"])
    for row in rows:
        psnr = row.get("psnr") or ("", "")
        writer.writerow([row["encoder"], " ".join(map(str, row["seeds"])), *row["loss"], *row["miou"], *psnr,
                         row.get("psnr_colors") or "",
                         *(f"{row['iou'][c][0]:.6f}" if row["iou"][c] else "" for c in CATEGORIES),
                         f"{row['train_minutes']:.2f}", row.get("data") or ""])
    return out.getvalue()


TERMINAL = [name for name in HEADER if name not in (*CATEGORIES, "data")]  # what fits a terminal; the rest: table.md


def encoder_table(profile: TableProfile, rows: list[dict], width: int | None = None) -> Table:
    """The terminal table: our rows (without the per-category IoUs of table.md), then the published means and the
    original project's, dimmed. Where one line per row would not fit ``width`` columns (an 80-column terminal with
    seeds' spreads), each ``mean ± spread`` takes two lines: the mean, then the spread."""
    blank = [""] * (len(TERMINAL) - 3)
    extra = [[f"[dim]{figure.method} (published)", "", f"[dim]{figure.mean_iou:.4f}", *blank] for figure in PUBLISHED]
    extra += [[f"[dim]{name} (original project)", f"[dim]{loss:.4f}", f"[dim]{iou:.4f}", *blank]
              for name, (loss, iou) in ORIGINAL_PROJECT.items()]
    shown = [HEADER.index(name) for name in TERMINAL]
    cells = [[row[i] for i in shown] for row in table_cells(rows)]
    if width is not None and _one_line_width(cells) > width:
        cells = [[re.sub(r"^(\S+) ± (\S+)(.*)$", r"\1\3\n± \2", cell) for cell in row] for row in cells]
    data = "; ".join(dict.fromkeys(row.get("data") or "?" for row in rows))
    table = rich_table(TERMINAL, cells, f"encoder comparison ({profile.name})", f"data: {data}. Per-category IoU "
                       "in table.md and table.csv; published: mean IoU only, with their sources in table.md")
    # Our names and numbers are never cut ("basel…", "0.30…"): in a narrow terminal the published names and the
    # headers wrap instead.
    for index, column in enumerate(table.columns):
        column.min_width = max(len(line) for row in cells for line in row[index].splitlines() or [""])
    table.add_section()
    for row in extra:
        table.add_row(*row)
    return table


def _one_line_width(cells: list[list[str]]) -> int:
    """The terminal width a table of ``cells`` needs with every cell on one line (borders and padding: 3 a column,
    plus 1)."""
    return sum(max(len(row[index]) for row in cells) + 3 for index in range(len(cells[0]))) + 1 if cells else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recon.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="configs/table/<profile>.yaml (quick, paper, smoke)")
    parser.add_argument("--data", help="dataset .h5 (e.g. the converted ShapeNet set); default: the profile's")
    parser.add_argument("--redo", action="store_true", help="retrain every run of the table, finished or not (an "
                        "interrupted redo then continues without --redo)")
    home = lambda text: Path(text).expanduser()  # noqa: E731 — `--runs=~/table`: the shell leaves that ~ alone
    parser.add_argument("--runs", type=home, default=Path("runs/table"), help="parent of the run folders")
    parser.add_argument("--out", type=home, default=Path("results"), help="folder for table.md and table.csv")
    parser.add_argument("--encoders", nargs="+", help="a subset of the profile's encoders")
    parser.add_argument("extra", nargs="*", help="extra flags for every recon run (after --)")
    args = parser.parse_args(argv)

    try:
        profile = load_profile(args.profile)
    except (OSError, ValueError, yaml.YAMLError) as error:  # a mistyped PROFILE, a malformed profile file
        parser.error(str(error))
    encoders = args.encoders or list(profile.encoders)
    unknown = [e for e in encoders if e not in profile.encoders]
    if unknown:
        parser.error(f"unknown encoders {unknown}; profile {profile.name} has {list(profile.encoders)}")
    encoders = list(dict.fromkeys(encoders))  # `--encoders baseline baseline`: one row, not a seed spread of one run
    for path, flag in ((args.runs, "--runs"), (args.out, "--out")):
        if problem := _folder_problem(path, flag):
            parser.error(problem)
    root = args.runs / profile.name
    if args.redo:  # every run of the table is cleared first: an interrupted redo then continues without --redo
        for encoder in encoders:
            for seed in profile.seeds:
                clear_run(root / f"{encoder}-seed{seed}")
    again = "the same command without --redo (REDO=1)" if args.redo else "the same command"
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        finished = all((root / f"{encoder}-seed{seed}" / ENTRY).is_file()
                       for encoder in encoders for seed in profile.seeds)
        if args.data is None and not finished:  # (a table printed again from its finished runs reads no data)
            generate_data(profile, encoders[0], root, args.extra)
        runs = [
            run_encoder(profile, encoder, seed, root, args.data, False, args.extra)
            for encoder in encoders
            for seed in profile.seeds
        ]
    except RunInterrupted as stop:
        Console(stderr=True, soft_wrap=True).print(
            f"interrupted: {stop}; {again} continues the table (finished runs are kept, this one resumes from its "
            "last.ckpt)", highlight=False)
        return stop.status
    except (KeyboardInterrupt, Terminated) as stop:  # between runs
        message = f"interrupted; {again} continues the table (finished runs are kept)"
        Console(stderr=True, soft_wrap=True).print(message, highlight=False)
        return 130 if isinstance(stop, KeyboardInterrupt) else 143
    except TableError as error:
        Console(stderr=True, soft_wrap=True).print(f"error: {error}", highlight=False)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    rows = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "table.md", render_markdown(profile, rows))
    write_text(args.out / "table.csv", render_csv(rows))
    console = Console(width=None if sys.stdout.isatty() else 120)  # a log file: the table's own width, not 80
    console.print(encoder_table(profile, rows, console.width))
    console.print(f"wrote {args.out / 'table.md'} and {args.out / 'table.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
