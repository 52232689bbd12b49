"""The objective: one trial as one ``recon fit`` process, scored by the best ``val/miou`` of its validations.

The test split is never read here: a trial is scored on validation only (the maximum over its
validations, which is also the score of its ``checkpoints/best.ckpt``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from recon.atomic import remove_stale_temporaries
from recon.lifetime import STOPPED, child_env
from recon.sweep.callback import read_result
from recon.sweep.fit_args import trial_args
from recon.sweep.options import SweepCommand
from recon.sweep.study import claim, fail_orphans, mark_interrupted

FIT_LOG = "fit.log"
BEST = "best.ckpt"  # the checkpoint of a trial's score (its best val/miou), which --test-best tests
RUNNING: set[subprocess.Popen] = set()  # the trial processes of this sweep, ended with it (see stop_running)


class TrialFailed(RuntimeError):
    """A trial's ``recon fit`` exited with an error, was killed or interrupted, or logged no ``val/miou``."""


class TrialRunner:
    """Optuna objective: draw the trial's values, run ``recon fit`` in ``<folder>/trial-<n>``, return its best
    ``val/miou``; raise ``optuna.TrialPruned`` if its process stopped because the pruner said so.

    Each process gets ``OMP_NUM_THREADS = threads`` (the machine's share for one of ``--sweep.jobs``), the W&B
    group ``sweep-<name>`` and tags ``sweep``, ``<name>``; its output goes to ``trial-<n>/fit.log``.
    """

    def __init__(self, command: SweepCommand, storage_url: str, threads: int) -> None:
        self.command = command
        self.storage_url = storage_url
        self.threads = threads

    def __call__(self, trial: optuna.Trial) -> float:
        options = self.command.options
        values = self.command.space.suggest(trial)
        folder = options.folder / f"trial-{trial.number}"
        _move_aside(folder)
        folder.mkdir(parents=True)
        args = trial_args(self.command.fit_args, values, folder, self.storage_url, options.name, trial.number,
                          self.command.space.settings.get("pruner"))
        env = {
            **child_env(dict(os.environ)),  # the trial's fit stops if this process dies (kill -9 included)
            "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
            "WANDB_RUN_GROUP": f"sweep-{options.name}",
            "WANDB_TAGS": ",".join(filter(None, ["sweep", options.name, os.environ.get("WANDB_TAGS", "")])),
            "OMP_NUM_THREADS": str(self.threads),
        }
        trial.set_user_attr("folder", str(folder))
        with open(folder / FIT_LOG, "w") as log:
            process = subprocess.Popen([sys.executable, "-m", "recon", "fit", *args], stdout=log,
                                       stderr=subprocess.STDOUT, env=env)
            RUNNING.add(process)
            claim(trial, process.pid)
            try:
                status = process.wait()
            except BaseException:  # Ctrl-C or the sweep stopped: never leave the trial's process behind
                # (a further Ctrl-C while it ends raises nothing: see recon.sweep.command._terminate)
                process.terminate()
                process.wait()
                mark_interrupted(trial)
                self._drop_checkpoints(folder, keep=())  # it runs again afresh, in a folder of its own
                raise
            finally:
                RUNNING.discard(process)
        try:
            value = _score(trial, folder, status)
        except (optuna.TrialPruned, TrialFailed):
            self._drop_checkpoints(folder, keep=())  # a pruned trial is never the best; a failed one runs afresh
            raise
        self._drop_checkpoints(folder, keep=(BEST,))
        return value

    def _drop_checkpoints(self, folder: Path, keep: tuple[str, ...]) -> None:
        drop_checkpoints(folder, keep, self.command.options.keep_checkpoints)


def drop_checkpoints(folder: Path, keep: tuple[str, ...], keep_checkpoints: str = "best") -> None:
    """With ``--sweep.keep_checkpoints best``, remove the ended trial's checkpoints but ``keep``, and what a save
    that was cut short left (``.last.ckpt.tmp-<pid>``): its last.ckpt resumes nothing (a trial that runs again
    starts afresh in a folder of its own), and each is ~300 MiB."""
    if keep_checkpoints == "all":
        return
    for checkpoint in sorted((folder / "checkpoints").glob("*.ckpt")):
        if checkpoint.name not in keep:
            checkpoint.unlink(missing_ok=True)
    remove_stale_temporaries(folder / "checkpoints")


def end_orphans(study: optuna.Study, keep_checkpoints: str = "best") -> list[int]:
    """Fail the trials left running by a sweep process that is gone (``kill -9``) as interrupted, as that sweep
    would have, their checkpoints removed; return their numbers."""
    orphans = fail_orphans(study)
    for trial in orphans:
        if trial.user_attrs.get("folder"):
            drop_checkpoints(Path(trial.user_attrs["folder"]), (), keep_checkpoints)
    return [trial.number for trial in orphans]


def stop_running() -> None:
    """Terminate every trial process still running (the sweep itself was told to stop); each is marked failed."""
    for process in list(RUNNING):
        process.terminate()


def _score(trial: optuna.Trial, folder: Path, status: int) -> float:
    log = folder / FIT_LOG
    if status in STOPPED:  # e.g. Ctrl-C reached it with the sweep, or the sweep's other trials were stopped
        mark_interrupted(trial)
        raise TrialFailed(f"trial {trial.number}: recon fit was interrupted ({STOPPED[status]}); it will run again")
    if status != 0:
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
        reason = fit_error(log)
        if reason:
            trial.set_user_attr("error", reason)
        raise TrialFailed(f"trial {trial.number}: recon fit failed ({how}{': ' + reason if reason else ''}); its "
                          f"output: {log}")
    result = read_result(folder)
    reports = (result or {}).get("reports") or {}
    if not reports:
        raise TrialFailed(f"trial {trial.number}: recon fit logged no val/miou (does trainer.val_check_interval "
                          f"fit within trainer.max_steps?); its output: {log}")
    trial.set_user_attr("steps", (result or {}).get("global_step"))
    if result and result.get("pruned_at") is not None:
        raise optuna.TrialPruned(f"trial {trial.number} pruned at step {result['pruned_at']}")
    return max(reports.values())


def fit_error(log: Path, command: str = "recon fit") -> str | None:
    """The one-line error ``command`` ended with (``recon fit: error: …``, without that prefix), if it did."""
    prefix = f"{command}: error: "
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((line[len(prefix):] for line in reversed(lines) if line.startswith(prefix)), None)


def _move_aside(folder: Path) -> None:
    """A folder left by another study of the same name (its journal deleted) is kept, renamed, never reused."""
    if folder.exists():
        folder.rename(folder.with_name(f"{folder.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"))
