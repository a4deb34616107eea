"""LightningDataModule for brain-tumour segmentation on any layout ``medseg.data.layouts`` reads.

Batches (``monai.data.DataLoader`` collation):

- train: ``image`` [B, 4, *roi_size], ``label`` [B, 3, *roi_size] (TC, WT, ET), random crops;
- val / test: ``image`` [1, 4, X, Y, Z], ``label`` [1, 3, X, Y, Z], whole head-cropped volumes, plus
  ``case_id`` [1]; the module runs sliding-window inference over them.

The training stream is :class:`medseg.data.base.StepSeededSampler`'s: a function of the step, so a resumed
fit sees what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Literal

from monai.transforms import Compose

from medseg.data.base import CaseDataModule, StepSeededDataset, StepSeededSampler
from medseg.data.transforms import eval_transforms, train_transforms

__all__ = ["BratsDataModule", "SegmentationDataModule", "StepSeededDataset", "StepSeededSampler"]


class SegmentationDataModule(CaseDataModule):
    eval_batch_size = 1  # whole volumes differ in size

    # The typed argument list is repeated in every datamodule: LightningCLI reads each class's own signature.
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

    def transform(self, train: bool) -> Compose:
        """Training: preprocessing + random ``roi_size`` crops and augmentation; else preprocessing only."""
        h = self.hparams
        if train:
            return train_transforms(self.convention, h.roi_size, h.pixdim, h.pos_fraction)
        return eval_transforms(self.convention, h.pixdim)


BratsDataModule = SegmentationDataModule  # the class_path of configs and checkpoints written before the rename
