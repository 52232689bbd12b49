"""The ``recon`` command: LightningCLI over :class:`ReconModule` and the view-pair DataModule.

``recon fit|validate|test|predict -c configs/default.yaml [-c configs/encoder/resnet.yaml ...] [--key value]``;
later config files and flags win. Every configurable class lives in ``recon.*`` (a class defined in
``__main__`` would break ``class_path``), so this module only wires them together.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override

from recon.allocator import keep_freed_memory
from recon.datamodules import ViewPairDataModule
from recon.module import ReconModule

CHECKPOINT_CLASSES = ("lightning.pytorch.callbacks.ModelCheckpoint", "ModelCheckpoint")
WANDB_CLASSES = ("lightning.pytorch.loggers.WandbLogger", "lightning.pytorch.loggers.wandb.WandbLogger", "WandbLogger")


class RunConfigSaver(SaveConfigCallback):
    """Save the fully resolved config with every run.

    Besides ``config.yaml`` in the run folder, each W&B run gets the config as its own run config (so the
    dashboard can filter and group by any setting) and as ``recon-config.yaml`` among its files: runs that
    share a folder never share, or overwrite, each other's record.
    """

    @override
    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        for logger in loggers:
            run = logger.experiment
            run.config.update({"recon": self.parser.dump(self.config, format="json", skip_none=False)},
                              allow_val_change=True)
            run.config.update({"stage": stage}, allow_val_change=True)
            path = Path(run.dir) / "recon-config.yaml"
            path.write_text(text)
            run.save(str(path), base_path=run.dir, policy="now")


class ReconCLI(LightningCLI):
    """LightningCLI with recon's defaults and one convenience: a run folder.

    ``trainer.default_root_dir`` names the run folder. A ``ModelCheckpoint`` whose ``dirpath`` is ``null``
    saves to ``<run folder>/checkpoints``, and a logger whose ``save_dir`` is ``"."`` (or ``null``) logs into
    the run folder itself, so one flag (``--trainer.default_root_dir runs/resnet``) moves a whole
    run, and ``--ckpt_path last`` finds ``last.ckpt`` of the run being resumed (Lightning's own default puts
    checkpoints in a new logger version folder per run, where ``last`` would find nothing).

    Trainer defaults: ``use_distributed_sampler=False`` (the DataModule shards val/test itself, without
    the repeats that would bias the IoU under DDP). ``config.yaml`` is overwritten by a rerun in the same
    folder.
    """

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", {"use_distributed_sampler": False})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        super().__init__(ReconModule, ViewPairDataModule, args=args, run=run, **kwargs)

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.get("default_root_dir")
        if not root:
            return
        for callback in _as_list(config.trainer.get("callbacks")):
            if isinstance(callback, Namespace) and callback.get("class_path") in CHECKPOINT_CLASSES:
                if callback.get("init_args") is not None and callback.init_args.get("dirpath") is None:
                    callback.init_args.dirpath = f"{root}/checkpoints"
        for logger in _as_list(config.trainer.get("logger")):
            if isinstance(logger, Namespace) and logger.get("init_args") is not None:
                if "save_dir" in logger.init_args and logger.init_args.save_dir in (None, "."):
                    logger.init_args.save_dir = root
                if logger.get("class_path") in WANDB_CLASSES:
                    _name_wandb_run(logger.init_args, config)


def _name_wandb_run(init_args: Namespace, config: Namespace) -> None:
    """Fill what the config leaves ``null``: run name ``<encoder>[+color]-<data>-s<seed>``, group (``WANDB_RUN_GROUP``
    or the dataset) and tags (encoder, dataset and ``WANDB_TAGS``), so the encoder comparison is one click on
    the dashboard. ``WANDB_MODE=online`` turns a config's ``offline: true`` off; offline is the default."""
    encoder = str(config.model.get("encoder", {}).get("class_path", "baseline")).rsplit(".", 1)[-1]
    encoder = encoder.removesuffix("Encoder").lower() or "encoder"
    if config.model.get("colors"):  # a colour head: a different model, never the same run name
        encoder += "+color"
    data = Path(str(config.data.get("path") or "data")).stem
    seed = config.get("seed_everything")
    if init_args.get("name") is None:
        init_args.name = f"{encoder}-{data}-s{seed}"
    if init_args.get("group") is None and "group" in init_args:
        init_args.group = os.environ.get("WANDB_RUN_GROUP") or data
    if init_args.get("tags") is None and "tags" in init_args:
        extra = [tag for tag in os.environ.get("WANDB_TAGS", "").split(",") if tag]
        init_args.tags = list(dict.fromkeys([encoder, data, *extra]))
    if os.environ.get("WANDB_MODE") == "online":
        init_args.offline = False


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def run_cli(args: ArgsType = None) -> ReconCLI:
    """Run one ``recon`` subcommand from Python (``args``: a list of strings) and return the CLI object, whose
    ``trainer``, ``model`` and ``datamodule`` stay available.

    The W&B run the subcommand opened is finished when it returns, so a second call in the same process
    (``fit`` then ``test`` from Python or a test) starts its own run instead of logging into the first.
    """
    cli = ReconCLI(args=args)
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    return cli


def main(args: ArgsType = None) -> int:
    """Entry point of the ``recon`` console script: exit status 0 on success (errors raise or exit non-zero)."""
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list) and argv[:1] == ["sweep"]:  # a search over `recon fit` runs, not a Lightning subcommand
        from recon.sweep import main as sweep

        return sweep(argv[1:])
    keep_freed_memory()  # megabyte-sized temporaries otherwise page-fault afresh every step
    run_cli(args)
    return 0
