"""A sweep's results in its folder: ``trials.csv``, ``summary.md``, ``best.yaml`` and PNG plots.

Written after every trial (plots at the end of each run of the sweep), each file atomically (a temporary file
beside it, then renamed), so several processes sharing a study may all write them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from recon.atomic import atomic_write, write_text
from recon.sweep.fit_args import CALLBACK
from recon.sweep.study import SECONDS, interrupted, retry_of

PLOTS = {"history": "optimization history", "importances": "parameter importances",
         "parallel_coordinates": "parallel coordinates"}
TEST_RESULT = "test-best.json"
MIN_TRIALS_FOR_IMPORTANCE = 2


def trial_rows(study: optuna.Study) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per trial (values, val/miou, state, time, retries); the searched keys in first-seen order."""
    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(key for trial in trials for key in trial.params))
    rows = []
    for trial in trials:
        row: dict[str, Any] = {
            "trial": trial.number,
            "state": "interrupted" if trial.state == TrialState.FAIL and interrupted(trial) else trial.state.name.lower(),
            "val_miou": "" if trial.value is None else f"{trial.value:.6f}",
            "seconds": _seconds(trial),
            "last_step": "" if trial.last_step is None else trial.last_step,
            "retry_of": "" if retry_of(trial) is None else retry_of(trial),
        }
        row.update({key: trial.params.get(key, "") for key in keys})
        # (a queued retry carries its failed trial's attributes until it runs in a folder of its own)
        row["folder"] = "" if trial.state == TrialState.WAITING else trial.user_attrs.get("folder", "")
        rows.append(row)
    return keys, rows


def _seconds(trial: FrozenTrial) -> str:
    """How long the trial ran: for one left running by a sweep that was killed, until its last sign of life (its
    ``seconds``), not until the next sweep found it."""
    if trial.state == TrialState.FAIL and trial.user_attrs.get(SECONDS) is not None:
        return f"{float(trial.user_attrs[SECONDS]):.1f}"
    return "" if trial.duration is None else f"{trial.duration.total_seconds():.1f}"


def write_tables(study: optuna.Study, folder: Path, storage_url: str) -> None:
    """``trials.csv``, ``summary.md`` and (once a trial is complete) ``best.yaml``."""
    keys, rows = trial_rows(study)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["trial", "state", "val_miou", "seconds", "last_step", "retry_of",
                                             *keys, "folder"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(folder / "trials.csv", out.getvalue())
    best = best_trial(study)
    if best is not None and Path(best.user_attrs.get("folder", "")).joinpath("config.yaml").is_file():
        write_best_config(best, folder)  # else the best trial ran on another machine: that machine writes it
    write_atomic(folder / "summary.md", summary_markdown(study, folder, storage_url, keys, rows, best))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda trial: trial.value) if complete else None


def write_best_config(best: FrozenTrial, folder: Path) -> Path:
    """``best.yaml``: the best trial's whole resolved ``recon fit`` config (its ``config.yaml``), so that
    ``recon fit -c configs/default.yaml -c <folder>/best.yaml`` retrains it, seed included, in ``<folder>/best``.
    The sweep's callback is dropped and the W&B run name and group left for ``recon fit`` to fill."""
    run = Path(best.user_attrs["folder"])
    source = run / "config.yaml"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: the best trial's resolved config is missing (was its run folder moved?)")
    config = _relocated(yaml.safe_load(source.read_text()), str(run), str(folder / "best"))
    # a fresh fit: never a resume, nor the options of an evaluation (a trial folder tested by an older recon kept
    # the test's config as config.yaml, with its checkpoint and `verbose`, which recon fit refuses)
    config["ckpt_path"] = None
    for key in ("verbose", "return_predictions"):
        config.pop(key, None)
    trainer = config.setdefault("trainer", {})
    callbacks = trainer.get("callbacks") or []
    trainer["callbacks"] = [c for c in callbacks if not (isinstance(c, dict) and c.get("class_path") == CALLBACK)]
    for callback in trainer["callbacks"]:
        if isinstance(callback, dict) and "ModelCheckpoint" in str(callback.get("class_path")):
            callback.get("init_args", {})["dirpath"] = None  # recon's default: <run folder>/checkpoints
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
            if "save_dir" in logger["init_args"]:
                logger["init_args"]["save_dir"] = "."  # recon's default: the run folder
            if "wandb" in str(logger.get("class_path", "")).lower():
                logger["init_args"].update(name=None, group=None, tags=None)
    header = [f"# Best trial of sweep {folder.name}: trial {best.number}, val/miou {best.value:.4f} (validation split).",
              "# Its values: " + ", ".join(f"{key}={value!r}" for key, value in best.params.items()),
              f"# Retrain: recon fit -c configs/default.yaml -c {folder}/best.yaml",
              "# The trial's whole resolved config follows (later -c files and flags still win).", ""]
    path = folder / "best.yaml"
    write_atomic(path, "\n".join(header) + yaml.safe_dump(config, sort_keys=False))
    return path


def _relocated(value: Any, old: str, new: str) -> Any:
    """``value`` with every path inside the trial's run folder ``old`` moved to ``new``."""
    if isinstance(value, dict):
        return {key: _relocated(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_relocated(item, old, new) for item in value]
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    return value


def summary_markdown(study: optuna.Study, folder: Path, storage_url: str, keys: list[str],
                     rows: list[dict[str, Any]], best: FrozenTrial | None) -> str:
    states = [row["state"] for row in rows]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "interrupted", "running", "waiting") if s in states)
    lines = [f"# Sweep `{folder.name}`", "",
             f"Study `{study.study_name}` in `{storage_url}`; objective: each trial's best `val/miou` on the "
             "validation split, maximised (the test split is never used for selection). "
             f"{len(rows)} trials: {counts or 'none yet'}. Updated {_now()}.", ""]
    if best is not None:
        lines += [f"## Best: trial {best.number}, val/miou {best.value:.4f}", "", "| key | value |", "|---|---|"]
        lines += [f"| `{key}` | {_format(value)} |" for key, value in best.params.items()]
        lines += ["", f"Retrain: `recon fit -c configs/default.yaml -c {folder}/best.yaml`; run folder "
                  f"`{best.user_attrs.get('folder', '')}`.", ""]
    tested = folder / TEST_RESULT
    if tested.is_file():
        result = json.loads(tested.read_text())
        lines += [f"## Test of the best trial (once, after selection): trial {result['trial']}, "
                  f"test/miou {_format(result.get('miou'))}", ""]
    lines += ["## What mattered", "", importance_text(study), ""]
    lines += [f"![{title}]({name}.png)" for name, title in PLOTS.items() if (folder / f"{name}.png").is_file()]
    lines += ["", "## Trials, best first", ""]
    header = ["trial", "state", "val/miou", "seconds", "last step", "retry of", *keys]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ranked = sorted(rows, key=lambda row: (row["val_miou"] == "", -float(row["val_miou"] or 0), row["trial"]))
    for row in ranked:
        cells = [row["trial"], row["state"], row["val_miou"], row["seconds"], row["last_step"], row["retry_of"]]
        lines.append("| " + " | ".join(str(c) for c in cells + [_format(row[key]) for key in keys]) + " |")
    return "\n".join(lines) + "\n"


def importance_text(study: optuna.Study) -> str:
    """Optuna's parameter importances as a line, or why they cannot be computed yet."""
    importances, reason = param_importances(study)
    if importances is None:
        return reason
    return "Importance for val/miou (Optuna's fANOVA; sums to 1): " + ", ".join(
        f"`{key}` {value:.2f}" for key, value in importances.items()) + "."


def param_importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
                      f"{len(complete)} so far.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study), ""
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return None, f"Parameter importances could not be computed from {len(complete)} complete trials: {error}"


def write_plots(study: optuna.Study, folder: Path) -> list[str]:
    """Optuna's matplotlib history, importances and parallel-coordinates plots as PNGs; return those written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    makers = {"history": plots.plot_optimization_history, "importances": plots.plot_param_importances,
              "parallel_coordinates": plots.plot_parallel_coordinate}
    written = []
    for name, make in makers.items():
        if name == "importances" and param_importances(study)[0] is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = make(study, target_name="val/miou") if name != "importances" else make(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        path = folder / f"{name}.png"
        with atomic_write(path, "wb") as file:
            figure.savefig(file, format="png", dpi=100)
        plt.close(figure)
        written.append(path.name)
    return written


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
