"""ViewPairDataModule, ViewPairDataset and the samplers: content, balance, sharding, workers, Lightning."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from recon.datamodules import datamodule as datamodule_module
from recon.datamodules.categories import SHAPENET_CATEGORIES
from recon.datamodules.datamodule import ViewPairDataModule
from recon.datamodules.dataset import ViewPairDataset
from recon.datamodules.h5 import ViewsLayout, ViewsWriter, open_views
from recon.datamodules.samplers import EvalPairSampler, PairBatchSampler, TrainPairSampler, other_view
from recon.errors import ConfigError, DataFileError
from recon.render import eye_from_angles

CATS = [SHAPENET_CATEGORIES[i] for i in (0, 4, 10)]  # airplane, chair, table
COUNTS = {"train": (5, 2, 3), "val": (2, 1, 2), "test": (1, 1, 1)}  # objects per category, deliberately unequal


@pytest.fixture(scope="module")
def random_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recon-views file of random bytes (fast to make; the loaders do not care what the pixels show)."""
    path = tmp_path_factory.mktemp("dm") / "random.h5"
    rng = np.random.default_rng(0)
    with ViewsWriter(path, CATS, source="test") as writer:
        for split, per_category in COUNTS.items():
            category = np.repeat(np.arange(len(CATS)), per_category)
            rng.shuffle(category)
            n = len(category)
            images = rng.integers(0, 256, (n, 24, 4, 64, 64), dtype=np.uint8)
            writer.append(split, images, rng.random((n, 32, 32, 32)) < 0.1, category, [str(i) for i in range(n)])
    return path


def _check_batch(batch: dict[str, torch.Tensor], path: Path, split: str) -> None:
    n = len(batch["object_index"])
    shapes = {"images_a": (n, 4, 64, 64), "images_b": (n, 4, 64, 64), "eyes_a": (n, 3), "eyes_b": (n, 3),
              "views_a": (n,), "views_b": (n,), "voxels": (n, 32, 32, 32), "category": (n,), "object_index": (n,)}
    dtypes = {"images_a": torch.float32, "eyes_a": torch.float32, "views_a": torch.int64, "voxels": torch.bool,
              "category": torch.int64, "object_index": torch.int64}
    assert {k: tuple(v.shape) for k, v in batch.items()} == shapes
    assert all(batch[k].dtype == dtype for k, dtype in dtypes.items())
    eyes = eye_from_angles(2.732, 30.0, -15.0 * torch.arange(24.0)).float()
    with open_views(path) as file:
        group = file[split]
        for i, (o, a, b) in enumerate(zip(*(batch[k].tolist() for k in ("object_index", "views_a", "views_b")),
                                          strict=True)):
            torch.testing.assert_close(batch["images_a"][i], torch.from_numpy(group["images"][o, a]).float() / 255)
            torch.testing.assert_close(batch["images_b"][i], torch.from_numpy(group["images"][o, b]).float() / 255)
            assert torch.equal(batch["voxels"][i], torch.from_numpy(group["voxels"][o]))
            assert batch["category"][i] == group["category"][o]
            torch.testing.assert_close(batch["eyes_a"][i], eyes[a])
            torch.testing.assert_close(batch["eyes_b"][i], eyes[b])


def _epoch(loader: torch.utils.data.DataLoader) -> dict[str, torch.Tensor]:
    batches = list(loader)
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.parametrize(("num_workers", "persistent"), [(0, False), (2, False), (2, True)])
def test_batches_hold_the_files_content(random_file: Path, num_workers: int, persistent: bool) -> None:
    dm = ViewPairDataModule(str(random_file), batch_size=4, num_workers=num_workers, persistent_workers=persistent,
                            train_voxels=True)
    dm.setup("fit")
    assert dm.category_names == ["airplane", "chair", "table"] and dm.num_categories == 3
    train = dm.train_dataloader()
    shipped = next(iter(train))
    assert shipped["images_a"].dtype == torch.uint8  # the loaders ship bytes; the hook scales them
    batch = dm.on_after_batch_transfer(shipped, 0)
    _check_batch(batch, random_file, "train")
    float_loader = DataLoader(ViewPairDataset(random_file, "train", ViewsLayout(), 10), batch_size=None,
                              sampler=train.sampler,
                              num_workers=num_workers)  # float32 straight from the dataset
    assert torch.equal(next(iter(float_loader))["images_b"], batch["images_b"])
    keys = _epoch(train)
    assert len(keys["object_index"]) == 10  # one item per object
    reference = ViewPairDataModule(str(random_file), batch_size=3)
    reference.setup("fit")
    same = _epoch(reference.train_dataloader())  # worker count and batch size do not change the draws
    assert "voxels" not in same  # by default training batches leave the voxels out: training never reads them
    assert all(torch.equal(keys[k], same[k]) for k in ("object_index", "views_a", "views_b"))
    train.sampler.set_epoch(1)
    for i, _ in enumerate(train):  # stop an epoch early, then read a full one: nothing stale or torn
        if i == 1:
            break
    train.sampler.set_epoch(2)
    _check_batch(dm.on_after_batch_transfer(_epoch(train), 0), random_file, "train")
    val = dm.on_after_batch_transfer(_epoch(dm.val_dataloader()), 0)
    _check_batch(val, random_file, "val")
    assert len(val["object_index"]) == 5 * 4  # 4 views per object during validation
    assert not (val["views_a"] == val["views_b"]).any()


def test_single_items_and_errors(random_file: Path) -> None:
    dataset = ViewPairDataset(random_file, "val", ViewsLayout(), 5)
    item = dataset[(3, 7, 8)]
    assert item["images_a"].shape == (4, 64, 64) and item["views_b"] == 8 and item["object_index"] == 3
    with pytest.raises(IndexError, match="outside 5 objects × 24 views"):
        dataset[(5, 0, 0)]
    dataset[(0, 0, 0)]
    restored = pickle.loads(pickle.dumps(dataset))  # picklable once opened
    assert torch.equal(restored[(3, 7, 8)]["images_a"], item["images_a"])


def test_train_sampler_is_reproducible_per_epoch_and_rank() -> None:
    objects, categories = np.arange(11), np.array([0] * 6 + [1] * 5)

    def draws(epoch: int, rank: int, world_size: int = 2) -> list[tuple[int, int, int]]:
        sampler = TrainPairSampler(objects, categories, 24, seed=7, rank=rank, world_size=world_size)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert len(draws(0, 0)) == 6 and len(draws(0, 0, world_size=1)) == 11  # ceil(N / world size)
    assert draws(0, 0) == draws(0, 0)
    assert draws(0, 0) != draws(1, 0) and draws(0, 0) != draws(0, 1)
    batches = list(PairBatchSampler(TrainPairSampler(objects, categories, 24, seed=7), 4))
    assert [len(b) for b in batches] == [4, 4, 3]


@pytest.mark.parametrize(("balanced", "expected"), [(True, 0.5), (False, 0.1)])
def test_class_balanced_draws_categories_uniformly(balanced: bool, expected: float) -> None:
    categories = np.array([0] * 90 + [1] * 10)
    sampler = TrainPairSampler(np.arange(100), categories, 24, class_balanced=balanced)
    picks = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        picks += [o for o, _, _ in sampler]
    assert np.mean(categories[picks] == 1) == pytest.approx(expected, abs=0.03)
    views = np.array([[a, b] for _, a, b in sampler])
    assert set(views.ravel()) == set(range(24)) and (views[:, 0] == views[:, 1]).mean() < 0.2  # independent


def test_eval_sharding_covers_every_item_once() -> None:
    objects = np.array([0, 2, 3, 5, 8])
    single = list(EvalPairSampler(objects, 24))
    assert len(single) == 5 * 24 and len(set(single)) == len(single)
    shards = [list(EvalPairSampler(objects, 24, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(single)
    assert [len(s) for s in shards] == [len(EvalPairSampler(objects, 24, rank=r, world_size=3)) for r in range(3)]
    assert all(other_view(o, v, 24) != v and 0 <= other_view(o, v, 24) < 24 for o in range(50) for v in range(24))


def test_datamodule_shards_val_and_test_across_ranks(random_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def items(rank: int, world_size: int, stage: str) -> list[tuple[int, int, int]]:
        monkeypatch.setattr(datamodule_module, "distributed_rank_and_size", lambda: (rank, world_size))
        dm = ViewPairDataModule(str(random_file), batch_size=4, val_views_per_object=None)
        dm.setup(stage)
        loader = dm.val_dataloader() if stage == "validate" else dm.test_dataloader()
        epoch = _epoch(loader)
        return list(zip(*(epoch[k].tolist() for k in ("object_index", "views_a", "views_b")), strict=True))

    for stage, objects in (("validate", 5), ("test", 3)):
        single = items(0, 1, stage)
        assert len(single) == objects * 24
        assert sorted(items(0, 2, stage) + items(1, 2, stage)) == sorted(single)


def test_category_selection_and_validation_subsets(random_file: Path) -> None:
    dm = ViewPairDataModule(str(random_file), batch_size=8, categories=["table", "02691156"],
                            val_views_per_object=2, val_max_objects_per_category=1)
    dm.setup("fit")
    assert dm.selected_category_indices == [0, 2]
    train = _epoch(dm.train_dataloader())
    assert set(train["category"].tolist()) <= {0, 2} and len(train["category"]) == 8
    val = _epoch(dm.val_dataloader())
    assert Counter(val["category"].tolist()) == {0: 2, 2: 2}  # 1 object × 2 views per category
    assert sorted(set(val["views_a"].tolist())) == [0, 12]
    test = _epoch(dm.test_dataloader())
    assert len(test["category"]) == 2 * 24  # test ignores the validation subsets
    with pytest.raises(ValueError, match="unknown or unavailable categories \\['sofa'\\]"):
        ViewPairDataModule(str(random_file), categories=["sofa"]).setup("fit")


class Tiny(pl.LightningModule):
    """Trains one weight on the images' mean: enough for Lightning to run every stage's data hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.weight * batch["images_a"].mean()).sum()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pass

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pass

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return batch["images"].mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer() -> pl.Trainer:
    return pl.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=1, use_distributed_sampler=False)


@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch, random_file: Path) -> list[tuple[str, dict[str, int], int]]:
    """Calls of the synthetic generator, which here copies ``random_file`` instead of rendering 13 categories
    (rendering is tested in test_synthetic.py; what is tested here is when the DataModule generates)."""
    calls = []

    def copy_instead(out: str, counts: dict[str, int], seed: int, progress: object) -> None:
        calls.append((out, counts, seed))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(random_file.read_bytes())

    monkeypatch.setattr("recon.datamodules.synthetic.generate_synthetic", copy_instead)
    return calls


def test_missing_file_names_the_path_and_how_to_make_it(tmp_path: Path, generated: list) -> None:
    missing = tmp_path / "data" / "shapenett.h5"
    for synthesize in (None, False, True):  # no trainer: not fit, so never generated
        with pytest.raises(FileNotFoundError, match=f"^{missing}: no such file.*`recon-data synth {missing}`.*"
                                                    f"`recon-data convert-nmr NMR_DIR {missing}`"):
            ViewPairDataModule(str(missing), synthesize=synthesize).prepare_data()
    with pytest.raises(FileNotFoundError, match="shapenett.h5: no such file"):
        ViewPairDataModule(str(missing)).setup("fit")
    assert generated == [] and not missing.exists()


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluation_never_synthesizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generated: list,
                                      stage: str) -> None:
    monkeypatch.chdir(tmp_path)  # the default path data/synthetic.h5, explicitly allowed: still never
    data = ViewPairDataModule(synthesize=True)  # (predict reads predict_images, never a data file)
    expected = ((ConfigError, "predict needs images") if stage == "predict" else
                (FileNotFoundError, "data/synthetic.h5: no such file \\(only `fit` generates"))
    with pytest.raises(expected[0], match=expected[1]):
        getattr(_trainer(), stage)(Tiny(), datamodule=data)
    assert generated == [] and not (tmp_path / "data").exists()
    if stage == "predict":  # with its images: predicts, and still generates nothing (it generated the whole set)
        _object_png(tmp_path / "photo.png")
        data = ViewPairDataModule(synthesize=True, predict_images=str(tmp_path / "photo.png"))
        data.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.PREDICTING))
        data.prepare_data()
        assert len(data.predict_dataloader().dataset) == 1
        assert generated == [] and not (tmp_path / "data").exists()


def test_fit_synthesizes_at_the_default_path_or_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           generated: list, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    typo = "data/synthetic2.h5"
    with pytest.raises(FileNotFoundError, match="synthetic2.h5: no such file; create it with"):
        _trainer().fit(Tiny(), datamodule=ViewPairDataModule(typo))  # None: only the default path
    with pytest.raises(FileNotFoundError, match="synthetic.h5: no such file"):
        _trainer().fit(Tiny(), datamodule=ViewPairDataModule(synthesize=False))
    assert generated == []
    capsys.readouterr()
    data = ViewPairDataModule(synth_train=3, synth_val=1, synth_test=2, synth_seed=4)
    assert data.num_categories == 13  # known before the file exists: what prepare_data will write
    _trainer().fit(Tiny(), datamodule=data)
    lines = [line for line in capsys.readouterr().out.splitlines() if "generating" in line]
    assert lines == ["data/synthetic.h5: missing; generating the synthetic dataset there (13 categories × "
                     "3 train, 1 val, 2 test objects, seed 4)"]
    assert generated == [("data/synthetic.h5", {"train": 3, "val": 1, "test": 2}, 4)]
    assert data.category_names == ["airplane", "chair", "table"]  # the file's own table once it exists
    assert data.data_source == {"path": str(tmp_path / "data" / "synthetic.h5"), "source": "test"}
    _trainer().fit(Tiny(), datamodule=ViewPairDataModule(typo, synthesize=True))  # asked explicitly
    assert [call[0] for call in generated] == ["data/synthetic.h5", typo]
    _trainer().fit(Tiny(), datamodule=ViewPairDataModule(typo, synthesize=True))  # present: left alone
    assert len(generated) == 2


@pytest.mark.parametrize("value", [0, -4])
def test_eval_batch_size_must_be_positive(random_file: Path, value: int) -> None:
    with pytest.raises(ValueError, match=f"^eval_batch_size={value}; expected ≥ 1"):
        ViewPairDataModule(str(random_file), batch_size=4, eval_batch_size=value)
    assert ViewPairDataModule(str(random_file), batch_size=4, eval_batch_size=None).eval_batch_size == 4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_calls_set_epoch_and_validates_everything(random_file: Path, num_workers: int) -> None:
    import lightning.pytorch as pl

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.train_keys: list[list[tuple[int, int, int]]] = []
            self.val_items = 0

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            if batch_idx == 0:
                self.train_keys.append([])
            keys = zip(batch["object_index"].tolist(), batch["views_a"].tolist(), batch["views_b"].tolist(), strict=True)
            self.train_keys[-1] += list(keys)
            assert batch["images_a"].dtype == torch.float32  # scaled by the DataModule's hook
            return (self.weight * batch["images_a"].mean()).sum()

        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            self.val_items += len(batch["object_index"])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Recorder()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         use_distributed_sampler=False)
    trainer.fit(model, datamodule=ViewPairDataModule(str(random_file), batch_size=4, num_workers=num_workers))
    assert [len(k) for k in model.train_keys] == [10, 10]
    assert model.train_keys[0] != model.train_keys[1]  # a new draw each epoch
    assert model.val_items == 2 * 5 * 4


def _object_png(path: Path) -> None:
    """An 80×80 RGBA PNG: a red square, transparent around it."""
    from PIL import Image

    image = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    image.paste((200, 30, 30, 255), (20, 20, 60, 60))
    image.save(path)


def test_predict_loader_reads_png_folders(tmp_path: Path) -> None:

    for name in ("a", "b"):
        _object_png(tmp_path / f"{name}.png")
    dm = ViewPairDataModule(str(tmp_path / "unused.h5"), batch_size=4, predict_images=str(tmp_path))
    batch = next(iter(dm.predict_dataloader()))
    assert batch["images"].shape == (2, 4, 64, 64) and list(batch["name"]) == ["a", "b"]
    with pytest.raises(ValueError, match="predict_images"):
        ViewPairDataModule(str(tmp_path / "unused.h5")).predict_dataloader()


def test_predict_images_are_shared_among_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, every process of a DDP predict predicted (and wrote) every image
    for name in "abc":
        _object_png(tmp_path / f"{name}.png")

    def names(rank: int, world_size: int) -> list[str]:
        monkeypatch.setattr(datamodule_module, "distributed_rank_and_size", lambda: (rank, world_size))
        dm = ViewPairDataModule(str(tmp_path / "unused.h5"), batch_size=1, predict_images=str(tmp_path))
        return [name for batch in dm.predict_dataloader() for name in batch["name"]]

    assert names(0, 1) == ["a", "b", "c"]
    # as many batches on each (a fraction of them, limit_predict_batches, is the same), none without a batch
    assert (names(0, 2), names(1, 2)) == (["a", "c"], ["b", "a"])
    assert [names(rank, 4) for rank in range(4)] == [["a"], ["b"], ["c"], ["a"]]


def test_predict_does_not_check_a_data_file_it_does_not_read(tmp_path: Path) -> None:
    # The model reads 64×64 images; the configured data file holds 32×32 views: fit and test refuse it, but predict
    # reads only its images (it used to be refused with "train a model for this file").
    layout = ViewsLayout(image_size=32)
    with ViewsWriter(tmp_path / "views32.h5", CATS, source="test", layout=layout) as writer:
        writer.append("test", np.zeros((1, 24, 4, 32, 32), np.uint8), np.zeros((1, 32, 32, 32), bool), [0], ["a"])
    _object_png(tmp_path / "photo.png")
    dm = ViewPairDataModule(str(tmp_path / "views32.h5"), image_size=64, predict_images=str(tmp_path / "photo.png"))
    dm.check_file("predict")
    dm.setup("predict")
    assert next(iter(dm.predict_dataloader()))["images"].shape == (1, 4, 64, 64)
    with pytest.raises(ConfigError, match="holds 32×32 views but the model reads 64×64"):
        dm.check_file("test")
    with pytest.raises(ConfigError, match="holds 32×32 views but the model reads 64×64"):
        ViewPairDataModule(str(tmp_path / "views32.h5"), image_size=64)


def test_unreadable_predict_images_are_skipped_and_named(tmp_path: Path, capsys) -> None:

    from recon.datamodules.images import ImageFolderDataset

    _object_png(tmp_path / "good.png")
    whole = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "notes.png").write_text("not an image")
    dm = ViewPairDataModule(str(tmp_path / "unused.h5"), batch_size=4, predict_images=str(tmp_path))
    batch = next(iter(dm.predict_dataloader()))
    assert list(batch["name"]) == ["good"]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == [f"skipped {tmp_path / 'cut.png'}",
                                                         f"skipped {tmp_path / 'notes.png'}"]
    assert all("cannot read it as an image (" in line for line in printed)

    (tmp_path / "good.png").unlink()
    with pytest.raises(DataFileError, match=r"no readable image matches .*cut\.png: cannot read .*\(and the other 1\)"):
        ImageFolderDataset(tmp_path)


DDP_SCRIPT = """
import json, sys
import lightning.pytorch as pl
import torch
from recon.datamodules.datamodule import ViewPairDataModule

class Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        keys = zip(batch["object_index"].tolist(), batch["views_a"].tolist(), batch["views_b"].tolist())
        self.seen["train"] += [[self.current_epoch, *k] for k in keys]
        return (self.weight * batch["images_a"].mean()).sum()

    def validation_step(self, batch, batch_idx):
        self.seen["val"] += list(zip(batch["object_index"].tolist(), batch["views_a"].tolist()))

    def on_fit_end(self):
        with open(f"{sys.argv[2]}/rank{self.global_rank}.json", "w") as out:
            json.dump(self.seen, out)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

if __name__ == "__main__":
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, use_distributed_sampler=False)
    data = ViewPairDataModule(sys.argv[1], batch_size=3, num_workers=1, val_views_per_object=None)
    trainer.fit(Recorder(), datamodule=data)
"""


@pytest.mark.slow
def test_ddp_ranks_draw_different_pairs_and_split_validation_exactly(random_file: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(random_file), str(tmp_path)], capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for seen in ranks:
        assert [sum(1 for k in seen["train"] if k[0] == epoch) for epoch in (0, 1)] == [5, 5]  # ceil(10 / 2)
    assert ranks[0]["train"] != ranks[1]["train"]
    val = [tuple(item) for seen in ranks for item in seen["val"]]
    assert len(val) == 2 * 5 * 24 and len(set(val)) == 5 * 24  # 2 epochs; every (object, view) once per epoch


def test_a_split_with_no_object_of_the_chosen_categories_is_refused_before_the_run(tmp_path: Path) -> None:
    path = tmp_path / "gaps.h5"
    rng = np.random.default_rng(0)
    with ViewsWriter(path, CATS[:2], source="test") as writer:
        for split, category in (("train", [0, 1]), ("val", [0]), ("test", [1])):  # no val for 1, no test for 0
            n = len(category)
            writer.append(split, rng.integers(0, 256, (n, 24, 4, 64, 64), dtype=np.uint8),
                          rng.random((n, 32, 32, 32)) < 0.1, np.array(category), [str(i) for i in range(n)])
    both = ViewPairDataModule(str(path))
    for stage in ("fit", "validate", "test"):
        both.check_file(stage)  # every split has an object of one of the two
    first = ViewPairDataModule(str(path), categories=[CATS[0].name])
    second = ViewPairDataModule(str(path), categories=[CATS[1].name])
    second.check_file("test")
    with pytest.raises(DataFileError, match=rf"gaps.h5: its 'val' split holds no object of \['{CATS[1].name}'\] "
                                            r"\(it holds 1 objects in all\); recon fit needs train and val objects"):
        second.check_file("fit")
    with pytest.raises(DataFileError, match=rf"its 'test' split holds no object of \['{CATS[0].name}'\]"):
        first.check_file("test")
