"""What a user meets off the happy path of ``recon``: mistyped paths, damaged files, kills mid-save, loggers
switched off. Each case ends in one clear message or a run that still resumes; real processes, real kills (a command
refused before any run starts runs in this process, by the console script's own function)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from recon.atomic import atomic_write, remove_stale_temporaries, temporary_path
from recon.errors import DiskFullError

# Lightning 2.6 itself calls jsonargparse's deprecated add_instantiator: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.yaml")
COLOR = str(ROOT / "configs" / "experiment" / "color.yaml")


@pytest.fixture(autouse=True)
def _bare_argv(monkeypatch):
    """LightningCLI warns when given args while sys.argv holds pytest's own flags."""
    monkeypatch.setattr(sys, "argv", ["recon"])


def recon(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m recon ARGS`` in a child process, as a user runs it; output captured."""
    environment = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "recon", *args], capture_output=True, text=True, env=environment,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture
def recon_here(monkeypatch, capfd):
    """``recon_here(*args, env=None) -> CompletedProcess``: ``recon ARGS`` run in this process, by the function the
    console script calls (:func:`recon.cli.main`), from the repository's root, with the status and output
    :func:`recon` would give. For commands refused before any run starts: a fresh process spends seconds importing
    torch and Lightning first. Signals, kills and concurrent runs use :func:`recon`."""
    from recon.cli import main

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        monkeypatch.chdir(ROOT)
        # a logger's handler made under an earlier test's capture writes to that capture's closed stream
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):
                if type(handler) is logging.StreamHandler and getattr(handler.stream, "closed", False):
                    monkeypatch.setattr(handler, "stream", sys.stderr)
        for key, value in {"WANDB_MODE": "offline", **(env or {})}.items():
            monkeypatch.setenv(key, value)
        capfd.readouterr()
        try:
            status = main(list(args))
        except SystemExit as exit_info:
            status = exit_info.code if isinstance(exit_info.code, int) else 1
        finally:
            for key in env or {}:
                monkeypatch.delenv(key)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["recon", *args], status, out, err)

    return run


# ---------------------------------------------------------------------------------------------- data paths
@pytest.mark.slow
def test_a_mistyped_data_path_is_one_line_naming_it_and_creates_no_run_folder(recon_here, shrink_flags, tmp_path):
    missing = tmp_path / "shapenett.h5"
    run = tmp_path / "run"
    for command in ("test", "validate", "fit"):
        done = recon_here(command, "-c", DEFAULT, *shrink_flags({"data.path": missing, "data.synthesize": None}),
                     *(["--ckpt_path=none.ckpt"] if command == "test" else []))
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith(f"recon {command}: error: {missing}") and "recon-data synth" in lines[-1]
        assert "Traceback" not in done.stderr
        assert not missing.exists() and not run.exists()  # nothing synthesized, no run folder, no W&B run


@pytest.mark.slow
def test_online_w_and_b_without_an_api_key_is_one_line_before_the_run_starts(shrink_flags, tmp_path):
    """W&B itself would stop the fit once under way (``UsageError: No API key configured`` and its traceback)."""
    home = tmp_path / "home"  # no ~/.netrc, no W&B settings: credentials only from the environment
    home.mkdir()
    run = tmp_path / "run"
    env = {"WANDB_MODE": "online", "HOME": str(home), "WANDB_CONFIG_DIR": str(home), "NETRC": str(home / "none")}
    for key, expected in (("", "but has no API key: run `wandb login` or set WANDB_API_KEY"),
                          ("abc", "but WANDB_API_KEY invalid: API key must have 40+ characters")):
        done = subprocess.run([sys.executable, "-m", "recon", "fit", "-c", DEFAULT, *shrink_flags()], cwd=ROOT,
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                              env={**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
                                   **env, "WANDB_API_KEY": key, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 1, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("recon fit: error: W&B is online (WANDB_MODE=online) ") and expected in last
        assert f"`wandb sync {run}/wandb/offline-run-*`" in last and "Traceback" not in done.stderr
        assert not run.exists()
    # a key, but a server that refuses the connection: W&B gives up after its init timeout, with one line from recon
    done = subprocess.run([sys.executable, "-m", "recon", "fit", "-c", DEFAULT, *shrink_flags()], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}, **env,
                               "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9",
                               "WANDB_INIT_TIMEOUT": "5", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1, done.stderr
    assert "recon fit: error: W&B (WANDB_MODE=online) could not start its run: " in done.stderr
    assert "127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_truncated_data_file_is_refused_before_the_run_starts_and_debug_shows_the_traceback(recon_here, tiny_h5,
                                                                                            shrink_flags, tmp_path):
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(tiny_h5.read_bytes()[: tiny_h5.stat().st_size // 2])
    flags = shrink_flags({"data.path": truncated})
    done = recon_here("fit", "-c", DEFAULT, *flags)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"recon fit: error: {truncated}: truncated or corrupt")
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
    debug = recon("fit", "-c", DEFAULT, *flags, env={"RECON_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.slow
def test_evaluating_without_a_trained_checkpoint_is_refused_and_a_fit_says_it_starts_afresh(recon_here, shrink_flags,
                                                                                           tmp_path):
    run = tmp_path / "run"
    done = recon_here("test", "-c", DEFAULT, *shrink_flags())  # no --ckpt_path: the untrained model's numbers
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("recon test: error: no --ckpt_path: recon test would "
                                                           "evaluate an untrained model")
    done = recon_here("validate", "-c", DEFAULT, *shrink_flags(), "--ckpt_path=last")  # a folder with no run in it
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"recon validate: error: --ckpt_path last: there is no {run / 'checkpoints' / 'last.ckpt'}; point "
        "--trainer.default_root_dir at a trained run's folder, or give --ckpt_path a checkpoint file")
    assert not run.exists()  # no run folder, results or W&B run
    done = recon("fit", "-c", DEFAULT, *shrink_flags(), "--ckpt_path=last")  # a first run: it starts, and says so
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"recon fit: there is no {run / 'checkpoints' / 'last.ckpt'} to resume: this is a new run"
            in done.stderr) and 'ckpt_path="last") is set' not in done.stderr  # instead of Lightning's warning
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_a_file_where_a_folder_goes_is_one_line_before_the_run(recon_here, shrink_flags, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    for flags, flag in (({"trainer.default_root_dir": taken}, "--trainer.default_root_dir"),
                        ({"export.dirpath": taken}, "--export.dirpath")):
        done = recon_here("fit", "-c", DEFAULT, *shrink_flags(flags))
        assert done.returncode == 1 and "Traceback" not in done.stderr
        expected = f"recon fit: error: {flag} {taken}: is a file; expected a folder (it is made when missing)"
        assert done.stderr.strip().splitlines()[-1] == expected
    assert taken.read_text() == "mine" and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_second_fit_into_a_folder_a_fit_is_training_in_is_refused_until_that_one_ends(shrink_flags, tmp_path):
    run = tmp_path / "run"
    environment = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "recon", "fit", "-c", DEFAULT,
                              *shrink_flags({"trainer.max_steps": 100_000})], cwd=ROOT, env=environment,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
            time.sleep(0.5)  # training, checkpoints written
        second = recon("fit", "-c", DEFAULT, *shrink_flags())
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"recon fit: error: {run}: another recon fit (process {first.pid}) is training in this run folder; wait "
            "for it or stop it, or give this run a folder of its own (--trainer.default_root_dir)")
        assert first.poll() is None  # the first goes on
        first.kill()  # kill -9: the kernel drops its lock
        first.wait()
    finally:
        first.kill()
    again = recon("fit", "-c", DEFAULT, *shrink_flags())
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_a_bad_config_value_is_one_line_naming_it(recon_here, shrink_flags):
    done = recon_here("fit", "-c", DEFAULT, *shrink_flags({"model.lr": -1}))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    expected = "recon fit: error: lr, sigma and schedule_gamma must be > 0, got -1.0, 0.0001, 0.3"
    assert done.stderr.strip().splitlines()[-1] == expected
    # a trainer setting Lightning refuses (its MisconfigurationException) reads the same way
    done = recon_here("fit", "-c", DEFAULT, *shrink_flags({"trainer.max_steps": -5}))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("recon fit: error: `max_steps` must be a non-negative")


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path, "w") as file:
        file.write("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]
    with atomic_write(path, "w") as file:
        file.write("new")
    assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


@pytest.mark.parametrize("torch_style", [False, True], ids=["oserror", "torch-zip-writer"])
def test_a_write_that_fills_the_disk_names_the_file_and_keeps_the_old_one(torch_style, tmp_path):
    path = tmp_path / "last.ckpt"

    def fill_the_disk(file):
        file.write(b"x" * 2**20)  # a megabyte written before the disk fills
        if not torch_style:
            raise OSError(errno.ENOSPC, "No space left on device")
        try:  # torch.save through a file object: the OSError is the context of its own RuntimeError
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    with pytest.raises(DiskFullError) as caught, atomic_write(path, "wb") as file:
        fill_the_disk(file)
    assert str(caught.value).startswith(f"{path}: no space left on device (")
    assert str(caught.value).endswith(f"free in {tmp_path}); no last.ckpt was written (the unfinished file had "
                                      "reached 1.0 MiB)")
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert sorted(tmp_path.iterdir()) == []
    path.write_bytes(b"old")
    with pytest.raises(DiskFullError, match="; the previous last.ckpt is kept"), atomic_write(path, "wb") as file:
        fill_the_disk(file)
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]
    with pytest.raises(RuntimeError, match="unexpected pos") as other, atomic_write(path, "wb"):
        raise RuntimeError("unexpected pos")  # any other failure is left as it is
    assert not isinstance(other.value, DiskFullError)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(megabytes) -> Path``: a folder on a tmpfs of that size, a real filesystem that fills (needs
    the right to mount, as root in CI; skipped without it). Unmounted afterwards."""
    mounted: list[Path] = []

    def mount(megabytes: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_read_only_run_folder_is_one_line(small_disk, recon_here, shrink_flags):
    frozen = small_disk(1)
    subprocess.run(["mount", "-o", "remount,ro", str(frozen)], check=True)
    for command, extra in (("fit", []), ("fit", ["--ckpt_path=last"])):
        done = recon_here(command, "-c", DEFAULT, *shrink_flags({"trainer.default_root_dir": frozen / "run"}), *extra)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"recon {command}: error: [Errno 30] Read-only file system: ") and str(frozen) in last


@pytest.mark.slow
def test_a_full_disk_ends_synthesis_and_a_fit_in_one_line_and_keeps_what_was_written(small_disk, shrink_flags,
                                                                                      tmp_path):
    disk = small_disk(1)
    out = disk / "synthetic.h5"
    done = subprocess.run([sys.executable, "-m", "recon.datamodules.cli", "synth", str(out), "--train", "48",
                           "--val", "0", "--test", "0", "--workers", "1", "--categories", "airplane", "chair"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # not the crash of HDF5 flushing into a full disk at exit
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    assert done.stderr.startswith(f"recon-data synth: error: {out}: no space left on device (")
    assert done.stderr.strip().endswith("no output file was written (the unfinished file had reached 1.0 MiB)")
    assert sorted(disk.iterdir()) == []  # the unfinished temporary file is gone
    # A fit whose checkpoint does not fit: warned at the start, then one line; what it wrote is kept.
    run = small_disk(64) / "run"
    done = recon("fit", "-c", DEFAULT, *shrink_flags({"trainer.default_root_dir": run}))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert any(line.startswith("recon fit: only ") and f"free for {run / 'checkpoints'}; a checkpoint of this model"
               in line for line in lines), done.stderr[-3000:]
    errors = [line for line in lines if line.startswith("recon fit: error: ")]  # W&B's summary follows it
    assert len(errors) == 1 and errors[0].startswith(f"recon fit: error: {run / 'checkpoints'}/"), done.stderr[-3000:]
    assert ": no space left on device (" in errors[0] and ".ckpt was written" in errors[0]
    assert (run / "config.yaml").is_file() and not list((run / "checkpoints").glob(".*.tmp-*"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_only_temporaries_of_dead_processes_are_stale(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no longer exists
    dead, alive = temporary_path(tmp_path / "last.ckpt", child.pid), temporary_path(tmp_path / "last.ckpt")
    other = tmp_path / "notes.txt"
    for path in (dead, alive, other):
        path.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(tmp_path.iterdir()) == sorted([alive, other])


# ----------------------------------------------------------------------------------------- checkpoints
def _checkpoint_every_step(tmp_path: Path) -> str:
    config = tmp_path / "every-step.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"logger": False, "callbacks": [{
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": None, "every_n_train_steps": 1, "save_top_k": 0, "save_last": True},
    }]}}))
    return str(config)


def _other_filesystem_tmpdir(tmp_path: Path) -> Path | None:
    """A folder on a tmpfs (another filesystem than the run folder) when the machine has one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = shm / f"recon-test-{os.getpid()}"
        folder.mkdir(exist_ok=True)
        return folder
    return None


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_save_leaves_last_ckpt_resumable(shrink_flags, tmp_path):
    run, config = tmp_path / "run", _checkpoint_every_step(tmp_path)
    checkpoints = run / "checkpoints"
    other_tmp = _other_filesystem_tmpdir(tmp_path)  # where Lightning's own save staged its file
    env = {"TMPDIR": str(other_tmp)} if other_tmp else {}
    flags = shrink_flags({"trainer.max_steps": 40, "trainer.val_check_interval": None,
                          "trainer.limit_val_batches": 0})
    environment = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **env}
    child = subprocess.Popen([sys.executable, "-m", "recon", "fit", "-c", DEFAULT, "-c", config, *flags], cwd=ROOT,
                             env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    killed_mid_save = False
    try:
        while time.monotonic() < deadline and child.poll() is None:
            # a save in progress after an earlier one completed: the moment a kill used to truncate last.ckpt
            if (checkpoints / "last.ckpt").is_file() and list(checkpoints.glob(".last.ckpt.tmp-*")):
                child.send_signal(signal.SIGKILL)
                killed_mid_save = True
                break
            time.sleep(0.002)
    finally:
        child.kill()
        child.wait()
    assert killed_mid_save, f"no checkpoint save was seen in progress: {child.stderr.read().decode()[-2000:]}"
    stale = list(checkpoints.glob(".last.ckpt.tmp-*"))
    assert stale  # SIGKILL leaves the unfinished file …
    saved = torch.load(checkpoints / "last.ckpt", weights_only=True, map_location="cpu")  # … and the old one intact
    step = saved["global_step"]
    assert step >= 1

    done = recon("fit", "-c", DEFAULT, "-c", config, *shrink_flags({"trainer.max_steps": step + 1,
                 "trainer.val_check_interval": None, "trainer.limit_val_batches": 0}), "--ckpt_path=last", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True, map_location="cpu")["global_step"] == step + 1
    assert not any(path.exists() for path in stale)  # the next start removed what the kill left
    assert "removed" in done.stderr and "killed run" in done.stderr
    if other_tmp:  # no checkpoint was staged in $TMPDIR (W&B and torch keep small caches there)
        assert not [path for path in other_tmp.rglob("*") if path.is_file() and path.stat().st_size > 2**20]
        shutil.rmtree(other_tmp)


@pytest.mark.slow
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_fit_saves_last_ckpt_at_its_step_and_exits_with_the_signals_status(sig, status, shrink_flags,
                                                                                         tmp_path):
    """Ctrl-C or SIGTERM mid-fit: the run ends with 130 or 143 (Lightning's own ending is 1 or 0: a scheduler would
    take a SIGTERM for success and a script would go on to test a half-trained model), after saving last.ckpt at
    the step reached; the run's own checkpoints come only at step 1000, so whatever last.ckpt holds the interrupt
    saved. ``--ckpt_path last`` continues from it."""
    run = tmp_path / "run"
    # a CSV log flushed every step (the test sees the steps go by) beside the W&B run
    loggers = tmp_path / "loggers.yaml"
    loggers.write_text("trainer:\n  logger:\n"
                       "    - {class_path: lightning.pytorch.loggers.WandbLogger, init_args: {save_dir: .}}\n"
                       "    - {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: ., name: logs,"
                       " flush_logs_every_n_steps: 1}}\n")
    flags = [*shrink_flags({"trainer.max_steps": 1000, "trainer.val_check_interval": 1000})]
    environment = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "recon", "fit", "-c", DEFAULT, "-c", str(loggers), *flags],
                             cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 0
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None and seen < 3:
            logs = list(run.glob("**/metrics.csv"))
            seen = max(0, len(logs[0].read_text().splitlines()) - 1) if logs else 0  # rows below the header
            time.sleep(0.2)
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
    assert seen >= 3, f"the fit logged no steps: {stderr[-3000:]}"
    assert child.returncode == status, stderr[-3000:]
    assert f"interrupted; exit status {status}" in stderr
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"]
    assert 1 <= step < 1000
    assert f"at step {step}: saved" in stderr
    # the W&B run records the same status: SIGTERM's used to be 0, a finished run on the dashboard
    (log,) = run.glob("wandb/offline-run-*/logs/debug.log")
    assert f"got exitcode: {status}" in log.read_text()
    if sig == signal.SIGINT:
        done = recon("fit", "-c", DEFAULT, *shrink_flags({"trainer.max_steps": step + 2, "trainer.val_check_interval":
                     1000, "trainer.logger": "false"}), "--ckpt_path=last")
        assert done.returncode == 0, done.stderr[-3000:]
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step + 2


# ------------------------------------------------------------------------------------------------ loggers
@pytest.mark.slow
@pytest.mark.parametrize("experiment", [[], ["-c", COLOR]], ids=["silhouette", "color"])
@pytest.mark.parametrize("logger", [
    ["--trainer.logger=false"],
    ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=."],
    ["--trainer.logger=lightning.pytorch.loggers.WandbLogger", "--trainer.logger.save_dir=."],
], ids=["none", "csv", "wandb"])
def test_every_shipped_config_runs_with_any_logger_or_none(experiment, logger, shrink_flags, tmp_path):
    from recon.cli import run_cli

    run = tmp_path / "run"
    cli = run_cli(["fit", "-c", DEFAULT, *experiment, *shrink_flags(), *logger])
    assert cli.trainer.global_step == 2 and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "media" / "silhouettes").glob("*.png"))  # media land in the run folder whatever logs
    kind = logger[0].rsplit(".", 1)[-1]
    assert (run / "wandb").exists() == (kind == "WandbLogger")
    if kind == "WandbLogger":
        assert list((run / "wandb").glob("offline-run-*"))  # offline although the flag did not say so


@pytest.mark.slow
def test_wandb_mode_disabled_makes_no_w_and_b_run_and_the_fit_and_test_go_on(recon_here, shrink_flags, tmp_path):
    """W&B's own off switch: recon's loggers keep W&B offline otherwise, which used to override it (an offline run
    was written), and a W&B run that is a no-op has no folder for the config and results recon copies into it."""
    run = tmp_path / "run"
    done = recon_here("fit", "-c", DEFAULT, *shrink_flags(), env={"WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    done = recon_here("test", "-c", DEFAULT, *shrink_flags(), "--ckpt_path=last", env={"WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "results.json").is_file() and (run / "logs").is_dir()  # the CSV logger still logs
    assert not (run / "wandb").exists() and not list(tmp_path.rglob("offline-run-*"))
    # the run's record in the run folder, where a resume and a sweep's best.yaml read it (it went to logs/version_0)
    assert (run / "config.yaml").is_file() and (run / "config-test.yaml").is_file()
    assert not list((run / "logs").rglob("config*.yaml"))


@pytest.mark.slow
def test_fewer_evaluation_items_than_processes_is_one_line_before_the_run(recon_here, shrink_flags, tmp_path):
    """Items are sharded without repeats: a process with none waited for the others' validation forever."""
    flags = shrink_flags({"data.categories": "[chair]", "data.val_views_per_object": 1})
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
    done = recon_here("fit", "-c", DEFAULT, *flags, *ddp)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    data = flags[0].split("=", 1)[1]
    assert done.stderr.strip().splitlines()[-1] == (
        f"recon fit: error: {data}: its 'val' split gives 1 evaluation item (1 object × 1 view) for 2 processes, and "
        "each needs at least one; run on fewer processes (--trainer.devices), or evaluate more views "
        "(--data.val_views_per_object) or objects")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_fraction_of_evaluation_batches_is_each_processs_own(recon_here, shrink_flags, tmp_path, monkeypatch):
    """Each process limits its own share. 5 val items in batches of 2 on 2 processes: 2 batches and 1, and half of 1
    is none: Lightning stopped that process once under way (a fit at its first validation), and the other ended on
    its lost peer. 9 items: 3 batches and 2, of which 0.7 scores 4 + 2 items; validate said 8."""
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    # refused before the run: never a second process (which, started from here, would run pytest again)
    monkeypatch.setattr(_SubprocessScriptLauncher, "launch", lambda *args, **kwargs: pytest.fail("the run started"))
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
    for stage in ("fit", "validate"):
        flags = shrink_flags({"data.categories": "[chair]", "data.val_views_per_object": 5,
                              "trainer.limit_val_batches": 0.5})
        done = recon_here(stage, "-c", DEFAULT, *flags, *ddp, "--ckpt_path=last")
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"recon {stage}: error: --trainer.limit_val_batches 0.5: process 1 of 2 evaluates 2 val items in 1 batch, "
            "and 0.5 of it is no batch; give a number of batches (--trainer.limit_val_batches 1) or a fraction of at "
            "least 1")
    flags = shrink_flags({"data.categories": "[chair]", "data.val_views_per_object": 9,
                          "trainer.limit_val_batches": 0.7})
    done = recon_here("validate", "-c", DEFAULT, *flags, *ddp)  # (no checkpoint: refused after the notice)
    assert ("recon validate: --trainer.limit_val_batches 0.7: scores 6 of the 9 val items it evaluates; its numbers "
            "are not the whole split's") in done.stderr
    assert done.returncode == 1 and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------- image size
def _views_file(path: Path, image_size: int) -> Path:
    """A small valid recon-views file of ``image_size`` views (random content): 2 categories × 1 object a split."""
    import numpy as np

    from recon.datamodules import SHAPENET_CATEGORIES, ViewsLayout, ViewsWriter

    rng = np.random.default_rng(0)
    layout = ViewsLayout(image_size=image_size)
    with ViewsWriter(path, SHAPENET_CATEGORIES[:2], source="test", layout=layout) as writer:
        for split in ("train", "val", "test"):
            images = rng.integers(0, 256, (2, layout.num_views, 4, image_size, image_size), dtype=np.uint8)
            voxels = rng.random((2, 32, 32, 32)) < 0.2
            writer.append(split, images, voxels, [0, 1], [f"{split}/a", f"{split}/b"])
    return path


@pytest.mark.slow
def test_a_file_of_another_image_size_is_refused_naming_the_flag_that_fits_it(recon_here, shrink_flags, tmp_path):
    from recon.cli import run_cli

    data = _views_file(tmp_path / "views32.h5", 32)
    done = recon_here("fit", "-c", DEFAULT, *shrink_flags({"data.path": data}))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"recon fit: error: {data}: holds 32×32 views but the model reads 64×64; train a model for this file with "
        "--model.encoder.init_args.image_size 32")
    cli = run_cli(["fit", "-c", DEFAULT, *shrink_flags({"data.path": data, "trainer.logger": "false"}),
                   "--model.encoder.init_args.image_size=32"])
    assert cli.trainer.global_step == 2 and cli.model.renderer.image_size == 32


@pytest.mark.parametrize(("script", "module"), [("recon", "recon.cli"), ("recon_data", "recon.datamodules.cli")])
def test_ctrl_c_while_a_command_starts_is_one_line_and_status_130(script, module, monkeypatch, capsys):
    # Importing torch and Lightning takes seconds: a Ctrl-C then used to end in a KeyboardInterrupt traceback.
    import importlib.abc

    from recon import console

    class CtrlCOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == module:
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "meta_path", [CtrlCOnImport(), *sys.meta_path])
    monkeypatch.setattr(sys, "argv", [script, "fit", "--trainer.max_steps", "3"])
    assert getattr(console, script)() == 130
    command = script.replace("_", "-")
    assert capsys.readouterr().err == f"{command} fit: interrupted; exit status 130\n"
