"""Shared fixtures: one tiny synthetic recon-views file per session, and CLI flags that shrink any config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# W&B must never reach for the network from a test (an online wandb.init waits on it)
os.environ.setdefault("WANDB_MODE", "offline")
# The default rasterizer kernels (numba's on CPU) for the whole session, as users get them, unless the caller's
# shell chose others. tests/test_numba_kernels.py compares them with the eager ones; tests/test_fused.py turns the
# inductor ones on for itself, at small sizes.
os.environ.setdefault("RECON_FUSED", "auto")
# Without a GPU, tests/test_triton.py runs the Triton kernels in Triton's interpreter. Triton reads
# TRITON_INTERPRET when it defines its own helpers (its reductions' combine functions, at import), so it is set
# here, before anything imports Triton; with a GPU the same tests run the compiled kernels.
if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Under pytest-xdist (`make test` runs one worker per core) each worker, and every process a test starts, computes on
# one thread: more runnable threads than cores make torch's parallel regions wait on descheduled threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

TINY_CATEGORIES = ("airplane", "chair")
TINY_COUNTS = {"train": 2, "val": 1, "test": 1}


class _DropTips(logging.Filter):
    """Lightning logs two "💡 Tip" lines per Trainer; they bury what a failing test printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropTips())


@pytest.fixture(scope="session")
def tiny_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recon-views file: 2 categories × (2 train, 1 val, 1 test) objects × 24 views, made once (~seconds)."""
    from recon.datamodules.synthetic import generate_synthetic

    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    # supersample=1: hard-edged masks, ~10x faster to make; fine for tests
    generate_synthetic(path, counts=TINY_COUNTS, categories=list(TINY_CATEGORIES), seed=0, supersample=1)
    return path


@pytest.fixture
def shrink_flags(tiny_h5: Path, tmp_path: Path):
    """``shrink_flags(overrides=None) -> list[str]``: flags that turn any recon config into a seconds-long run.

    Tiny file, batch 2, no workers, no synthesis, 2 training steps, at most 2 eval batches of 2 views per
    object, the run folder in ``tmp_path/run``. ``overrides`` (``{"trainer.max_steps": 4}``) replace or add
    flags; a value of None drops one.
    """

    def flags(overrides: dict[str, object] | None = None) -> list[str]:
        values: dict[str, object] = {
            "data.path": str(tiny_h5),
            "data.synthesize": "false",
            "data.batch_size": 2,
            "data.eval_batch_size": 2,
            "data.num_workers": 0,
            "data.val_views_per_object": 2,
            "trainer.default_root_dir": str(tmp_path / "run"),
            "trainer.max_steps": 2,
            "trainer.val_check_interval": 2,
            "trainer.limit_val_batches": 2,
            "trainer.limit_test_batches": 2,
            "trainer.num_sanity_val_steps": 0,
            "trainer.log_every_n_steps": 1,
            "trainer.enable_progress_bar": "false",
        }
        values.update(overrides or {})
        return [f"--{key}={value}" for key, value in values.items() if value is not None]

    return flags


@pytest.fixture
def overfit_batch(tiny_h5: Path) -> dict:
    """One fixed training batch of the tiny file (4 objects × 2 views), as the module receives it; seeds torch."""
    import torch

    from recon.datamodules import ViewPairDataModule

    torch.manual_seed(0)
    data = ViewPairDataModule(path=str(tiny_h5), batch_size=4)
    data.setup("fit")
    return data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)


@pytest.fixture
def ctrl_c_before_step():
    """``ctrl_c_before_step(step, during="optimizer", presses=1)``: a Lightning callback that sends this process a
    real SIGINT (``presses`` of them) inside training step ``step``: just before the optimizer steps, or
    ``during="backward"`` just before the loss's backward (where a Ctrl-C usually lands: forward and backward are
    most of a step)."""
    import signal

    from lightning.pytorch import Callback

    class CtrlCBeforeStep(Callback):
        def __init__(self, step: int, during: str = "optimizer", presses: int = 1) -> None:
            self.step, self.during, self.presses = step, during, presses

        def _press(self, trainer) -> None:
            if trainer.global_step == self.step:
                for _ in range(self.presses):
                    os.kill(os.getpid(), signal.SIGINT)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if self.during == "optimizer":
                self._press(trainer)

        def on_before_backward(self, trainer, pl_module, loss):
            if self.during == "backward":
                self._press(trainer)

    return CtrlCBeforeStep
