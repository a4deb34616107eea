"""The base of every medseg datamodule: read cases, split them, check their headers, cache, load.

A subclass declares its typed ``__init__`` arguments (LightningCLI builds ``--help`` and the saved
``config.yaml`` from each class's own signature) and calls ``super().__init__()``, which saves them as
hyperparameters. Names the base reads: ``data_dir``, ``val_fraction``, ``seed``, ``batch_size``,
``num_workers``, ``cache``, ``cache_dir`` and, where the subclass has them, ``layout``, ``task``,
``label_convention``, ``datalist``, ``fold``, ``test_dir``. The network input size is ``roi_size`` in
every datamodule.

What a subclass gives: :meth:`CaseDataModule.transform` and, where its cases are not the labelled cases of
``read_dataset``, :meth:`CaseDataModule._usable` (or :meth:`CaseDataModule._read`).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytorch_lightning as pl
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.data.utils import json_hashing
from monai.transforms import Compose
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from medseg.data.layouts import DatasetIndex, read_dataset
from medseg.errors import LayoutError
from medseg.io import check_case_files
from medseg.tasks import PRESETS, Task

OLD_SIZE_KEYS = ("img_size", "input_size", "image_size")  # classification, detection, reports before roi_size


def saved_roi_size(data: dict) -> tuple[int, ...] | None:
    """The network input size in a checkpoint's datamodule hyperparameters: ``roi_size``, or the name a
    checkpoint written before the rename used (``OLD_SIZE_KEYS``); None when it holds none."""
    for key in ("roi_size", *OLD_SIZE_KEYS):
        if data.get(key):
            return tuple(int(s) for s in data[key])
    return None


def seeded_split(cases: list[dict], val_fraction: float, seed: int) -> dict[str, list[dict]]:
    """``{"train", "val"}``: cases sorted by id, shuffled with ``seed``; the first ``val_fraction`` validate.

    With ``val_fraction > 0`` and two cases or more, at least one case validates and one trains.
    """
    shuffled = sorted(cases, key=lambda c: c["case_id"])
    random.Random(seed).shuffle(shuffled)
    n_val = round(len(shuffled) * val_fraction)
    if val_fraction > 0 and len(shuffled) > 1:
        n_val = max(1, n_val)
    n_val = min(n_val, max(len(shuffled) - 1, 0))
    return {"train": shuffled[n_val:], "val": shuffled[:n_val]}


def kfold_assignment(cases: list[dict], n_folds: int, seed: int) -> dict[str, int]:
    """Case id -> fold (0 to ``n_folds`` - 1): cases sorted by id, shuffled with ``seed``, dealt round-robin,
    so folds differ in size by at most one and depend on the ids and the seed alone."""
    if n_folds < 2 or n_folds > len(cases):
        raise LayoutError(f"{n_folds} folds need at least {max(n_folds, 2)} labelled cases; found {len(cases)}")
    shuffled = sorted(c["case_id"] for c in cases)
    random.Random(seed).shuffle(shuffled)
    return {case_id: i % n_folds for i, case_id in enumerate(shuffled)}


class StepSeededSampler(Sampler[tuple[int, int]]):
    """The training stream as a function of the step: item ``c`` (``c = global_step x batch_size +
    position``) is case ``perm_e[c % n]`` of epoch ``e = c // n``, shuffled with ``seed + e``.

    Yields ``(case index, c)``; :class:`StepSeededDataset` reseeds the augmentation from ``c``. What a
    step sees depends on the step alone, so a fit killed at any point and resumed from its checkpoint
    sees exactly what an uninterrupted one would (Lightning restarts the epoch a checkpoint was saved
    in; here that changes nothing), with or without DataLoader workers.
    """

    def __init__(self, size: int, seed: int, batch_size: int, datamodule: pl.LightningDataModule) -> None:
        self.size, self.seed, self.batch_size, self.datamodule = size, seed, batch_size, datamodule

    def __len__(self) -> int:
        return self.size

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self):
        trainer = self.datamodule.trainer
        start = trainer.global_step * self.batch_size if trainer is not None else 0
        order, epoch = None, None
        for c in range(start, start + self.size):
            if c // self.size != epoch:
                epoch = c // self.size
                order = self._order(epoch)
            yield order[c % self.size], c


class StepSeededDataset(TorchDataset):
    """Wraps a training dataset: item ``(index, c)`` reseeds the random transforms from ``(seed, c)``
    before loading ``index``."""

    def __init__(self, dataset, transform: Compose, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, counter = key
        self.transform.set_random_state(seed=(self.seed * 1_000_003 + counter) % 2**32)
        return self.dataset[index]


class CaseDataModule(pl.LightningDataModule):
    """Cases read from ``data_dir``, split into ``train`` / ``val`` (``test`` at test time), header-checked,
    cached before the first random transform, and served by DataLoaders (see the module docstring)."""

    step_seeded = True  # training stream of StepSeededSampler (resumable); False: a shuffled DataLoader
    collate_fn = None  # a staticmethod in subclasses; None: monai.data.DataLoader's list_data_collate

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()  # the calling subclass's __init__ arguments
        if self.hparams.cache == "disk" and not self.hparams.cache_dir:
            raise ValueError("data.cache 'disk' needs data.cache_dir")
        self.index: DatasetIndex | None = None
        self.splits: dict[str, list[dict]] = {}
        self._checked_stages: set[str | None] = set()

    @property
    def task(self) -> Task | None:
        """The dataset's task (:mod:`medseg.tasks`) once set up: the layout's, or ``task`` when given."""
        return self.index.task if self.index is not None else None

    @property
    def convention(self) -> Task:
        """The task (the name older code gives its label part)."""
        return self.index.task

    @property
    def eval_batch_size(self) -> int:
        return self.hparams.batch_size

    def transform(self, train: bool) -> Compose:
        """The transforms of training (``train``) or of validation / test cases."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Nothing to download: medseg reads data where it lies."""

    def setup(self, stage: str | None = None) -> None:
        """Read, split and check the cases of ``stage`` (once per stage: ``medseg fit`` checks them before its
        logger starts, then Lightning calls this again)."""
        if not self.splits:
            self.splits = self._split(self._read())
            self._measure_channels()
        if stage in self._checked_stages:
            return
        self._checked_stages.add(stage)
        if stage in (None, "fit", "validate"):
            for case in self.splits["train"] + self.splits["val"]:
                check_case_files(case)
        if stage == "test":
            self.splits["test"] = self._test_cases()
            for case in self.splits["test"]:
                check_case_files(case)

    # ------------------------------------------------------------------------------------------ cases

    def _read(self) -> list[dict]:
        """The usable cases of ``data_dir``; records the task (saved in checkpoints for predict)."""
        h = self.hparams
        self.index = read_dataset(
            h.data_dir, h.get("layout", "auto"), h.get("label_convention"), h.get("datalist"), task=h.get("task")
        )
        self._record_task()
        return self._usable(self.index, h.data_dir, h.get("datalist"))

    def _record_task(self) -> None:
        """The task in the hyperparameters, so that a checkpoint carries it (and the old name of a preset)."""
        task = self.index.task
        if "task" in self.hparams:
            self.hparams.task = task.to_dict()
        self.hparams.label_convention = task.name if task.name in PRESETS else None

    def _measure_channels(self) -> None:
        """CT channels without a window get nnU-Net's dataset statistics, measured on the training cases."""
        if self.index is not None and any(c.needs_statistics for c in self.index.task.channels):
            from medseg.data.fingerprint import measure_ct_channels

            self.index.task = measure_ct_channels(self.splits["train"], self.index.task, seed=self.hparams.seed)
            self._record_task()

    def _usable(self, index: DatasetIndex, data_dir: str, datalist: str | None) -> list[dict]:
        """The cases of ``index`` training can use: here the labelled ones."""
        labelled = [c for c in index.cases if c.get("label")]
        if not labelled:
            raise LayoutError(f"{data_dir}: no case has a label; training needs labelled cases")
        return labelled

    def _split(self, cases: list[dict]) -> dict[str, list[dict]]:
        """``fold`` of ``n_folds`` seeded folds validates when ``n_folds`` is set; else ``fold`` of the
        datalist's own folds; else a seeded ``val_fraction`` of ``cases``."""
        fold, n_folds = self.hparams.get("fold"), self.hparams.get("n_folds")
        if n_folds:
            if fold is None or not 0 <= fold < n_folds:
                raise LayoutError(f"data.fold must be 0 to {n_folds - 1} with data.n_folds {n_folds}, got {fold}")
            assigned = kfold_assignment(cases, n_folds, self.hparams.seed)
            return {
                "train": [c for c in cases if assigned[c["case_id"]] != fold],
                "val": [c for c in cases if assigned[c["case_id"]] == fold],
            }
        if fold is None:
            return seeded_split(cases, self.hparams.val_fraction, self.hparams.seed)
        folds = self.index.folds()
        if fold not in folds:
            raise LayoutError(f"{self.hparams.data_dir}: fold {fold} not found; the datalist has folds {folds}")
        return {
            "train": [c for c in cases if c.get("fold") != fold],
            "val": [c for c in cases if c.get("fold") == fold],
        }

    def _test_cases(self) -> list[dict]:
        """The usable cases of ``test_dir`` (any layout), else the validation split."""
        test_dir = self.hparams.get("test_dir")
        if not test_dir:
            return self.splits["val"]
        index = read_dataset(test_dir, "auto", task=self.index.task)
        return self._usable(index, test_dir, None)

    # ------------------------------------------------------------------------------------------ loaders

    def _dataset(self, cases: list[dict], transform: Compose):
        """``cases`` through ``transform``, cached up to its first random transform as ``cache`` says."""
        if self.hparams.cache == "none":
            return Dataset(cases, transform)
        if self.hparams.cache == "disk":
            Path(self.hparams.cache_dir).mkdir(parents=True, exist_ok=True)
            # the cache key holds the deterministic transforms' names: turning the bias-field correction on or
            # off misses the old entries instead of reusing them
            return PersistentDataset(cases, transform, cache_dir=self.hparams.cache_dir, hash_transform=json_hashing)
        return CacheDataset(cases, transform, num_workers=self.hparams.num_workers or None, progress=False)

    def _drop_last(self, n_train: int) -> bool:
        return False

    def _train_dataset(self) -> TorchDataset:
        """The training cases through the training transform; with ``step_seeded`` a
        :class:`StepSeededDataset`, whose items are the keys :class:`StepSeededSampler` yields."""
        transform = self.transform(train=True)
        dataset = self._dataset(self.splits["train"], transform)
        return StepSeededDataset(dataset, transform, self.hparams.seed) if self.step_seeded else dataset

    def train_dataloader(self) -> DataLoader:
        dataset = self._train_dataset()
        h = self.hparams
        collate = {"collate_fn": self.collate_fn} if self.collate_fn else {}
        if self.step_seeded:
            order = {"sampler": StepSeededSampler(len(dataset), h.seed, h.batch_size, self)}
        else:
            order = {"shuffle": True}
        return DataLoader(
            dataset,
            batch_size=h.batch_size,
            **order,
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0,
            drop_last=self._drop_last(len(self.splits["train"])),
            **collate,
        )

    def _eval_loader(self, cases: list[dict]) -> DataLoader:
        dataset = self._dataset(cases, self.transform(train=False))
        collate = {"collate_fn": self.collate_fn} if self.collate_fn else {}
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.hparams.num_workers, **collate)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.splits["test"])
