"""The ``recon`` command: LightningCLI over :class:`ReconModule` and the view-pair DataModule.

``recon fit|validate|test|predict -c configs/default.yaml [-c configs/encoder/resnet.yaml ...] [--key value]``;
later config files and flags win. Every configurable class lives in ``recon.*`` (a class defined in
``__main__`` would break ``class_path``), so this module only wires them together.
"""

from __future__ import annotations

import errno
import functools
import importlib
import inspect
import logging
import math
import os
import re
import shlex
import shutil
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from recon.allocator import keep_freed_memory
from recon.atomic import file_above
from recon.callbacks import InterruptCheckpoint, MeshWriter, StepProgressBar
from recon.callbacks.interrupt import forget_interrupts, interrupt_status, peer_gone
from recon.checkpoint_io import AtomicCheckpointIO
from recon.datamodules import ViewPairDataModule
from recon.errors import (
    PATH_ERRORS,
    ConfigError,
    DataFileError,
    UserError,
    debug,
    disk_full_cause,
    full_disk_message,
    human_size,
)
from recon.lifetime import stop_with_parent
from recon.module import ReconModule
from recon.run_lock import run_folder_lock
from recon.shipped import DEFAULT_CONFIG, default_config, shipped_hint

WANDB_RUN_KEY = "recon_wandb_run"  # a checkpoint's entry: the id of the W&B run that saved it
DESCRIPTION = ("recon: single-view 3D mesh reconstruction trained through a soft rasterizer (SoftRas). Also `recon "
               "sweep` (hyperparameter search: `recon sweep --help`) and `recon-data` (datasets: `recon-data --help`).")


class RunConfigSaver(SaveConfigCallback):
    """Save the fully resolved config with every run.

    In the run folder: a fit's as ``config.yaml`` (the record a resume, ``best.yaml`` of a sweep and the
    "holds another model" message point to), ``test``/``validate``/``predict``'s as ``config-<stage>.yaml``
    beside it, so evaluating a run never replaces the record of how it was trained. Each W&B run also gets the
    config as its own run config (so the dashboard can filter and group by any setting) and as
    ``recon-config.yaml`` among its files: runs that share a folder never share, or overwrite, each other's record.
    """

    _resumed_wandb_run: object = None  # the W&B run of the checkpoint a fit resumed from, if any
    trained_to: int | None = None  # a resumed fit's: the step of its run folder's last.ckpt (ReconCLI sets it)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning's own writes to the first logger's folder: the run folder for W&B, but CSVLogger's
        # logs/version_N when W&B is off (WANDB_MODE=disabled), where a resume or a sweep's best.yaml never looks
        stage = str(getattr(stage, "value", stage))  # Lightning passes its TrainerFn enum ("fit", "test", …)
        if stage != "fit":
            self.config_filename = f"config-{stage}.yaml"
        if self.already_saved:
            return
        if trainer.is_global_zero:
            folder = Path(trainer.default_root_dir)
            folder.mkdir(parents=True, exist_ok=True)
            if stage == "fit":
                self._keep_earlier_config(folder)
            self.parser.save(self.config, str(folder / self.config_filename), skip_none=False, overwrite=True,
                             multifile=self.multifile)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)  # every process, as Lightning's

    def _keep_earlier_config(self, folder: Path) -> None:
        """A fit resumed with other settings than the run's ``config.yaml`` (another number of processes, loss
        weights, a longer budget) keeps that record as ``config-until-step<N>.yaml``, N the step of the run's
        ``last.ckpt``: the settings that trained the steps up to it. A new run removes the earlier run's such files."""
        if self.trained_to is None:
            for earlier in folder.glob("config-until-step*.yaml"):
                earlier.unlink()
            return
        path = folder / self.config_filename

        def settings(text: str) -> object:  # what trains: not the checkpoint it starts from
            loaded = yaml.safe_load(text)
            return {k: v for k, v in loaded.items() if k != "ckpt_path"} if isinstance(loaded, dict) else loaded

        if not path.is_file() or settings(path.read_text()) == settings(self.parser.dump(self.config, skip_none=False)):
            return
        kept = folder / f"config-until-step{self.trained_to}.yaml"
        if not kept.exists():  # (a resume that failed before its first save trained nothing: the first stays)
            os.replace(path, kept)

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
            source = getattr(trainer.datamodule, "data_source", None)
            if source:  # which file the numbers come from, and what made it (synthetic, nmr, meshes …)
                run.config.update({"data_source": source}, allow_val_change=True)
            path = Path(run.dir) / "recon-config.yaml"
            path.write_text(text)
            run.save(str(path), base_path=run.dir, policy="now")

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # the W&B run this training logs to, which a fit resumed from the checkpoint continues
        # (ReconCLI._continue_wandb_run)
        ids = [logger.version for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if ids and isinstance(ids[0], str):
            checkpoint[WANDB_RUN_KEY] = ids[0]
        elif not ids and isinstance(self._resumed_wandb_run, str):  # a part run without W&B (WANDB_MODE=disabled)
            checkpoint[WANDB_RUN_KEY] = self._resumed_wandb_run  # keeps the run a later resume with W&B continues

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._resumed_wandb_run = checkpoint.get(WANDB_RUN_KEY)


class _ReconArgumentParser(LightningArgumentParser):
    """Lightning's parser with a short command-line error: the message and where to look, not the usage of every
    option first (``recon fit``'s runs to eighty lines, above the one line that says what was wrong). With
    ``RECON_DEBUG=1``, jsonargparse's own report."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or debug() or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)  # raises ArgumentError for a caller that reads it (the sweep's check)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        self._logger.error(message)
        sys.stderr.write(f"{prog}: error: {message}{_shipped_hint(message)}\n`{prog} --help` lists every option\n")
        sys.exit(2)


def _shipped_hint(message: str) -> str:
    """For a ``-c configs/…`` file missing from the working folder that recon ships: where recon's copy is."""
    missing = re.search(r"File does not exist: '([^']+)'", message)
    return shipped_hint(missing.group(1)) if missing else ""


class ReconCLI(LightningCLI):
    """LightningCLI with recon's defaults and one convenience: a run folder.

    ``trainer.default_root_dir`` names the run folder. A ``ModelCheckpoint`` whose ``dirpath`` is ``null``
    saves to ``<run folder>/checkpoints``, and a logger whose ``save_dir`` is ``"."`` (or ``null``) logs into
    the run folder itself, so one flag (``--trainer.default_root_dir runs/resnet``) moves a whole
    run, and ``--ckpt_path last`` finds ``last.ckpt`` of the run being resumed (Lightning's own default puts
    checkpoints in a new logger version folder per run, where ``last`` would find nothing).

    Trainer defaults: ``use_distributed_sampler=False`` (the DataModule shards val/test itself, without
    the repeats that would bias the IoU under DDP). ``config.yaml`` (``config-test.yaml`` for a test, …) is
    overwritten by a rerun in the same folder.
    """

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", {"use_distributed_sampler": False})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("parser_class", _ReconArgumentParser)
        # configs/default.yaml (the working folder's, else the one recon ships) is read first, under every -c file
        recipe = default_config()
        if recipe != DEFAULT_CONFIG and rank_zero_only.rank == 0:
            _notice(f"recon: no {DEFAULT_CONFIG} in this folder; reading the recipe recon ships, {recipe}")
        parser_kwargs = dict(kwargs.pop("parser_kwargs", None) or {})
        for name in self.subcommands() if run else []:
            parser_kwargs[name] = {"default_config_files": [recipe], **parser_kwargs.get(name, {})}
        if run:
            parser_kwargs.setdefault("description", DESCRIPTION)
        else:  # no subcommand: one parser
            parser_kwargs.setdefault("default_config_files", [recipe])
        super().__init__(ReconModule, ViewPairDataModule, args=args, run=run, parser_kwargs=parser_kwargs, **kwargs)

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        # a fit holds its run folder (rank 0 for a multi-process run, whose other processes share it)
        if subcommand != "fit" or rank_zero_only.rank != 0:
            super()._run_subcommand(subcommand)
            return
        with run_folder_lock(self.trainer.default_root_dir):
            _warn_if_checkpoints_may_not_fit(self.trainer, self.model)
            _warn_if_no_validation(self.trainer)
            super()._run_subcommand(subcommand)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # every run carries a MeshWriter: `recon predict` writes its meshes, `--export.dirpath` sets the folder
        parser.add_lightning_class_args(MeshWriter, "export")
        # one value, never two to keep equal by hand: the colour head reads the encoder's latent
        parser.link_arguments("model.encoder.init_args.dim", "model.colors.init_args.latent_dim")
        # the data's views must be the size the encoder reads: a file of another size is refused up front
        parser.link_arguments("model.encoder.init_args.image_size", "data.image_size")
        # the metrics' rows are the data's categories, and the checkpoint records them
        parser.link_arguments("data", "model.category_names", compute_fn=_category_names, apply_on="instantiate")

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        _expand_home(self.config[subcommand] if subcommand else self.config)

    @override
    def _parse_ckpt_path(self) -> None:
        """Lightning's: with ``--ckpt_path FILE`` the model is built from the hyperparameters the checkpoint saved,
        whatever the config says. Where they differ (a ResNet config given a baseline checkpoint), one line says
        which settings the checkpoint's replaced: the numbers are the checkpoint's model's."""
        subcommand = self.config.get("subcommand")
        if subcommand in ("test", "validate", "predict"):
            _run_checkpoint_file(self.config[subcommand])
        if subcommand and _checkpoint_file_error(self.config[subcommand].get("ckpt_path")):
            return  # no checkpoint to read settings from: refused by _check_checkpoint, after the data's checks
        before = self.config[subcommand].get("model") if subcommand else None
        before = before.clone() if isinstance(before, Namespace) else before
        super()._parse_ckpt_path()
        after = self.config[subcommand].get("model") if subcommand else None
        if not isinstance(before, Namespace) or not isinstance(after, Namespace):
            return
        changed = _model_changes(before, after)
        if changed:
            _notice(f"recon {subcommand}: the model is built from {self.config[subcommand].ckpt_path}'s saved "
                    f"settings, not the config's: {'; '.join(changed)}")

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if os.environ.get("WANDB_MODE") == "disabled":  # W&B's own off switch: no W&B run at all, not an offline one
            loggers = config.trainer.get("logger")
            if isinstance(loggers, list):
                config.trainer.logger = [logger for logger in loggers if not _is_a(logger, WandbLogger)]
            elif _is_a(loggers, WandbLogger):
                config.trainer.logger = False
        root = config.trainer.get("default_root_dir")
        if not root:
            return
        for callback in _as_list(config.trainer.get("callbacks")):
            if _is_a(callback, ModelCheckpoint) and callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = str(Path(root) / "checkpoints")
        for logger in _as_list(config.trainer.get("logger")):
            if _is_a(logger, Logger) and logger.init_args.get("save_dir", "") in (None, "."):
                logger.init_args.save_dir = root
            if _is_a(logger, WandbLogger):
                _name_wandb_run(logger.init_args, config)


    @override
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # a constructor refused a configured value: the user's to fix
            if isinstance(error, UserError):
                raise
            raise ConfigError(str(error)) from error
        # a missing data file stops the run here, before any run folder, log or W&B run exists (an existing
        # file was already checked when the DataModule was built)
        self.datamodule.check_file(self.subcommand)
        self.datamodule.check_shards(self.subcommand, self.trainer.world_size)
        self._check_fractional_limit()
        self._notice_empty_categories()
        self._check_folders()
        self._check_evaluation()
        self._check_wandb_login()  # first: a resume's "continuing W&B run" line must not precede W&B's refusal
        self._check_checkpoint()
        # W&B looks for the git repository from its folder when its run starts, and warns ("git root … does not
        # exist") when that folder is not there yet, as for any new run folder: made now that the data is checked
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.save_dir:
                Path(logger.save_dir).mkdir(parents=True, exist_ok=True)
            init = getattr(logger, "_wandb_init", None) if isinstance(logger, WandbLogger) else None
            if isinstance(init, dict) and init.get("anonymous") is None:
                # Lightning passes anonymous=None, which W&B (≥ 0.23) warns about at every start although it is
                # W&B's own default: left out, the same run starts without the warning
                init.pop("anonymous", None)

    def _notice_empty_categories(self) -> None:
        """One line when the split this command scores (fit, validate: val; test: test) lacks some selected
        categories: its mean IoU is over the others, which is not comparable with a mean over all of them."""
        split = {"fit": "val", "validate": "val", "test": "test"}.get(self.subcommand)
        data = self.datamodule
        if split is None or not Path(data.path).exists():
            return
        if missing := data.empty_categories(split):
            scored = len(data.selected_category_indices) - len(missing)
            _notice(f"{data.path}: its '{split}' split holds no object of {', '.join(missing)}: mean IoU is over the "
                    f"other {scored} categor{'y' if scored == 1 else 'ies'} (--data.categories to choose them)")

    def _check_wandb_login(self) -> None:
        """An online W&B run (``WANDB_MODE=online``) needs credentials (``wandb login``, or ``WANDB_API_KEY``): without
        them W&B would stop the fit once under way with a traceback, or wait at a prompt. Checked now, on rank 0,
        without prompting: one line before any run folder exists. Whether the key is accepted is W&B's to say."""
        loggers = [logger for logger in self.trainer.loggers if isinstance(logger, WandbLogger)]
        if os.environ.get("WANDB_MODE") != "online" or rank_zero_only.rank != 0 or not loggers:
            return
        import wandb

        if "prompt" not in inspect.signature(wandb.login).parameters:
            return  # a W&B older than login(prompt=...): its own error when the run starts (see main)
        offline = (f"or leave WANDB_MODE unset to log offline, and upload later with `wandb sync "
                   f"{shlex.quote(loggers[0].save_dir or '.')}/wandb/offline-run-*`")  # a folder with a space: quoted
        try:
            found = wandb.login(verify=False, prompt=False)
        except wandb.errors.Error as error:  # a malformed key
            raise ConfigError(f"W&B is online (WANDB_MODE=online) but {str(error).rstrip('.')}; {offline}") from error
        if not found:
            raise ConfigError(f"W&B is online (WANDB_MODE=online) but has no API key: run `wandb login` or set "
                              f"WANDB_API_KEY; {offline}")

    def _check_folders(self) -> None:
        """The run folder and the mesh export folder are made when missing; an existing file in their place is
        refused now, in one line, rather than as ``[Errno 17] File exists`` once the run is under way."""
        folders = {"--trainer.default_root_dir": self.trainer.default_root_dir}
        for callback in self.trainer.callbacks:
            if isinstance(callback, MeshWriter) and callback.dirpath:
                folders["--export.dirpath"] = callback.dirpath
        for flag, folder in folders.items():
            if folder and Path(folder).exists() and not Path(folder).is_dir():
                raise ConfigError(f"{flag} {folder}: is a file; expected a folder (it is made when missing)")
            if folder and (below := file_above(folder)) is not None:
                raise ConfigError(f"{flag} {folder}: {below} is a file, not a folder, so nothing can be made below it")
        if self.subcommand == "predict":
            self._check_predictions_keep_inputs()

    def _check_evaluation(self) -> None:
        """``test``, ``validate`` or ``predict`` limited to 0 batches would score or write nothing, and Lightning ends
        such a run with status 0 and no word: refused. ``validate`` writes no meshes: an ``--export.dirpath`` given
        to it is said to do nothing."""
        stage = self.subcommand
        if stage not in ("test", "validate", "predict"):
            return
        name = f"limit_{'val' if stage == 'validate' else stage}_batches"
        if getattr(self.trainer, name, None) == 0:
            does = "write no mesh" if stage == "predict" else "score no item"
            raise ConfigError(f"--trainer.{name} 0: recon {stage} would {does}; leave it out for every batch, or "
                              "give a number of batches or a fraction above 0")
        if stage == "validate":
            self._notice_partial_validation()
        writer = next((cb for cb in self.trainer.callbacks if isinstance(cb, MeshWriter)), None)
        if stage == "validate" and writer is not None and writer.dirpath:
            _notice(f"recon validate: --export.dirpath {writer.dirpath} is not used: validate writes no meshes "
                    "(recon test --export.dirpath writes the test split's, recon predict your images')")

    def _notice_partial_validation(self) -> None:
        """``recon validate`` limited by ``--trainer.limit_val_batches`` to part of what it evaluates: one line saying
        how many items its ``val/miou`` is over (``recon test`` says so in its results)."""
        limit, data = self.trainer.limit_val_batches, self.datamodule
        if (isinstance(limit, float) and limit == 1.0) or not Path(data.path).exists():  # 1 is a batch, 1.0 all
            return
        items, size = data.evaluated_items("val"), data.eval_batch_size
        # each process limits its own share (which may have a batch more than another's)
        scored = sum(min(share, size * _limited_batches(math.ceil(share / size), limit))
                     for share in data.shard_items("val", self.trainer.world_size))
        if scored < items:
            _notice(f"recon validate: --trainer.limit_val_batches {limit}: scores {scored} of the {items} val items "
                    "it evaluates; its numbers are not the whole split's")

    def _check_fractional_limit(self) -> None:
        """A fraction of the evaluation batches (``--trainer.limit_val_batches 0.5``) is taken by each process of its
        own share, and Lightning stops a process whose fraction is no batch, while the others go on and wait for it:
        the run ended in two lines, one of them the lost process's, once under way (a fit at its first validation).
        Refused now, in one line, where a share's fraction is no batch."""
        split = {"fit": "val", "validate": "val", "test": "test"}.get(self.subcommand)
        world_size, data = self.trainer.world_size, self.datamodule
        name = f"limit_{'test' if split == 'test' else 'val'}_batches"
        limit = getattr(self.trainer, name, None)
        if split is None or world_size <= 1 or not isinstance(limit, float) or not 0 < limit < 1 or (
                not Path(data.path).exists()):
            return
        for rank, share in enumerate(data.shard_items(split, world_size)):
            batches = math.ceil(share / data.eval_batch_size)
            if _limited_batches(batches, limit) == 0:
                raise ConfigError(f"--trainer.{name} {limit}: process {rank} of {world_size} evaluates {share} "
                                  f"{split} item{'s' * (share != 1)} in {batches} batch{'es' * (batches != 1)}, and "
                                  f"{limit} of {'them' if batches != 1 else 'it'} is no batch; give a number of "
                                  f"batches (--trainer.{name} 1) or a fraction of at least {1 / batches:.3g}")

    def _check_predictions_keep_inputs(self) -> None:
        """Predicting into the folder of the input images would write each ``<name>.png`` preview over the PNG it
        was predicted from: refused now, in one line, rather than replacing the user's photos."""
        from recon.datamodules.images import find_images, output_names

        writer = next((cb for cb in self.trainer.callbacks if isinstance(cb, MeshWriter)), None)
        images = self.datamodule.predict_images
        if writer is None or not writer.previews or not images:
            return
        folder = Path(writer.dirpath or Path(self.trainer.default_root_dir) / "predictions").resolve()
        files = find_images(images)
        for file, name in zip(files, output_names(files), strict=True):
            if folder / f"{name}.png" == file.parent.resolve() / file.name:  # a link in its place is an input too
                flag = "--export.dirpath" if writer.dirpath else "--trainer.default_root_dir"
                raise ConfigError(f"{flag}: predicting into {folder} would write the preview {name}.png over the "
                                  f"input image {file}; give the predictions a folder of their own "
                                  "(--export.dirpath out/)")

    def _check_checkpoint(self) -> None:
        """A checkpoint to restore (``--ckpt_path FILE``, or ``last``: the run's ``last.ckpt``) that another model
        saved is refused now, in one line (:meth:`ReconModule.check_checkpoint`), before the run folder or its W&B
        run exists; so is ``test``, ``validate`` or ``predict`` with no checkpoint at all, which would score the
        untrained model, and a file that is missing or no checkpoint (:func:`_checkpoint_file_error`). A zip archive
        this cannot read (pickled objects) is left to Lightning, which says why when it restores it."""
        if not self.subcommand or not isinstance(self.model, ReconModule):
            return
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if error := _checkpoint_file_error(ckpt_path):
            raise error
        if ckpt_path is None and self.subcommand != "fit":
            raise ConfigError(f"no --ckpt_path: recon {self.subcommand} would evaluate an untrained model; give the "
                              "trained run's checkpoint (--ckpt_path runs/default/checkpoints/best.ckpt, or last "
                              "with that run's --trainer.default_root_dir)")
        names = [Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
                 for cb in self.trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
        last = next((name for name in names if name.is_file()), None)
        if self.subcommand == "fit":  # a resume saves into its own run's folder; a new run is told below
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        if ckpt_path is None and self.subcommand == "fit" and last is not None:
            _notice(f"recon fit: {last.parent} holds an earlier run's checkpoints, which this new run replaces as "
                    "it saves its own; --ckpt_path last continues that run instead")
        if self.subcommand != "fit":  # a ModelCheckpoint's state only matters to a fit that goes on saving
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")
        if ckpt_path == "best" and self.subcommand != "fit":  # still the word: the run has no best checkpoint
            self._no_best_checkpoint()
        if ckpt_path == "last":
            if last is None:
                self._no_last_checkpoint(names)
                return
            if error := _checkpoint_file_error(str(last)):  # a last.ckpt cut short
                raise error
            path = last
        else:
            path = Path(ckpt_path) if ckpt_path and Path(ckpt_path).is_file() else None
        if path is None:
            return
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 (unreadable here, e.g. pickled objects: Lightning's restore decides)
            return
        if not isinstance(checkpoint, dict) or not {"state_dict", "pytorch-lightning_version"} <= set(checkpoint):
            raise DataFileError(f"{path}: a torch file, but not a checkpoint of a run (it has no state_dict and "
                                "pytorch-lightning_version: e.g. a model's weights saved with torch.save); give one "
                                "that recon fit saved, such as RUN/checkpoints/best.ckpt")
        self.model.check_checkpoint(checkpoint, path)
        if self.subcommand == "fit" and ckpt_path == "last":  # (a FILE's own settings build the model: nothing differs)
            _notice_resumed_settings(checkpoint, self.model, path)
        if self.subcommand == "fit":
            _notice_resumed_batch(checkpoint, self.datamodule.batch_size, self.trainer.world_size, path)
            # the run folder's last.ckpt: the step its config.yaml trained to, and where its W&B run got to
            newest = None if last is None else checkpoint if path.resolve() == last.resolve() else _load_or_none(last)
            if isinstance(newest, dict):
                for saver in (cb for cb in self.trainer.callbacks if isinstance(cb, RunConfigSaver)):
                    saver.trained_to = newest.get("global_step")
            self._continue_wandb_run(checkpoint.get(WANDB_RUN_KEY), path, checkpoint.get("global_step"), last, newest)

    def _continue_wandb_run(self, run_id: object, path: Path, step: object, last: Path | None,
                            newest: object) -> None:
        """A fit resumed from a checkpoint goes on logging to the W&B run that saved it, so that the dashboard shows
        one run with one set of curves, not a new run of the same name for every resume. Offline, each resume adds
        an ``offline-run-*-<id>`` folder, and ``wandb sync <run>/wandb/offline-run-*`` uploads them, in order, as
        that one run. Only where the run folder holds that W&B run: a checkpoint copied from another run starts a
        new one, and a logger whose ``id`` (or ``version``) the config sets, or ``WANDB_RUN_ID``, logs where it says.
        Nor from a checkpoint older than the run's ``last.ckpt`` (its ``best.ckpt``, a copy kept aside): that W&B run
        has logged the steps after it, and W&B keeps a run's first value of a step (it drops a step logged again
        online), so the dashboard would mix the two fits' curves. Such a fit starts a W&B run of its own, said in one
        line."""
        if not isinstance(run_id, str) or not re.fullmatch(r"[\w-]+", run_id) or os.environ.get("WANDB_RUN_ID"):
            return
        if last is not None and isinstance(step, int) and path.resolve() != last.resolve():
            # newest: last.ckpt as loaded (None where unreadable: the checkpoint given is what this fit resumes)
            same_run = isinstance(newest, dict) and newest.get(WANDB_RUN_KEY) == run_id
            if same_run and newest.get("global_step", -1) > step:
                if rank_zero_only.rank == 0:
                    _notice(f"recon fit: {path} is at step {step}, and W&B run {run_id}, which saved it, went on to "
                            f"step {newest['global_step']} ({last}): this fit logs to a new W&B run")
                return
        for logger in self.trainer.loggers:
            init = getattr(logger, "_wandb_init", None)
            if not isinstance(logger, WandbLogger) or not isinstance(init, dict) or init.get("id"):
                continue
            if logger.save_dir and any((Path(logger.save_dir) / "wandb").glob(f"*run-*-{run_id}")):
                init["id"] = logger._id = run_id
                init["resume"] = "allow"
                if rank_zero_only.rank == 0:
                    _notice(f"recon fit: continuing W&B run {run_id}, the run that saved {path.name}")

    def _no_best_checkpoint(self) -> NoReturn:
        """``--ckpt_path best`` for test, validate or predict where the run folder has no best checkpoint
        (:func:`_run_checkpoint_file` resolves it where it has). Lightning would stop with a traceback
        ("ModelCheckpoint is not configured to save the best model"): it knows a best model only within its fit."""
        found = [Path(cb.dirpath) / f"{cb.filename}{cb.FILE_EXTENSION}" for cb in self.trainer.checkpoint_callbacks
                 if getattr(cb, "dirpath", None) and getattr(cb, "filename", None) and cb.monitor
                 and "{" not in cb.filename]
        where = " or ".join(str(path) for path in found) or "best checkpoint (no ModelCheckpoint with a monitor)"
        raise ConfigError(f"--ckpt_path best: there is no {where}; point --trainer.default_root_dir at a trained run, "
                          "or give the checkpoint file (--ckpt_path RUN/checkpoints/best.ckpt)")

    def _no_last_checkpoint(self, names: list[Path]) -> None:
        """``--ckpt_path last`` where no run saved one (a mistyped ``--trainer.default_root_dir``, or a first run).
        Lightning then warns and goes on from fresh weights: for ``fit`` a new run, said here in one line; for
        ``test``, ``validate`` and ``predict`` the numbers of an untrained model, refused here."""
        where = " or ".join(str(name) for name in names) or "checkpoint folder (no ModelCheckpoint)"
        if self.subcommand != "fit":
            raise ConfigError(f"--ckpt_path last: there is no {where}; point --trainer.default_root_dir at a trained "
                              "run's folder, or give --ckpt_path a checkpoint file")
        warnings.filterwarnings("ignore", message=r'.*ckpt_path="last"\) is set, but there is no last checkpoint')
        if rank_zero_only.rank == 0:
            print(f"recon fit: there is no {where} to resume: this is a new run (--ckpt_path last resumes a run "
                  "that saved one)", file=sys.stderr, flush=True)

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with :class:`~recon.checkpoint_io.AtomicCheckpointIO` unless the config names another
        ``CheckpointIO`` and with :class:`~recon.callbacks.interrupt.InterruptCheckpoint`; what killed runs left in the
        checkpoint folders is removed before anything starts; Lightning's default progress bar becomes
        :class:`~recon.callbacks.progress.StepProgressBar`."""
        configured = self._get(self.config_init, "trainer", default={})
        plugins = kwargs.get("plugins", configured.get("plugins"))
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        # Read before the Trainer exists: it adds its default callbacks to the config's own list.
        named = configured.get("callbacks")
        named = named if isinstance(named, list) else [named]
        named_bar = any(isinstance(callback, ProgressBar) for callback in named)
        trainer = super().instantiate_trainer(**{**kwargs, "plugins": plugins})
        if not any(isinstance(callback, InterruptCheckpoint) for callback in trainer.callbacks):
            trainer.callbacks.append(InterruptCheckpoint())  # Ctrl-C and SIGTERM keep a fit's progress
        if not named_bar:  # Lightning added its default bar, which labels a run bounded by steps "Epoch 3/-2"
            trainer.callbacks[:] = [StepProgressBar() if type(callback) is RichProgressBar else callback
                                    for callback in trainer.callbacks]
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            for callback in trainer.checkpoint_callbacks:
                if getattr(callback, "dirpath", None):
                    io.sweep(Path(callback.dirpath))
        return trainer


_LINKED = {"category_names"}  # model settings the CLI fills from the data (a config leaves them unset)
_LINKED_ARGS = (".latent_dim",)  # arguments the CLI fills from another setting (the colour head's, from the encoder's)


# restored with the optimizer's state on resume, whatever the config says now
_OPTIMIZER_SETTINGS = ("lr", "betas")


def _load_or_none(path: Path) -> Any:
    """The checkpoint at ``path``, mapped rather than read; None where it cannot be loaded."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001
        return None


def _notice_resumed_settings(checkpoint: dict[str, Any], model: LightningModule, path: Path) -> None:
    """One line when ``fit --ckpt_path last`` resumes a run with other settings than it was saved with (the
    config's values build the model). The loss weights, σ and the lr schedule's step and factor apply from the saved
    step on; the lr and Adam's betas do not, as the run's are restored with the optimizer's state, and the model
    records the run's (the next checkpoint's settings stay true)."""
    saved = checkpoint.get("hyper_parameters") or {}
    changed = {key: (saved[key], value) for key, value in dict(model.hparams).items()
               if key in saved and not isinstance(value, dict | Namespace) and key != "category_names"
               and _plain(saved[key]) != _plain(value)}
    if not changed:
        return
    step = checkpoint.get("global_step", "?")
    parts = []
    for key, (old, new) in sorted(changed.items()):
        if key in _OPTIMIZER_SETTINGS:
            parts.append(f"{key} {new!r} is not used (the run's {old!r} is restored with its optimizer)")
            model.hparams[key] = old
        else:
            parts.append(f"{key} {old!r} → {new!r} applies from step {step} on")
    _notice(f"recon fit: resuming {path} with other settings than its run's: {'; '.join(parts)}")


def _notice_resumed_batch(checkpoint: dict[str, Any], batch_size: int, processes: int, path: Path) -> None:
    """One line when a fit resumes with another batch per step than it was saved with: another
    ``data.batch_size``, or the same on another number of processes (DDP's batch is per process). The steps
    then train on more or fewer pairs each, with the run's lr (restored with its optimizer), and the epoch in
    progress is drawn anew: its batches are no longer the saved ones."""
    try:
        (saved,) = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        before = (int(saved["processes"]), int(saved["batch_size"]))
    except (KeyError, TypeError, ValueError):  # a checkpoint from before recon recorded them, or not a recon loader's
        return
    if before[0] * before[1] == processes * batch_size:
        return
    step = checkpoint.get("global_step", "?")

    def pairs(count: int, batch: int) -> str:
        return f"{count * batch} ({count} process{'es' if count > 1 else ''} × {batch})"

    rank_zero_only(_notice)(f"recon fit: resuming {path}, trained on {pairs(*before)} view pairs a step, on "
                            f"{pairs(processes, batch_size)} from step {step} on, with the run's lr; the rest of the "
                            "epoch in progress is drawn anew")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _model_changes(before: Namespace, after: Namespace) -> list[str]:
    """``key old → new`` for each model setting that differs: a class by its name (``encoder ResNetEncoder →
    BaselineEncoder``), the same class by its differing arguments (``encoder.init_args.dim 256 → 512``)."""

    def name(value: Any) -> str:
        if isinstance(value, Namespace) and value.get("class_path"):
            return str(value.class_path).rsplit(".", 1)[-1]
        return repr(value.as_dict() if isinstance(value, Namespace) else value)

    changes = []
    for key in sorted(set(vars(before)) | set(vars(after))):
        old, new = before.get(key), after.get(key)
        if key in _LINKED or old == new:
            continue
        same_class = isinstance(old, Namespace) and isinstance(new, Namespace) and old.get("class_path") == new.get(
            "class_path")
        if not same_class:
            changes.append(f"{key} {name(old)} → {name(new)}")
            continue
        for leaf in sorted(set(old.keys()) | set(new.keys())):
            if old.get(leaf) != new.get(leaf) and not leaf.endswith(_LINKED_ARGS):
                changes.append(f"{key}.{leaf} {name(old.get(leaf))} → {name(new.get(leaf))}")
    return changes


def _checkpoint_file_error(ckpt_path: str | None) -> Exception | None:
    """The one-line error for ``--ckpt_path FILE`` that is missing, a folder, or no checkpoint (a copy cut short,
    another file), which must be refused before anything reads it; None for a readable file, for none, and for
    Lightning's words (``last``, ``best``, …) and URLs."""
    if not ckpt_path or str(ckpt_path) in ("last", "best", "hpc") or str(ckpt_path).startswith("registry") or (
            "://" in str(ckpt_path)):
        return None
    path = Path(ckpt_path)
    if path.is_dir():
        return IsADirectoryError(f"--ckpt_path {path}: is a folder; expected a checkpoint file, such as "
                                 f"{path / 'last.ckpt'}")
    if not path.is_file():
        return FileNotFoundError(f"--ckpt_path {path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # every checkpoint torch and Lightning write is a zip archive
        return DataFileError(_unreadable_checkpoint(path, "truncated, damaged or not a checkpoint (a .ckpt is a zip "
                                                          "archive, and this file has no zip directory; "
                                                          f"{human_size(path.stat().st_size)})"))
    stat = path.stat()
    problem = _archive_problem(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return DataFileError(_unreadable_checkpoint(path, problem)) if problem else None


@functools.lru_cache(maxsize=8)
def _archive_problem(path: str, mtime_ns: int, size: int) -> str | None:
    """Why the zip archive at ``path`` is no whole torch checkpoint, or None; once per file version (the command
    checks its checkpoint twice). Checksums too (~0.3 s for a 300 MiB checkpoint): torch reads a member without
    checking its CRC, so a copy damaged in the middle restored silently, with wrong weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist()):
                return "not a checkpoint (a zip archive, but not one torch wrote: it holds no data.pkl)"
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        return f"damaged ({error})"
    if damaged is not None:
        return f"damaged: its part {damaged} fails its checksum (a copy that went wrong, or a failing disk)"
    return None


def _unreadable_checkpoint(path: Path, why: str) -> str:
    """The one line for a checkpoint file that cannot be restored: cut short (a copy interrupted), damaged, or
    another file."""
    message = f"{path}: {why}; copy it again or give another checkpoint"
    siblings = [p for p in sorted(path.parent.glob("*.ckpt")) if p != path and zipfile.is_zipfile(p)]
    if siblings:
        message += f" (this folder also holds {', '.join(p.name for p in siblings)})"
    return message


def _warn_if_no_validation(trainer: Trainer) -> None:
    """One line when a fit that validates every N steps ends (``max_steps``) before step N: it will log no
    ``val/miou`` and save no ``best.ckpt``, which ``make train``'s test and a sweep's objective read."""
    interval, steps = trainer.val_check_interval, trainer.max_steps
    if (isinstance(interval, int) and trainer.check_val_every_n_epoch is None and 0 < steps < interval
            and trainer.limit_val_batches != 0):
        _notice(f"recon fit: --trainer.max_steps {steps} ends before the first validation (every {interval} steps): "
                "no val/miou and no best.ckpt; set --trainer.val_check_interval to at most max_steps to validate")


def _warn_if_checkpoints_may_not_fit(trainer: Trainer, model: torch.nn.Module) -> None:
    """One line when the checkpoint folder's filesystem has less room than a fit's checkpoints take: the weights
    and Adam's two moments each, for last.ckpt, best.ckpt and the one being written next to them. A full disk
    then ends the fit with one line, keeping the checkpoints already written (:mod:`recon.atomic`)."""
    folders = {Path(cb.dirpath) for cb in trainer.checkpoint_callbacks
               if getattr(cb, "dirpath", None) and "://" not in str(cb.dirpath)}  # not a remote URL
    size = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    for folder in sorted(folders):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if free < 3 * size:
            _notice(f"recon fit: only {human_size(free)} free for {folder}; a checkpoint of this model takes "
                    f"~{human_size(size)} and a fit needs room for three (last.ckpt, best.ckpt and the next one "
                    f"being written: ~{human_size(3 * size)}); it will stop with an error if the disk fills")


def _limited_batches(batches: int, limit: int | float) -> int:
    """The batches of ``batches`` that a ``--trainer.limit_*_batches`` of ``limit`` leaves a process (Lightning's
    rule: a number of batches, or a fraction rounded down)."""
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


@rank_zero_only
def _notice(line: str) -> None:
    print(line, file=sys.stderr)


# the settings that name a file or folder: a leading ~ is the user's home, as in a shell (which leaves the ~ of
# --data.path=~/x.h5 alone, and a config file's always)
_PATH_SETTINGS = (("data", "path"), ("data", "predict_images"), ("trainer", "default_root_dir"), ("export", "dirpath"),
                  (None, "ckpt_path"))


def _expand_home(config: Namespace) -> None:
    for section, key in _PATH_SETTINGS:
        group = config.get(section) if section else config
        value = group.get(key) if isinstance(group, Namespace) else None
        if isinstance(value, str) and value.startswith("~"):
            group[key] = os.path.expanduser(value)


def _name_wandb_run(init_args: Namespace, config: Namespace) -> None:
    """Fill what the config leaves ``null``: run name ``<encoder>[+color]-<data>-s<seed>``, group (``WANDB_RUN_GROUP``
    or the dataset) and tags (encoder, dataset and ``WANDB_TAGS``), so the encoder comparison is one click on
    the dashboard. W&B is offline unless ``WANDB_MODE=online``, whether a config or a flag made the logger."""
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
    if "offline" in init_args:  # offline unless asked otherwise with WANDB_MODE=online, whatever made the logger
        init_args.offline = os.environ.get("WANDB_MODE") != "online"


def _category_names(data: ViewPairDataModule) -> list[str] | None:
    """The data's category names, or None while its file is missing (``check_file`` then says why)."""
    try:
        return list(data.category_names)
    except FileNotFoundError:
        return None


def _run_checkpoint_file(config: Namespace) -> None:
    """``--ckpt_path last`` or ``best`` of a test, validate or predict: the run folder's ``last.ckpt`` or best
    checkpoint, when it is there, so that the model is built from the settings it saved as for a checkpoint file,
    and the config the run records names the file. (Lightning knows no ``best`` outside the fit that saved it.)"""
    word = config.get("ckpt_path")
    if word not in ("last", "best"):
        return
    root = config.trainer.get("default_root_dir")
    for callback in _as_list(config.trainer.get("callbacks")):
        if not _is_a(callback, ModelCheckpoint):
            continue
        folder = callback.init_args.get("dirpath") or (Path(root) / "checkpoints" if root else None)
        name = "last" if word == "last" else callback.init_args.get("filename")
        if word == "best" and (not callback.init_args.get("monitor") or not name or "{" in name):
            continue  # no single best file to point at
        if folder is not None and (Path(folder) / f"{name}.ckpt").is_file():
            config.ckpt_path = str(Path(folder) / f"{name}.ckpt")
            return


def _is_a(entry: Any, kind: type) -> bool:
    """Whether a config entry (``class_path`` + ``init_args``) makes a ``kind`` (a subclass counts too)."""
    if not isinstance(entry, Namespace) or entry.get("init_args") is None or not entry.get("class_path"):
        return False
    module, _, name = str(entry.class_path).rpartition(".")
    try:
        made = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False  # jsonargparse reports an unknown class itself
    return isinstance(made, type) and issubclass(made, kind)


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
    _finish_wandb_run()
    return cli


def _finish_wandb_run(exit_code: int | None = None) -> None:
    """Finish the W&B run this process has open, if any (``exit_code`` 1 marks it failed), so that a later call
    from the same process starts a run of its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def _wandb_comm_message(error: BaseException) -> str | None:
    """One line for an online W&B run that could not reach or be accepted by its server (W&B's ``CommError``, after
    its own retries) or found no API key, or None for any other error."""
    errors = getattr(sys.modules.get("wandb"), "errors", None)
    comm_error, usage_error = getattr(errors, "CommError", None), getattr(errors, "UsageError", None)
    # (no API key, as an older W&B says it once the run starts: see ReconCLI._check_wandb_login)
    no_key = usage_error is not None and isinstance(error, usage_error) and "API key" in str(error)
    if not no_key and (comm_error is None or not isinstance(error, comm_error)):
        return None
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
    fix = "run `wandb login` or set WANDB_API_KEY" if no_key else "check the network (or WANDB_BASE_URL)"
    return (f"W&B (WANDB_MODE=online) could not start its run: {reason}; {fix}, or leave WANDB_MODE unset to log "
            "offline and upload later with `wandb sync`")


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip: … try installing litlogger" line, printed at every start: an advertisement for
    another logger, nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _drop_lightning_tips() -> None:
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info writes
    if not any(isinstance(f, _NoTips) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_NoTips())


def _first_line(error: BaseException) -> str:
    """The error's first line, without gloo's sign-off ("… GLHF! 🏖️")."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"\s*This is typically caused by a remote worker crashing.*$", "", line)


def _resume_hint(subcommand: str) -> str:
    return "; `--ckpt_path last` continues the fit from its last.ckpt" if subcommand == "fit" else ""


def _interrupted(subcommand: str, status: int) -> int:
    if rank_zero_only.rank == 0:
        print(f"recon {subcommand}: interrupted; exit status {status}", file=sys.stderr)
    _finish_wandb_run(exit_code=status)  # W&B would record a SIGTERM's as 0: a finished run on the dashboard
    return status


def _failed(subcommand: str, message: str) -> int:
    print(f"recon {subcommand}: error: {message}", file=sys.stderr)
    _finish_wandb_run(exit_code=1)
    return 1


def _known_failure(error: Exception, subcommand: str, peer_lost: bool) -> str | None:
    """One line for an error that is not recon's bug, or None: a read-only folder (as a PermissionError is), a
    process of a multi-process run that ended, a full disk under a write of Lightning's or W&B's own, an online W&B
    run that could not start."""
    if isinstance(error, OSError) and error.errno == errno.EROFS:
        return f"{error}; give a folder this machine can write to"
    if peer_lost:
        return (f"another process of this multi-process run ended (killed, or see its output above): "
                f"{_first_line(error)}{_resume_hint(subcommand)}")
    cause = disk_full_cause(error)
    return full_disk_message(cause) if cause is not None else _wandb_comm_message(error)


def main(args: ArgsType = None) -> int:
    """Entry point of the ``recon`` console script: exit status 0 on success, 1 on a user error (a bad path,
    value or file: one line on stderr, the traceback only with ``RECON_DEBUG=1``), 2 on a command-line error, 130
    after Ctrl-C and 143 after SIGTERM (a fit saves ``last.ckpt`` first: :mod:`recon.callbacks.interrupt`).
    ``recon sweep …`` is a search over ``recon fit`` runs (:mod:`recon.sweep`), not a Lightning subcommand."""
    argv = sys.argv[1:] if args is None else [str(arg) for arg in args]
    if argv[:1] == ["sweep"]:
        from recon.sweep import main as sweep

        return sweep(argv[1:])
    stop_with_parent()  # a sweep's trial or a table's run ends with the sweep or table, kill -9 included
    keep_freed_memory()  # megabyte-sized temporaries otherwise page-fault afresh every step
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates, once per run: nothing a user can change
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    _drop_lightning_tips()
    subcommand = next((arg for arg in argv if not arg.startswith("-")), "")
    forget_interrupts()
    try:
        run_cli(args)
    except SystemExit:
        # Lightning ends an interrupted trainer function with exit status 1 (Ctrl-C) or 0 (SIGTERM): neither
        # tells a script or scheduler that the run did not finish.
        status = interrupt_status()
        if status is None:
            raise
        return _interrupted(subcommand, status)
    except (UserError, MisconfigurationException, *PATH_ERRORS) as error:  # Lightning's: a trainer setting
        if debug():
            raise
        return _failed(subcommand, str(error))
    except Exception as error:  # one not of recon's making (_known_failure), or an interrupted multi-process run
        if debug():
            raise
        gone = peer_gone(error)
        if gone == "Ctrl-C":  # the other processes stopped on the Ctrl-C this one held while it saved
            return _interrupted(subcommand, interrupt_status())
        message = _known_failure(error, subcommand, peer_lost=gone == "lost")
        if message is None:
            raise
        return _failed(subcommand, message)
    return 0
