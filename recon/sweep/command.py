"""``recon sweep``: run the study's trials until it holds ``--sweep.trials`` finished ones, then report.

One process runs ``--sweep.jobs`` trials at once (Optuna's threads, each waiting on its own ``recon fit``
process, with ``OMP_NUM_THREADS`` divided among them). Several processes, on one machine or many, share a
study through one storage; each stops once the finished and running trials reach the study's size.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from recon.atomic import write_text
from recon.lifetime import child_env
from recon.sweep.fit_args import check_fit_args
from recon.sweep.options import SweepCommand, fit_flag, parse_command
from recon.sweep.report import TEST_RESULT, best_trial, write_plots, write_tables
from recon.sweep.runner import RUNNING, TrialFailed, TrialRunner, end_orphans, fit_error, stop_running
from recon.sweep.space import SearchSpaceError
from recon.sweep.storage import is_rdb, rdb_error, storage_url
from recon.sweep.study import StudyMismatch, count_trials, open_study, retry_failed, study_definition

MAX_FAILURES_IN_A_ROW = 3  # a sweep whose every trial fails (a broken config) stops instead of burning the budget

console = Console(stderr=True, soft_wrap=True)  # paths stay whole, on one line


class SweepStopped(RuntimeError):
    """The sweep cannot make progress: its trials keep failing."""


class BestUntested(RuntimeError):
    """``--test-best`` could not test the best trial: no ``best.ckpt``, or its ``recon test`` failed."""


class _NoTrialTraceback(logging.Filter):
    """Optuna logs a failed trial with the traceback of what ended it. For a trial interrupted with the sweep
    (Ctrl-C, SIGTERM) or whose ``recon fit`` failed (:class:`TrialFailed`, whose message names the trial's
    fit.log) that traceback is only the sweep's own frames waiting on the process: the one-line warning stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (KeyboardInterrupt, TrialFailed)):
            record.exc_info = record.exc_text = None
        return True


_OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"  # the logger of Optuna's "Trial N failed …" warning
_stopping = threading.Event()  # Ctrl-C or SIGTERM came: the sweep is stopping (see _terminate)


def main(argv: Sequence[str] | None = None) -> int:
    """``recon sweep ...`` (``argv`` without the word ``sweep``): exit status 0; 2 for a bad command or search
    space, or one the study's trials did not run with (before any trial); 1 when trials keep failing or
    ``--test-best`` cannot test the best trial; 130 when interrupted (Ctrl-C or SIGTERM, however often)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    trial_logger = logging.getLogger(_OPTUNA_TRIAL_LOGGER)
    if not any(isinstance(f, _NoTrialTraceback) for f in trial_logger.filters):
        trial_logger.addFilter(_NoTrialTraceback())
    try:
        command = parse_command(sys.argv[2:] if argv is None else argv)
        fit_config = check_fit_args(command.fit_args, command.space)
    except SearchSpaceError as error:
        console.print(f"recon sweep: [red]error:[/red] {escape(str(error))}", highlight=False)  # as `recon fit: error: …`
        return 2
    options = command.options
    url = storage_url(options.storage, options.folder)
    if options.storage is None:
        options.folder.mkdir(parents=True, exist_ok=True)  # the journal's; an RDB that fails leaves no folder behind
    try:
        study = open_study(options.name, url, command.space, options.seed, study_definition(command.space, fit_config))
    except StudyMismatch as error:
        start_over = "" if is_rdb(url) else f", or remove {options.folder} to start this one over"
        console.print(f"recon sweep: [red]error:[/red] sweep {escape(options.name)}: its trials ran with another "
                      f"search space or other settings than this command's ({escape(str(error))}); give another "
                      f"--sweep.name for a new study{escape(start_over)}", highlight=False)
        return 2
    except (ImportError, SQLAlchemyError) as error:  # an RDB: no driver, a mistyped scheme, no server
        if not is_rdb(url):
            raise
        console.print(f"recon sweep: [red]error:[/red] {escape(rdb_error(url, error))}", highlight=False)
        return 2
    except ValueError as error:  # a journal Optuna cannot read (checked up front by its first line only)
        if is_rdb(url):
            raise
        console.print(f"recon sweep: [red]error:[/red] {escape(url)}: Optuna cannot read this journal file "
                      f"({type(error).__name__}: {escape(str(error))})", highlight=False)
        return 2
    options.folder.mkdir(parents=True, exist_ok=True)
    if orphans := end_orphans(study, options.keep_checkpoints):
        console.print(f"trials {orphans} were left running by a sweep process that is gone: marked interrupted")
    if retried := retry_failed(study):
        console.print(f"trials {retried} did not finish: queued to run again with the same values")
    threads = max(1, _cpu_threads() // options.jobs)
    console.print(f"sweep {options.name}: {count_trials(study).finished} of {options.trials} trials finished; "
                  f"{options.jobs} at a time, {threads} threads each; folder {options.folder}", highlight=False)
    _stopping.clear()
    previous = signal.signal(signal.SIGTERM, _terminate)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:  # (left alone where SIGINT is ignored, as in a nohup'd job)
        signal.signal(signal.SIGINT, _terminate)
    try:
        try:
            run_trials(study, TrialRunner(command, url, threads), command, url)
            if options.test_best:
                test_best(command, study, url)
        finally:
            write_tables(study, options.folder, url)
            write_plots(study, options.folder)
    except (SweepStopped, BestUntested) as error:
        console.print(f"recon sweep: [red]error:[/red] {escape(str(error))}", highlight=False)  # as `recon fit: error: …`
        return 1
    except KeyboardInterrupt:
        console.print(f"sweep {options.name} interrupted; the same command continues it (interrupted trials are retried)")
        return 130
    finally:  # only now: a Ctrl-C more while the tables are written would end the sweep with a traceback
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    best = best_trial(study)
    if best is not None:
        console.print(f"best: trial {best.number}, val/miou {best.value:.4f}, {best.params}; "
                      f"see {options.folder}/summary.md", highlight=False)
    return 0


def run_trials(study: optuna.Study, runner: TrialRunner, command: SweepCommand, url: str) -> None:
    """Run trials until the study holds ``trials`` finished ones (counting those other processes are running)."""
    options = command.options
    failures: list[int] = []
    last_error: list[str] = []  # the last failed trial's `recon fit: error: …` line, if it ended with one
    lock = threading.Lock()  # with --sweep.jobs, trials end in several threads: one retry per failure

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        with lock:
            # interrupted trials count too: the sweep is stopping then anyway, and a fit that keeps being stopped
            # while the sweep goes on must not be run again and again
            failures[:] = [*failures, trial.number] if trial.state == TrialState.FAIL else []
            if trial.state == TrialState.FAIL and trial.user_attrs.get("error"):
                last_error[:] = [trial.user_attrs["error"]]
            if trial.state == TrialState.FAIL:
                retry_failed(study)
            write_tables(study, options.folder, url)
        counts = count_trials(study)
        if counts.finished + counts.running >= options.trials or len(failures) >= MAX_FAILURES_IN_A_ROW:
            study.stop()

    while True:
        counts = count_trials(study)
        remaining = options.trials - counts.finished - counts.running
        if remaining <= 0:
            return
        study.optimize(runner, n_trials=remaining, n_jobs=options.jobs, catch=(TrialFailed,),
                       callbacks=[after_trial], gc_after_trial=False)
        after = count_trials(study)
        if len(failures) >= MAX_FAILURES_IN_A_ROW or (after.finished == counts.finished and not after.waiting):
            last = f"; the last: {last_error[0]}" if last_error else ""
            raise SweepStopped(f"sweep {options.name}: trials {failures} failed in a row; see their fit.log in "
                               f"{options.folder}{last}")


def test_best(command: SweepCommand, study: optuna.Study, url: str) -> None:
    """Test the best trial's ``best.ckpt`` once (``recon test``, same configs and values); record the result
    in ``test-best.json``. A best trial already tested is not tested again."""
    options = command.options
    best = best_trial(study)
    if best is None:
        console.print("--test-best: no complete trial to test")
        return
    record = options.folder / TEST_RESULT
    if record.is_file() and json.loads(record.read_text()).get("trial") == best.number:
        console.print(f"--test-best: trial {best.number} was already tested: {record}")
        return
    run = Path(best.user_attrs["folder"])
    checkpoint = run / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        raise BestUntested(f"--test-best: {checkpoint}: the best trial, {best.number}, has no best.ckpt (was "
                           f"ModelCheckpoint in its config, and the run folder left in place?)")
    args = [*command.fit_args, *(fit_flag(k, v) for k, v in best.params.items()),
            f"--trainer.default_root_dir={run}", f"--ckpt_path={checkpoint}"]
    env = {**child_env(dict(os.environ)), "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
           "WANDB_RUN_GROUP": f"sweep-{options.name}", "WANDB_TAGS": f"sweep,{options.name},test-best"}
    written = run / "results.json"  # the results writer's file in the run folder
    written.unlink(missing_ok=True)
    with open(run / "test.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "recon", "test", *args], stdout=log,
                                   stderr=subprocess.STDOUT, env=env)
        RUNNING.add(process)  # Ctrl-C or SIGTERM to the sweep stops it as it stops trials (see _terminate)
        try:
            status = process.wait()
        except BaseException:  # the test stops between batches, as `recon test` does on SIGTERM, rather than
            process.terminate()  # being killed; it runs again with the same command (no test-best.json yet)
            process.wait()
            raise
        finally:
            RUNNING.discard(process)
    if status != 0:
        reason = fit_error(run / "test.log", "recon test")
        raise BestUntested(f"--test-best: recon test of trial {best.number} failed (exit status {status}"
                           f"{': ' + reason if reason else ''}); see {run}/test.log")
    results = json.loads(written.read_text()) if written.is_file() else {}
    entry = {"trial": best.number, "val_miou": best.value, "checkpoint": str(checkpoint),
             "miou": results.get("miou"), "results": results}
    write_text(record, json.dumps(entry, indent=2) + "\n")
    console.print(f"--test-best: trial {best.number}: test/miou {results.get('miou')}", highlight=False)


def _terminate(signum: int, frame: object) -> None:
    """Ctrl-C and SIGTERM (a scheduler ending the job) stop the sweep: every trial process ends too (with
    ``--sweep.jobs`` > 1 those of the other threads, which a KeyboardInterrupt would not reach), and their trials
    are marked failed, interrupted, and run again when the sweep is run again.

    Only the first raises KeyboardInterrupt: a second Ctrl-C (pressed again while the trials end) would land in
    that cleanup, leaving a trial marked failed instead of interrupted (an enqueued recipe lost), its checkpoints
    and no tables. Later ones send the trial processes SIGTERM again, and the sweep goes on stopping."""
    stop_running()
    if not _stopping.is_set():
        _stopping.set()
        raise KeyboardInterrupt


def _cpu_threads() -> int:
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
