"""LightningDataModule for volume-level classification: one integer target per case, beside its image.

Batches (train, val and test alike; ``monai.data.DataLoader`` collation):

- ``image`` [B, 4, *roi_size] float: the segmentation preprocessing (``medseg.data.transforms.preprocessing``:
  RAS, optional resampling, head crop, per-channel normalisation), then the whole head resized to
  ``roi_size`` (``fit: resize``) or centre-cropped / zero-padded to it at native resolution (``fit: crop``);
  training adds flips and intensity jitter;
- ``target`` [B] long, in ``0 .. num_classes - 1``;
- ``case_id`` [B] str.

Where the targets come from (``target_source``, ``target_key``):

- ``datalist``: a value in each entry of a MONAI-style datalist,
  ``{"training": [{"image": [...], "label_cls": 1}, ...]}``; an integer or true/false under ``target_key``
  (default ``label_cls``); entries without it are left out;
- ``demo_truth``: the ``demo_truth.json`` that ``medseg demo-data`` writes beside its cases: 1 when any
  lesion of the case has the boolean ``target_key`` (default ``necrotic``; or ``enhancing``) true, else 0;
- ``label``: the case's segmentation label file: 1 when it holds a voxel of ``target_key`` (default ``ET``;
  a region ``TC``/``WT``/``ET`` or a sub-region of the label convention: ``necrotic``, ``edema``,
  ``enhancing``), else 0. Each label file is read once, at setup.

The train / validation split is the segmentation one (``fold``, else a seeded ``val_fraction``), over the
cases that have a target.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ResizeWithPadOrCropd,
)
from pytorch_lightning.utilities import rank_zero_info

from medseg.data.base import CaseDataModule
from medseg.data.labels import REGIONS, LabelConvention
from medseg.data.layouts import _DATALIST_SECTIONS, DatasetIndex
from medseg.data.transforms import _load_volume, preprocessing
from medseg.errors import CaseError, LayoutError

TARGET_SOURCES = ("datalist", "demo_truth", "label")
DEFAULT_KEYS = {"datalist": "label_cls", "demo_truth": "necrotic", "label": "ET"}


class ClassificationDataModule(CaseDataModule):
    # The typed argument list is repeated in every datamodule: LightningCLI reads each class's own signature.
    def __init__(
        self,
        data_dir: str,
        target_source: Literal["datalist", "demo_truth", "label"] = "label",
        target_key: str | None = None,
        num_classes: int = 2,
        roi_size: tuple[int, int, int] = (64, 64, 64),
        fit: Literal["resize", "crop"] = "resize",
        flip_axes: tuple[int, ...] = (0, 1, 2),
        layout: str = "auto",
        label_convention: str | None = None,
        datalist: str | None = None,
        fold: int | None = None,
        val_fraction: float = 0.2,
        test_dir: str | None = None,
        pixdim: tuple[float, float, float] | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        cache: Literal["none", "memory", "disk"] = "memory",
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            data_dir: dataset root (BraTS 2021/2023 case folders, MSD Task01, nnU-Net raw) or a datalist JSON.
            target_source: where each case's target comes from: ``datalist``, ``demo_truth`` or ``label``
                (see the module docstring).
            target_key: the datalist key (default ``label_cls``), the demo_truth.json lesion flag (default
                ``necrotic``) or the label region / sub-region (default ``ET``).
            num_classes: targets must lie in ``0 .. num_classes - 1`` (2 for the derived yes/no targets).
            roi_size: the network's input size [X, Y, Z] (a ViT's ``img_size``).
            fit: ``resize`` the whole head-cropped volume to ``roi_size``, or centre-``crop`` / pad it.
            flip_axes: axes of random training flips; leave out 0 for targets that tell left from right.
            layout: ``auto`` detects it; or force ``brats2021``, ``brats2023``, ``msd``, ``nnunet``, ``datalist``.
            label_convention: override how label values are read (``brats2021``, ``brats2023``, ``msd``).
            datalist: a MONAI-style datalist JSON whose paths are relative to ``data_dir``.
            fold: validate on this fold of the datalist; without folds, a seeded ``val_fraction`` split.
            val_fraction: share of cases held out for validation when no fold is given (0: none).
            test_dir: a second dataset (any layout) used by ``medseg test``; its targets come from the same
                source (its own datalist, demo_truth.json or labels).
            pixdim: resample to this voxel spacing in mm before resizing; None keeps the native grid.
            batch_size: volumes per step (training and evaluation).
            num_workers: DataLoader worker processes (0 loads in the main process).
            cache: ``memory``, ``disk`` (in ``cache_dir``) or ``none``: what is cached is everything before the
                first random transform, the resized volume included.
            cache_dir: folder for ``cache: disk``.
            seed: seed of the train/validation split.
        """
        if target_source not in TARGET_SOURCES:
            raise ValueError(f"data.target_source must be one of {TARGET_SOURCES}, got {target_source!r}")
        if num_classes < 2:
            raise ValueError(f"data.num_classes must be at least 2, got {num_classes}")
        super().__init__()
        self.target_key = target_key or DEFAULT_KEYS[target_source]

    # --------------------------------------------------------------------------------------- cases

    def _usable(self, index: DatasetIndex, data_dir: str, datalist: str | None) -> list[dict]:
        """The cases of ``index`` that have a target, as ``{case_id, image, target[, channel_order, fold]}``."""
        source, key = self.hparams.target_source, self.target_key
        if source == "datalist":
            targets = datalist_targets(index, _datalist_file(data_dir, datalist), key)
            where = f"datalist key {key!r}"
        elif source == "demo_truth":
            targets = demo_truth_targets(index.cases, index.root / "demo_truth.json", key)
            where = str(index.root / "demo_truth.json")
        else:
            targets = label_targets(index.cases, index.convention, key)
            where = "the label file"
        cases = []
        for case, target in zip(index.cases, targets):
            if target is None:
                continue
            if not 0 <= target < self.hparams.num_classes:
                raise CaseError(f"target {target} from {where} is outside 0..{self.hparams.num_classes - 1} "
                                "(data.num_classes)", case["case_id"])  # fmt: skip
            kept = {k: v for k, v in case.items() if k != "label" and v is not None}  # the image alone is loaded
            cases.append({**kept, "target": target})
        if not cases:
            raise LayoutError(f"{data_dir}: no case has a target ({source}, key {key!r}); classification needs targets")
        if len(cases) < len(index.cases):
            rank_zero_info(f"{data_dir}: {len(index.cases) - len(cases)} of {len(index.cases)} cases have no target "
                           f"({source}, key {key!r}) and are left out")  # fmt: skip
        return cases

    # --------------------------------------------------------------------------------------- loaders

    def transform(self, train: bool) -> Compose:
        h = self.hparams
        flip_axes = h.flip_axes if train else ()
        return classification_transforms(self.convention, h.roi_size, h.fit, h.pixdim, flip_axes, jitter=train)


def classification_transforms(
    convention: str | LabelConvention,
    roi_size: Sequence[int],
    fit: Literal["resize", "crop"] = "resize",
    pixdim: Sequence[float] | None = None,
    flip_axes: Sequence[int] = (),
    jitter: bool = False,
) -> Compose:
    """Case dict (no ``label``) -> ``image`` [4, *roi_size]: preprocessing, resize or crop, then augmentation."""
    if fit == "resize":
        sizing = Resized(keys="image", spatial_size=roi_size, mode="trilinear", anti_aliasing=True)
    elif fit == "crop":
        sizing = ResizeWithPadOrCropd(keys="image", spatial_size=roi_size)
    else:
        raise ValueError(f"data.fit must be 'resize' or 'crop', got {fit!r}")
    augment = [RandFlipd(keys="image", prob=0.5, spatial_axis=axis) for axis in flip_axes]
    if jitter:
        augment += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
        ]
    prepare = preprocessing(convention, pixdim, with_label=False)
    return Compose([*prepare, sizing, *augment, EnsureTyped(keys="image", track_meta=False)])


# ------------------------------------------------------------------------------------------ targets


def datalist_targets(index: DatasetIndex, path: Path, key: str) -> list[int | None]:
    """``key`` of each datalist entry, in the order of ``index.cases`` (None where an entry lacks it)."""
    if index.layout != "datalist":
        raise LayoutError(
            f"{index.root}: target_source 'datalist' needs a datalist JSON, but the data was read as layout "
            f"{index.layout!r}; pass data.datalist, or use target_source 'label' or 'demo_truth'"
        )
    meta = json.loads(path.read_text(encoding="utf-8"))  # already read once, as valid JSON, by read_dataset
    entries = [(f"{s}[{i}]", e) for s in _DATALIST_SECTIONS for i, e in enumerate(meta.get(s) or [])]
    if len(entries) != len(index.cases):  # read_dataset makes one case per entry, in this order
        raise LayoutError(f"{path}: {len(entries)} entries but {len(index.cases)} cases were read from it")
    targets = []
    for (where, entry), case in zip(entries, index.cases):
        value = entry.get(key) if isinstance(entry, dict) else None
        if value is not None and (isinstance(value, float) or not isinstance(value, (int, bool))):
            raise CaseError(f"{where}: {key!r} must be an integer class or true/false, found {value!r}",
                            case["case_id"], path)  # fmt: skip
        targets.append(None if value is None else int(value))
    return targets


def demo_truth_targets(cases: list[dict], path: Path, key: str) -> list[int | None]:
    """1 when any lesion of a case has the flag ``key`` true in demo_truth.json, 0 when none has (None: not listed)."""
    if not path.is_file():
        raise LayoutError(f"{path}: no demo_truth.json (written by `medseg demo-data`) beside the cases")
    truth = json.loads(path.read_text(encoding="utf-8"))
    targets = []
    for case in cases:
        if case["case_id"] not in truth:
            targets.append(None)
            continue
        flags = [lesion.get(key) for lesion in truth[case["case_id"]].get("lesions", [])]
        bad = [f for f in flags if not isinstance(f, bool)]
        if bad:
            raise CaseError(f"lesion flag {key!r} is {bad[0]!r}; expected true/false (e.g. 'necrotic', "
                            "'enhancing')", case["case_id"], path)  # fmt: skip
        targets.append(int(any(flags)))
    return targets


def label_targets(cases: list[dict], convention: LabelConvention, key: str) -> list[int | None]:
    """1 when a case's label file holds a voxel of region / sub-region ``key``, 0 when not (None: no label)."""
    if key in REGIONS:
        values = convention.regions[key]
    elif key in convention.labels:
        values = (convention.labels[key],)
    else:
        names = [*REGIONS, *convention.labels]
        raise ValueError(f"data.target_key {key!r} is not a region or a {convention.name} label; choose one of {names}")
    targets = []
    for case in cases:
        if not case.get("label"):
            targets.append(None)
            continue
        label = _load_volume(case["label"], case["case_id"])  # [X, Y, Z]; CaseError if unreadable
        bad = convention.unexpected_values(label)
        if bad:
            raise CaseError(f"label holds values {bad[:10]} that the {convention.name} convention does not define "
                            f"(expected {list(convention.values)})", case["case_id"], case["label"])  # fmt: skip
        targets.append(int(torch.isin(label, torch.tensor(values, dtype=label.dtype)).any()))
    return targets


def _datalist_file(data_dir: str, datalist: str | None) -> Path:
    """The datalist JSON ``read_dataset`` read for (data_dir, datalist), found the same way."""
    root = Path(os.path.abspath(data_dir))
    if datalist is None:
        return root if root.is_file() else root / "dataset.json"
    path = Path(datalist)
    if not path.is_absolute() and not path.exists() and (root / path).exists():
        path = root / path
    return Path(os.path.abspath(path))
