"""LightningDataModule for segmentation of any task (:mod:`medseg.tasks`) on any layout ``medseg.data.layouts``
reads: brain-tumour MRI, abdominal CT, any MSD or nnU-Net dataset.

Batches (``monai.data.DataLoader`` collation), C channels, R regions or K classes:

- train: ``image`` [B, C, *roi_size], ``label`` [B, R, *roi_size] (regions, TC, WT, ET for BraTS) or
  [B, 1, *roi_size] (class indices), random crops; with ``random_roi`` the crop size is drawn per batch
  (:mod:`medseg.data.random_roi`) instead of ``roi_size``;
- val / test: ``image`` [1, C, X, Y, Z], ``label`` likewise, whole foreground-cropped volumes, plus
  ``case_id`` [1]; the module runs sliding-window inference over them.

The training stream is :class:`medseg.data.base.StepSeededSampler`'s: a function of the step, so a resumed
fit sees what an uninterrupted one would.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from monai.transforms import Compose
from torch.utils.data import Dataset as TorchDataset

from medseg.data.augment import augment_spec
from medseg.data.base import CaseDataModule, StepSeededDataset, StepSeededSampler
from medseg.data.bias_field import check_bias_field
from medseg.data.random_roi import RandomRoiDataset, roi_sides
from medseg.data.transforms import crop_and_augment, eval_transforms, preprocessing, train_transforms

__all__ = ["BratsDataModule", "SegmentationDataModule", "StepSeededDataset", "StepSeededSampler"]


class SegmentationDataModule(CaseDataModule):
    eval_batch_size = 1  # whole volumes differ in size

    # The typed argument list is repeated in every datamodule: LightningCLI reads each class's own signature.
    def __init__(
        self,
        data_dir: str,
        layout: str = "auto",
        label_convention: str | None = None,
        task: str | dict[str, Any] | None = None,
        datalist: str | None = None,
        fold: int | None = None,
        n_folds: int | None = None,
        val_fraction: float = 0.2,
        test_dir: str | None = None,
        roi_size: tuple[int, int, int] = (96, 96, 96),
        random_roi: tuple[int, int] | None = None,
        pixdim: tuple[float, float, float] | None = None,
        bias_field: str | None = "n4",
        pos_fraction: float = 0.5,
        augment: str | dict[str, Any] = "nnunet",
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
            label_convention: a preset's name (``brats2021``: ET=4, ``brats2023``: ET=3, ``msd``...): the older
                name of ``task``.
            task: what the dataset is (``medseg.tasks``): a preset (``brats2021``, ``brats2023``, ``msd``,
                ``brats2024-gli-post``, ``brats2024-ped``) or a dict (``channels``, ``labels``, ``regions`` or
                ``classes``); by default the layout's preset or the task its dataset.json describes. CT
                channels without a ``window`` get nnU-Net's statistics from the training cases.
            datalist: a MONAI-style datalist JSON whose paths are relative to ``data_dir``.
            fold: validate on this fold: of ``n_folds`` seeded folds when that is set (``medseg cv``), else of
                the datalist's own ``fold`` entries; without either, a seeded ``val_fraction`` split.
            n_folds: split the labelled cases into this many folds, deterministic from the case ids and
                ``seed`` (``medseg.data.base.kfold_assignment``); ``fold`` picks the one that validates.
            val_fraction: share of cases held out for validation when no fold is given (0: none).
            test_dir: a second dataset (any layout) used by ``medseg test``.
            roi_size: training crop size [X, Y, Z]; Swin UNETR needs multiples of 32.
            random_roi: ``[min, max]``: instead of ``roi_size``, each training batch's crop sides are drawn (per
                axis, from ``(seed, step)``) among the multiples of 32 in that range, e.g. ``[64, 192]``; a crop
                larger than a case is zero-padded. Makes windows larger than ``roi_size`` (``medseg predict
                --window auto`` / ``plan``, which then may use windows up to ``max``) in-distribution;
                validation keeps ``roi_size`` windows. Off by default (:mod:`medseg.data.random_roi`).
            pixdim: resample to this voxel spacing in mm; None keeps the native grid.
            bias_field: ``n4`` (the default): divide out each MR channel's bias field (N4, on the native grid,
                before resampling; :mod:`medseg.data.bias_field`; CT channels pass unchanged); stored with the
                model, so ``medseg predict`` does the same. None: no correction (checkpoints written before the
                option predict without it).
            pos_fraction: share of training crops centred on labelled voxels (classes: shared equally).
            augment: training augmentation (``medseg.data.augment``): ``nnunet`` (nnU-Net's rotation, scaling,
                noise, blur, brightness, contrast, low resolution, gamma, mirroring), ``light`` (flips and
                intensity jitter: what training had before) or ``none``; or a dict overriding single entries,
                ``{preset: nnunet, elastic: {prob: 0.2}, mirror: {prob: 0}}``.
            batch_size: training crops per step.
            num_workers: DataLoader worker processes (0 loads in the main process).
            cache: ``memory`` (CacheDataset), ``disk`` (PersistentDataset in ``cache_dir``) or ``none``:
                what is cached is everything before the first random transform.
            cache_dir: folder for ``cache: disk``.
            seed: seed of the train/validation split, the order of training cases and their augmentation
                (a function of the step: a resumed fit sees what an uninterrupted one would).
        """
        super().__init__()
        augment_spec(augment)  # a misspelt entry fails here, before any data is read
        check_bias_field(bias_field)
        if random_roi is not None:
            roi_sides(random_roi)  # and a range without a valid side

    def transform(self, train: bool) -> Compose:
        """Training: preprocessing + random ``roi_size`` crops and augmentation; else preprocessing only."""
        h = self.hparams
        if train:
            return train_transforms(self.task, h.roi_size, h.pixdim, h.pos_fraction, h.augment, h.get("bias_field"))
        return eval_transforms(self.task, h.pixdim, bias_field=h.get("bias_field"))

    def _train_dataset(self) -> TorchDataset:
        """With ``random_roi``: preprocessed cases (cached) cropped and augmented at each batch's drawn size."""
        h = self.hparams
        if h.get("random_roi") is None:
            return super()._train_dataset()
        prepare = preprocessing(self.task, h.pixdim, with_label=True, bias_field=h.get("bias_field"))
        dataset = self._dataset(self.splits["train"], Compose(prepare))
        tail = partial(crop_and_augment, self.task, pos_fraction=h.pos_fraction, augment=h.augment)
        return RandomRoiDataset(dataset, tail, roi_sides(h.random_roi), h.seed, h.batch_size)


BratsDataModule = SegmentationDataModule  # the class_path of configs and checkpoints written before the rename
