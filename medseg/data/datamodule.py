"""LightningDataModule for brain-tumour segmentation on any layout ``medseg.data.layouts`` reads.

Batches (``monai.data.DataLoader`` collation):

- train: ``image`` [B, 4, *roi_size], ``label`` [B, 3, *roi_size] (TC, WT, ET), random crops;
- val / test: ``image`` [1, 4, X, Y, Z], ``label`` [1, 3, X, Y, Z], whole head-cropped volumes, plus
  ``case_id`` [1]; the module runs sliding-window inference over them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.transforms import Compose
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from medseg.data.layouts import DatasetIndex, read_dataset
from medseg.data.transforms import eval_transforms, train_transforms
from medseg.errors import LayoutError
from medseg.io import check_case_files


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


class BratsDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data_dir: str,
        layout: str = "auto",
        label_convention: str | None = None,
        datalist: str | None = None,
        fold: int | None = None,
        val_fraction: float = 0.2,
        test_dir: str | None = None,
        roi_size: tuple[int, int, int] = (96, 96, 96),
        pixdim: tuple[float, float, float] | None = None,
        pos_fraction: float = 0.5,
        batch_size: int = 1,
        num_workers: int = 0,
        cache: Literal["none", "memory", "disk"] = "memory",
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            data_dir: dataset root (BraTS 2021/2023 case folders, MSD Task01, nnU-Net raw) or a datalist JSON.
            layout: ``auto`` detects it; or force ``brats2021``, ``brats2023``, ``msd``, ``nnunet``, ``datalist``.
            label_convention: override how label values map to TC/WT/ET (``brats2021``: ET=4,
                ``brats2023``: ET=3, ``msd``); by default the layout's own.
            datalist: a MONAI-style datalist JSON whose paths are relative to ``data_dir``.
            fold: validate on this fold of the datalist; without folds, a seeded ``val_fraction`` split.
            val_fraction: share of cases held out for validation when no fold is given (0: none).
            test_dir: a second dataset (any layout) used by ``medseg test``.
            roi_size: training crop size [X, Y, Z]; Swin UNETR needs multiples of 32.
            pixdim: resample to this voxel spacing in mm; None keeps the native grid.
            pos_fraction: share of training crops centred on tumour voxels.
            batch_size: training crops per step.
            num_workers: DataLoader worker processes (0 loads in the main process).
            cache: ``memory`` (CacheDataset), ``disk`` (PersistentDataset in ``cache_dir``) or ``none``:
                what is cached is everything before the first random transform.
            cache_dir: folder for ``cache: disk``.
            seed: seed of the train/validation split, the order of training cases and their augmentation
                (a function of the step: a resumed fit sees what an uninterrupted one would).
        """
        super().__init__()
        self.save_hyperparameters()
        if cache == "disk" and not cache_dir:
            raise ValueError("data.cache 'disk' needs data.cache_dir")
        self.index: DatasetIndex | None = None
        self.splits: dict[str, list[dict]] = {}

    @property
    def convention(self) -> str:
        """Name of the label convention actually used (the layout's, unless overridden)."""
        return self.index.convention.name

    def prepare_data(self) -> None:
        """Nothing to download: medseg reads data where it lies."""

    def setup(self, stage: str | None = None) -> None:
        if self.index is None:
            self.index = read_dataset(
                self.hparams.data_dir, self.hparams.layout, self.hparams.label_convention, self.hparams.datalist
            )
            self.hparams.label_convention = self.index.convention.name  # saved in checkpoints for predict
            self.splits = self._split(self.index.cases)
        if stage in (None, "fit", "validate"):
            for case in self.splits["train"] + self.splits["val"]:
                check_case_files(case)
        if stage == "test":
            self.splits["test"] = self._test_cases()

    def _usable(self, cases: list[dict]) -> list[dict]:
        """The cases training can use: here the labelled ones (subclasses: those with their own target)."""
        labelled = [c for c in cases if c.get("label")]
        if not labelled:
            raise LayoutError(f"{self.hparams.data_dir}: no case has a label; training needs labelled cases")
        return labelled

    def _split(self, cases: list[dict]) -> dict[str, list[dict]]:
        labelled = self._usable(cases)
        fold = self.hparams.fold
        if fold is not None:
            folds = self.index.folds()
            if fold not in folds:
                raise LayoutError(f"{self.hparams.data_dir}: fold {fold} not found; the datalist has folds {folds}")
            return {
                "train": [c for c in labelled if c.get("fold") != fold],
                "val": [c for c in labelled if c.get("fold") == fold],
            }
        shuffled = sorted(labelled, key=lambda c: c["case_id"])
        random.Random(self.hparams.seed).shuffle(shuffled)
        n_val = round(len(shuffled) * self.hparams.val_fraction)
        if self.hparams.val_fraction > 0 and len(shuffled) > 1:
            n_val = min(max(1, n_val), len(shuffled) - 1)
        return {"train": shuffled[n_val:], "val": shuffled[:n_val]}

    def _test_cases(self) -> list[dict]:
        if not self.hparams.test_dir:
            return self.splits["val"]
        index = read_dataset(self.hparams.test_dir, "auto", self.hparams.label_convention)
        return [c for c in index.cases if c.get("label")]

    def _dataset(self, cases: list[dict], transform, cached: bool):
        if not cached or self.hparams.cache == "none":
            return Dataset(cases, transform)
        if self.hparams.cache == "disk":
            Path(self.hparams.cache_dir).mkdir(parents=True, exist_ok=True)
            return PersistentDataset(cases, transform, cache_dir=self.hparams.cache_dir)
        return CacheDataset(cases, transform, num_workers=self.hparams.num_workers or None, progress=False)

    def train_transform(self) -> Compose:
        """Preprocessing + random crops and augmentation of training cases."""
        return train_transforms(self.convention, self.hparams.roi_size, self.hparams.pixdim, self.hparams.pos_fraction)

    def eval_transform(self) -> Compose:
        """Preprocessing of validation / test cases (whole volumes)."""
        return eval_transforms(self.convention, self.hparams.pixdim)

    eval_batch_size = 1  # whole volumes differ in size

    def train_dataloader(self) -> DataLoader:
        transform = self.train_transform()
        dataset = self._dataset(self.splits["train"], transform, cached=True)
        seed, batch_size = self.hparams.seed, self.hparams.batch_size
        return DataLoader(
            StepSeededDataset(dataset, transform, seed),
            batch_size=batch_size,
            sampler=StepSeededSampler(len(dataset), seed, batch_size, self),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            drop_last=False,
        )

    def _eval_loader(self, cases: list[dict]) -> DataLoader:
        dataset = self._dataset(cases, self.eval_transform(), cached=True)
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.splits["test"])
