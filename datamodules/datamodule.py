"""``ViewPairDataModule``: the recon-views HDF5 file as Lightning train/val/test/predict loaders."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from recon.datamodules.categories import SHAPENET_CATEGORIES, resolve_categories
from recon.datamodules.dataset import ViewPairDataset, images_to_float, view_eyes
from recon.datamodules.h5 import ViewsFileInfo, open_views, read_info
from recon.datamodules.samplers import (
    EvalPairSampler,
    PairBatchSampler,
    TrainPairSampler,
    distributed_rank_and_size,
    evaluation_views,
)
from recon.errors import ConfigError, DataFileError

if TYPE_CHECKING:
    from recon.datamodules.images import ImageFolderDataset

SKIPPED_SHOWN = 20  # unreadable predict images named on the console; the writer's skipped.txt lists them all

DEFAULT_SYNTHETIC_PATH = "data/synthetic.h5"


def _category_list(categories: list[str | int] | str | None) -> list[str] | None:
    """``categories`` as given on the command line or in a config → a list of names or synsets.

    One string may list several, comma-separated (``chair,car``). An unquoted synset that YAML 1.1 reads as an
    octal number (``[03001627]`` → 787351: a leading 0 and only the digits 0–7, as for chair, display, sofa and
    watercraft) is turned back into its eight digits; so is one written without its leading 0 (2691156).
    """
    if categories is None:
        return None
    names: list[str] = []
    known = {category.synset for category in SHAPENET_CATEGORIES}
    for entry in [categories] if isinstance(categories, str) else categories:
        if isinstance(entry, int) and not isinstance(entry, bool):
            octal, decimal = f"{entry:o}".zfill(8), f"{entry:08d}"  # (or a synset written without its leading 0)
            names.append(decimal if decimal in known and octal not in known else octal)
            continue
        text = str(entry).strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        names.extend(part.strip().strip("'\"") for part in text.split(",") if part.strip().strip("'\""))
    return names


class _TrainLoader(DataLoader):
    """The training loader, resumable within an epoch: Lightning saves a loader's ``state_dict`` in the checkpoint
    and hands it back on resume. A fit resumed from a checkpoint saved mid-epoch then leaves out the batches that
    epoch had already trained on, where a plain loader would start the epoch over (training on its first batches
    twice and never on its last ones): the resumed run sees the batches of the uninterrupted one.

    The position is the restored training loop's: the batches of the epoch it has trained (with
    ``accumulate_grad_batches`` > 1 too, and of an epoch that ``limit_train_batches`` shortens). Another batch
    size, data file or number of processes since the save changes the epoch's length, and the loader then starts
    the epoch over. The sampler's epoch is set here too, before Lightning makes the loader's iterator: Lightning
    sets it only afterwards, when worker processes have already drawn the resumed epoch's batches with the epoch
    the sampler had (the first), so with ``data.num_workers`` > 0 the first epoch after a resume trained on another
    epoch's view pairs than the uninterrupted fit.
    """

    datamodule: ViewPairDataModule

    def state_dict(self) -> dict[str, int]:
        # the batch per process and the processes: a resume on another number says what a step then trains on
        return {"batches_per_epoch": self._epoch_batches(), "batch_size": self.datamodule.batch_size,
                "processes": distributed_rank_and_size()[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        trainer = self.datamodule.trainer
        if trainer is None or not isinstance(self.sampler, PairBatchSampler):
            return
        self.sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        batches = self._epoch_batches()
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if state.get("batches_per_epoch") == batches and 0 < done < batches:
            self.sampler.skip = done

    def _epoch_batches(self) -> int:
        """An epoch's batches: the loader's, or fewer where ``--trainer.limit_train_batches`` limits them."""
        fit_loop = getattr(self.datamodule.trainer, "fit_loop", None)
        limits = getattr(getattr(fit_loop, "_combined_loader", None), "limits", None) or [len(self)]
        return int(min(len(self), limits[0]))


class ViewPairDataModule(pl.LightningDataModule):
    """View pairs from a recon-views file (``recon-data synth`` / ``recon-data convert-nmr``).

    Args:
        path: the HDF5 file.
        batch_size: items per training batch; ``eval_batch_size`` (default: the same) for val/test.
        num_workers: DataLoader worker processes (each opens the file itself).
        categories: names ("chair") or synsets ("03001627") to keep, as a list or one comma-separated string
            (``--data.categories chair,car``); None keeps all.
        class_balanced: training draws the category uniformly, then an object (SoftRas); else objects uniformly.
        train_voxels: include ``voxels`` in training batches (default no). Training only compares silhouettes;
            a 32 KiB grid per item is the largest cost of a read and half of what a worker ships per batch.
        val_views_per_object: evenly spaced views per object during validation (None: all 24);
            ``val_max_objects_per_category`` caps objects per category. Test always uses every view of every object.
        seed: seeds the training draws with (seed, epoch, rank).
        synthesize: whether ``fit`` may generate a missing ``path`` as a synthetic file with
            ``synth_train``/``synth_val``/``synth_test`` objects per category and ``synth_seed``. None: only
            when ``path`` is the default ``data/synthetic.h5``; True: at any path; False: never. ``validate``,
            ``test`` and ``predict`` never generate: their numbers must come from the file asked for.
        eval_batch_size: items per val/test/predict batch (None: ``batch_size``).
        pin_memory: page-locked batches (None: when CUDA is available).
        persistent_workers: keep workers alive across epochs (when ``num_workers > 0``).
        predict_images: a folder or glob of images (PNG, JPEG) for ``predict``.
        image_size: the size of the model's input views (the ``recon`` command links it to the encoder's
            ``image_size``): a file of another size is refused with a message saying what to set, and
            ``predict`` resizes its images to it. None: the file's size (64 without a file).

    Batches hold ``images_a``/``images_b`` (B, 4, S, S), ``eyes_a``/``eyes_b`` (B, 3), ``views_a``/``views_b``,
    ``voxels`` (B, R, R, R), ``category`` and ``object_index`` (see ``ViewPairDataset``). The loaders carry
    the images as the stored uint8 — a quarter of the bytes through worker shared memory and host-to-GPU
    copies — and ``on_after_batch_transfer``, which Lightning runs on the device, turns them into float32
    in [0, 1]; iterating a loader outside a Trainer, call ``data.on_after_batch_transfer(batch, 0)``.
    The loaders shard across DDP ranks themselves: run the Trainer with ``use_distributed_sampler=False``.
    An existing ``path`` is validated when the module is built (``read_info``), so a bad file fails before
    any Trainer, run folder or logger exists; ``data_source`` says which file the numbers come from.
    """

    def __init__(
        self,
        path: str = DEFAULT_SYNTHETIC_PATH,
        batch_size: int = 32,
        num_workers: int = 0,
        categories: list[str | int] | str | None = None,
        class_balanced: bool = True,
        train_voxels: bool = False,
        val_views_per_object: int | None = 4,
        val_max_objects_per_category: int | None = None,
        seed: int = 0,
        synthesize: bool | None = None,
        synth_train: int = 48,
        synth_val: int = 8,
        synth_test: int = 8,
        synth_seed: int = 0,
        eval_batch_size: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        predict_images: str | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size={batch_size}, num_workers={num_workers}; expected ≥ 1 and ≥ 0")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size={eval_batch_size}; expected ≥ 1, or None for the same as batch_size")
        if val_views_per_object is not None and val_views_per_object < 1:
            raise ValueError(f"val_views_per_object={val_views_per_object}; expected ≥ 1 or None (all views)")
        categories = _category_list(categories)
        if categories is not None and not categories:
            raise ValueError("categories names no category; give names or synsets (chair, 03001627), or leave it "
                             "out (null) for all")
        self.save_hyperparameters()
        self.path = path
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers = num_workers
        self.categories: list[str] | None = categories
        self.class_balanced = class_balanced
        self.train_voxels = train_voxels
        self.val_views_per_object = val_views_per_object
        self.val_max_objects_per_category = val_max_objects_per_category
        self.seed = seed
        self.synthesize = synthesize
        self.synth_counts = {"train": synth_train, "val": synth_val, "test": synth_test}
        self.synth_seed = synth_seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.predict_images = predict_images
        self._predict_dataset: tuple[tuple[str, int], ImageFolderDataset] | None = None  # (pattern, size), images
        self.image_size = image_size
        self._info: ViewsFileInfo | None = None
        self._objects: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # split -> (object indices, categories)
        if Path(path).exists():
            self._info = read_info(path)  # a bad file fails here, before any run folder or logger exists
            if not predict_images:  # predict reads its images, not this file (check_file checks it for the others)
                self._check_image_size()

    def _synthesizes(self) -> bool:
        """Whether ``fit`` generates ``path`` when it is missing (see ``synthesize``)."""
        if self.synthesize is None:
            return os.path.abspath(self.path) == os.path.abspath(DEFAULT_SYNTHETIC_PATH)
        return self.synthesize

    def check_file(self, stage: str | None) -> None:
        """Raise ``FileNotFoundError`` saying how to make ``path`` when it is missing and ``stage`` (``"fit"``,
        ``"validate"``, ``"test"``) will not generate it. An existing file must hold objects of the selected
        categories in the splits the stage reads (:meth:`_check_splits`). ``predict`` reads no file: its
        ``predict_images`` must name at least one image file. The ``recon`` command calls this before anything is
        created; ``prepare_data`` too."""
        if stage == "predict":
            if not self.predict_images:
                raise ConfigError("predict needs images: set data.predict_images to a folder or glob of .png or .jpg "
                                  "files")
            self._predict_images()  # FileNotFoundError when nothing matches, DataFileError when nothing is usable
            return
        if Path(self.path).exists():
            self._check_image_size()
            self._check_splits(stage)
            return
        fitting = stage == "fit"
        if fitting and self._synthesizes():
            return
        why = (" (only `fit` generates a missing file; validate, test and predict never do)"
               if not fitting and self._synthesizes() else "")
        also = "; or pass --data.synthesize true to generate one there" if fitting else ""
        raise FileNotFoundError(
            f"{self.path}: no such file{why}; create it with `recon-data synth {self.path}` (synthetic) or "
            f"`recon-data convert-nmr NMR_DIR {self.path}` (the NMR/SoftRas data){also}")

    def prepare_data(self) -> None:
        """Generate the synthetic dataset when ``path`` is missing, the stage is ``fit`` and ``synthesize``
        allows it (rank 0 only); otherwise a missing file raises ``FileNotFoundError`` saying how to make it."""
        trainer = self.trainer
        stage = trainer.state.fn.value if trainer is not None and trainer.state.fn is not None else None
        self.check_file(stage)
        if stage != "predict":  # predict reads its images, never this file
            self.generate_missing()

    def generate_missing(self) -> bool:
        """Generate ``path`` as ``fit`` does (:meth:`prepare_data`): when it is missing and ``synthesize`` allows
        it. Whether it did."""
        if Path(self.path).exists() or not self._synthesizes():
            return False
        from rich.progress import Progress

        from recon.datamodules.synthetic import generate_synthetic

        counts = ", ".join(f"{n} {split}" for split, n in self.synth_counts.items())
        print(f"{self.path}: missing; generating the synthetic dataset there ({len(SHAPENET_CATEGORIES)} "
              f"categories × {counts} objects, seed {self.synth_seed})", flush=True)
        with Progress() as progress:
            generate_synthetic(self.path, self.synth_counts, seed=self.synth_seed, progress=progress)
        return True

    @property
    def info(self) -> ViewsFileInfo:
        """The validated description of ``path`` (read on first use)."""
        if self._info is None:
            self._info = read_info(self.path)
        return self._info

    @property
    def data_source(self) -> dict[str, str | None]:
        """Where the numbers come from: ``{"path": the file's absolute path, "source": its ``source``
        attribute ("synthetic", "nmr", ...)}``, for results files and run records."""
        return {"path": str(Path(self.path).resolve()), "source": self.info.attributes.get("source")}

    @property
    def category_names(self) -> list[str]:
        """Names of the file's category table; ``batch["category"]`` indexes it."""
        if self._info is None and not Path(self.path).exists() and self._synthesizes():
            return [c.name for c in SHAPENET_CATEGORIES]  # what prepare_data will write
        return self.info.category_names

    @property
    def num_categories(self) -> int:
        return len(self.category_names)

    @property
    def selected_category_indices(self) -> list[int]:
        """Indices into ``category_names`` of the categories this module loads."""
        table = list(self.info.categories)
        chosen = resolve_categories(self.categories, table) if self.categories else table
        return [table.index(c) for c in chosen]

    def setup(self, stage: str | None = None) -> None:
        """Validate the file, its image size and the category selection; splits are indexed when their loader
        is built. ``predict`` reads only ``predict_images``."""
        if stage == "predict" and self.predict_images:
            return
        self.selected_category_indices  # noqa: B018 — raises early on a bad file or unknown categories
        self._check_image_size()

    def _check_splits(self, stage: str | None) -> None:
        """``DataFileError`` naming the file when a split ``stage`` reads (fit: train and val; validate: val; test:
        test) has no object of the selected categories: the run would fail or score nothing once under way."""
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", ())
        for split in needed:
            if len(self._split_objects(split)[0]) == 0:
                names = [self.info.categories[i].name for i in self.selected_category_indices]
                raise DataFileError(f"{self.path}: its '{split}' split holds no object of {names} (it holds "
                                    f"{self.info.split_sizes.get(split, 0)} objects in all); recon {stage} needs "
                                    f"{' and '.join(needed)} objects")

    def empty_categories(self, split: str) -> list[str]:
        """The selected categories of which ``split`` holds no object: their IoU is missing from the split's mean
        (which is over the categories with items)."""
        present = set(self._split_objects(split)[1].tolist())
        return [self.info.categories[i].name for i in self.selected_category_indices if i not in present]

    def check_shards(self, stage: str | None, world_size: int) -> None:
        """``DataFileError`` when an evaluation split ``stage`` reads (fit and validate: val; test: test) has fewer
        items than ``world_size`` processes: items are sharded without repeats, and a process left with none would
        wait for the others' validation forever. The ``recon`` command calls this before anything is created."""
        splits = {"fit": "val", "validate": "val", "test": "test"}
        if world_size <= 1 or stage not in splits or not Path(self.path).exists():
            return
        split = splits[stage]
        objects, per_object = self._evaluated(split)
        if objects * per_object < world_size:
            more = " (--data.val_views_per_object)" if split == "val" else ""
            items = objects * per_object
            raise DataFileError(f"{self.path}: its '{split}' split gives {items} evaluation item{'s' * (items != 1)} "
                                f"({objects} object{'s' * (objects != 1)} × {per_object} view{'s' * (per_object != 1)})"
                                f" for {world_size} processes, and each needs at least one; run on fewer processes "
                                f"(--trainer.devices), or evaluate more views{more} or objects")

    def _evaluated(self, split: str) -> tuple[int, int]:
        """(objects, views per object) an evaluation of ``split`` scores: for val, as ``val_views_per_object`` and
        ``val_max_objects_per_category`` choose."""
        views, most = (self.val_views_per_object, self.val_max_objects_per_category) if split == "val" else (None, None)
        return len(self._split_objects(split, most)[0]), len(evaluation_views(self.info.layout.num_views, views))

    def evaluated_items(self, split: str) -> int:
        """The (object, view) items a whole evaluation of ``split`` scores (see :meth:`_evaluated`)."""
        objects, per_object = self._evaluated(split)
        return objects * per_object

    def shard_items(self, split: str, world_size: int) -> list[int]:
        """The items of an evaluation of ``split`` (see :meth:`evaluated_items`) that each of ``world_size`` processes
        scores: rank r takes items r, r+W, r+2W, … (:class:`~recon.datamodules.samplers.EvalPairSampler`)."""
        items = self.evaluated_items(split)
        return [len(range(rank, items, world_size)) for rank in range(world_size)]

    def _check_image_size(self) -> None:
        stored = self.info.layout.image_size
        if self.image_size is not None and stored != self.image_size:
            raise ConfigError(
                f"{self.path}: holds {stored}×{stored} views but the model reads {self.image_size}×{self.image_size}; "
                f"train a model for this file with --model.encoder.init_args.image_size {stored}")

    def _split_objects(self, split: str, max_per_category: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(object indices, their categories) of ``split`` in the selected categories, file order, at most
        ``max_per_category`` per category (the first ones)."""
        if split not in self._objects:
            if split not in self.info.split_sizes:
                raise DataFileError(f"{self.path}: has no '{split}' split; it has {list(self.info.split_sizes)}")
            with open_views(self.path) as file:
                category = file[split]["category"][()].astype(np.int64)
            keep = np.flatnonzero(np.isin(category, self.selected_category_indices))
            self._objects[split] = (keep, category[keep])
        objects, category = self._objects[split]
        if max_per_category is not None:
            rank_in_category = np.zeros(len(objects), dtype=np.int64)
            for c in np.unique(category):
                rank_in_category[category == c] = np.arange(int((category == c).sum()))
            chosen = rank_in_category < max_per_category
            objects, category = objects[chosen], category[chosen]
        return objects, category

    def split_items(self, split: str) -> int:
        """The (object, view) items of ``split`` in the selected categories that a whole test pass scores."""
        return len(self._split_objects(split)[0]) * self.info.layout.num_views

    def _loader(self, split: str, sampler: TrainPairSampler | EvalPairSampler, batch_size: int,
                voxels: bool = True, kind: type[DataLoader] = DataLoader) -> DataLoader:
        # Whole batches are read by one dataset call (batch_size=None + a batch sampler): per-item dicts and
        # their collation cost more than the HDF5 reads themselves.
        dataset = ViewPairDataset(self.path, split, self.info.layout, self.info.split_sizes[split],
                                  eyes=view_eyes(self.info.layout), float_images=False, voxels=voxels)
        return kind(dataset, batch_size=None, sampler=PairBatchSampler(sampler, batch_size),
                    num_workers=self.num_workers, pin_memory=self.pin_memory,
                    persistent_workers=self.persistent_workers and self.num_workers > 0)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Scale the uint8 images the loaders ship to float32 in [0, 1], on the batch's device."""
        if isinstance(batch, dict):
            for key in ("images_a", "images_b"):
                if key in batch and batch[key].dtype == torch.uint8:
                    batch[key] = images_to_float(batch[key])
        return batch

    def train_dataloader(self) -> DataLoader:
        objects, category = self._split_objects("train")
        rank, world_size = distributed_rank_and_size()
        sampler = TrainPairSampler(objects, category, self.info.layout.num_views, self.class_balanced, self.seed,
                                   rank, world_size)
        loader = self._loader("train", sampler, self.batch_size, voxels=self.train_voxels, kind=_TrainLoader)
        loader.datamodule = self
        return loader

    def _eval_loader(self, split: str, views_per_object: int | None, max_per_category: int | None) -> DataLoader:
        rank, world_size = distributed_rank_and_size()
        num_views = self.info.layout.num_views
        sampler = EvalPairSampler(self._split_objects(split, max_per_category)[0], num_views,
                                  evaluation_views(num_views, views_per_object), rank, world_size)
        return self._loader(split, sampler, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val", self.val_views_per_object, self.val_max_objects_per_category)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test", None, None)

    def _predict_images(self) -> ImageFolderDataset:
        """The :class:`ImageFolderDataset` of ``predict_images``, made (every file read and checked) once for the
        check before the run starts and for the loader."""
        from recon.datamodules.images import ImageFolderDataset

        size = self.image_size or (self.info.layout.image_size if Path(self.path).exists() else 64)
        made = self._predict_dataset
        if made is None or made[0] != (self.predict_images, size):
            made = ((self.predict_images, size), ImageFolderDataset(self.predict_images, image_size=size))
            self._predict_dataset = made
        return made[1]

    def predict_dataloader(self) -> DataLoader:
        """The images of ``predict_images`` (items ``{"images": (4, 64, 64), "name": str}``). Under DDP rank r of W
        takes images r, r+W, r+2W, …, as the evaluation loaders do, and the ranks left one short take one of the first
        images again (its files are written twice, the same): every process has as many batches, so that a fraction
        of them (``--trainer.limit_predict_batches 0.5``) is a batch on each, and none skips the predict's closing
        hooks, which the others wait for."""
        self.check_file("predict")  # predict_images set, matching, and one of them usable
        dataset = self._predict_images()
        if dataset.skipped and (self.trainer is None or self.trainer.is_global_zero):
            for file, reason in dataset.skipped[:SKIPPED_SHOWN]:
                print(f"skipped {file}: {reason}", flush=True)
            if len(dataset.skipped) > SKIPPED_SHOWN:
                print(f"skipped {len(dataset.skipped) - SKIPPED_SHOWN} more unusable images", flush=True)
        rank, world_size = distributed_rank_and_size()
        shard = [(rank + world_size * index) % len(dataset) for index in range(math.ceil(len(dataset) / world_size))]
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=shard, num_workers=self.num_workers)
