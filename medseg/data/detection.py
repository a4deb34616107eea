"""Detection data: whole scans resized to one input size, with a box and a class per lesion.

Boxes come from the label map (connected components of one region, WT by default, of at least
``min_voxels`` voxels, found on the preprocessed grid) or from a boxes JSON in world coordinates::

    {"<case_id>": [{"box_mm": [x0, y0, z0, x1, y1, z1], "label": 0}, ...], ...}   # RAS mm, label optional

Batches (``collate_detection``), B scans:

- ``image`` [B, 4, *roi_size] float: preprocessed as for segmentation (RAS, head crop, normalised),
  then the whole volume resized to ``roi_size`` (trilinear);
- ``boxes`` list of B tensors [N_b, 6] float: (cx, cy, cz, w, h, d) normalised to [0, 1] of the volume;
- ``labels`` list of B tensors [N_b] int64 in [0, K) (0: lesion, for boxes from a label map);
- ``grid_affine`` [B, 4, 4] float64: voxel -> world RAS mm of the preprocessed grid before resizing;
- ``grid_shape`` [B, 3] int64: that grid's shape, so ``boxes * grid_shape`` are voxel edge coordinates;
- ``case_id`` list of B str.

Training adds random flips along every axis (boxes flipped with the image) and intensity jitter.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
)
from scipy import ndimage

from medseg.boxes import box_xyzxyz_to_cxcyczwhd, boxes_world_to_voxel
from medseg.data.base import CaseDataModule
from medseg.data.labels import REGIONS, LabelConvention
from medseg.data.layouts import DatasetIndex
from medseg.data.transforms import preprocessing
from medseg.errors import CaseError, LayoutError


def label_to_boxes(mask: np.ndarray | torch.Tensor, min_voxels: int = 1) -> np.ndarray:
    """Voxel edge-coordinate boxes [N, 6] xyzxyz of the 26-connected components of a [X, Y, Z] mask.

    Components of fewer than ``min_voxels`` voxels are dropped; boxes are ordered by component label
    (scan order of their first voxel).
    """
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask) > 0
    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    boxes = [
        [s.start for s in slices] + [s.stop for s in slices]
        for index, slices in enumerate(ndimage.find_objects(components), start=1)
        if sizes[index] >= min_voxels
    ]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 6)


class DetectionTargetsd(MapTransform):
    """Boxes and classes of a preprocessed case, normalised to its grid; records the grid.

    Reads ``image`` (a MetaTensor [C, X, Y, Z] whose affine maps its voxels to world mm) and either
    ``label`` (regions [3, X, Y, Z], TC/WT/ET; only with ``from_label``) or ``boxes_mm`` [N, 6] world
    xyzxyz with ``box_labels`` [N]; neither: no boxes (prediction). Writes ``boxes`` [N, 6] normalised
    cxcyczwhd (clipped to the grid; boxes outside it dropped), ``labels`` [N] int64, ``grid_affine``
    [4, 4] and ``grid_shape`` [3]; removes ``label`` and ``boxes_mm``.
    """

    def __init__(
        self, region: str = "WT", min_voxels: int = 20, from_label: bool = True, keys: Sequence[str] = ("image",)
    ) -> None:
        super().__init__(keys)
        if region.upper() not in REGIONS:
            raise ValueError(f"region {region!r} is not one of {', '.join(REGIONS)}")
        self.region, self.min_voxels, self.from_label = REGIONS.index(region.upper()), min_voxels, from_label

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        image = d["image"]
        shape = np.asarray(image.shape[1:], dtype=np.float64)  # [3]
        affine = np.asarray(image.affine, dtype=np.float64)  # [4, 4]
        if "boxes_mm" in d:
            voxel = boxes_world_to_voxel(np.asarray(d.pop("boxes_mm"), dtype=np.float64).reshape(-1, 6), affine)
            labels = np.asarray(d.pop("box_labels"), dtype=np.int64).reshape(-1)
            voxel = np.concatenate([voxel[:, :3].clip(0, shape), voxel[:, 3:].clip(0, shape)], axis=1)
            inside = (voxel[:, 3:] > voxel[:, :3]).all(axis=1)
            voxel, labels = voxel[inside], labels[inside]
        elif self.from_label and "label" in d:
            voxel = label_to_boxes(d.pop("label")[self.region], self.min_voxels)  # [N, 6]
            labels = np.zeros(len(voxel), dtype=np.int64)
        else:
            voxel, labels = np.zeros((0, 6)), np.zeros(0, dtype=np.int64)
        d.pop("label", None)
        normalised = torch.as_tensor(voxel / np.concatenate([shape, shape]), dtype=torch.float32)  # [N, 6] xyzxyz
        d["boxes"] = box_xyzxyz_to_cxcyczwhd(normalised)  # [N, 6]
        d["labels"] = torch.as_tensor(labels)
        d["grid_affine"] = torch.as_tensor(affine)
        d["grid_shape"] = torch.as_tensor(shape, dtype=torch.int64)
        return d


class RandFlipBoxesd(RandomizableTransform, MapTransform):
    """Flip the images of ``keys`` [C, X, Y, Z] along ``spatial_axis`` with probability ``prob``, and the
    normalised cxcyczwhd ``boxes`` [N, 6] with them (centre c -> 1 - c; sizes unchanged)."""

    def __init__(
        self, keys: Sequence[str] = ("image",), spatial_axis: int = 0, prob: float = 0.5, box_key: str = "boxes"
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.spatial_axis, self.box_key = spatial_axis, box_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = torch.flip(d[key], dims=[self.spatial_axis + 1])
        boxes = d[self.box_key].clone()  # [N, 6]
        boxes[:, self.spatial_axis] = 1 - boxes[:, self.spatial_axis]
        d[self.box_key] = boxes
        return d


def detection_transforms(
    convention: str | LabelConvention,
    roi_size: Sequence[int],
    pixdim: Sequence[float] | None = None,
    region: str = "WT",
    min_voxels: int = 20,
    with_label: bool = True,
    train: bool = False,
    flip_prob: float = 0.5,
) -> Compose:
    """Preprocessing -> boxes on the preprocessed grid -> resize to ``roi_size`` (-> random flips, jitter)."""
    transforms = [
        *preprocessing(convention, pixdim, with_label=with_label),
        DetectionTargetsd(region, min_voxels, from_label=with_label),
        Resized(keys="image", spatial_size=tuple(roi_size), mode="trilinear"),
        EnsureTyped(keys="image", track_meta=False),
    ]
    if train:
        transforms += [RandFlipBoxesd(spatial_axis=axis, prob=flip_prob) for axis in range(3)]
        transforms += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
        ]
    return Compose(transforms)


def collate_detection(items: list[dict]) -> dict:
    """Stack images and grids, keep boxes and labels as lists (their lengths differ); see the module doc."""
    return {
        "image": torch.stack([torch.as_tensor(item["image"]) for item in items]),
        "boxes": [item["boxes"] for item in items],
        "labels": [item["labels"] for item in items],
        "grid_affine": torch.stack([item["grid_affine"] for item in items]),
        "grid_shape": torch.stack([item["grid_shape"] for item in items]),
        "case_id": [item.get("case_id") for item in items],
    }


def read_boxes_json(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{case_id: (boxes_mm [N, 6], labels [N])}`` from a boxes JSON (see the module doc), checked."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LayoutError(f"{path}: boxes file not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(raw, dict):
        raise LayoutError(f'{path}: expected {{case_id: [{{"box_mm": [x0, y0, z0, x1, y1, z1], "label": 0}}]}}')
    out = {}
    for case_id, entries in raw.items():
        boxes, labels = [], []
        for i, entry in enumerate(entries if isinstance(entries, list) else [None]):
            box = entry.get("box_mm") if isinstance(entry, dict) else None
            if not (isinstance(box, list) and len(box) == 6 and all(isinstance(v, (int, float)) for v in box)):
                raise CaseError(
                    f'box {i}: expected {{"box_mm": [x0, y0, z0, x1, y1, z1], "label": 0}}, found {entry!r}',
                    case_id,
                    path,
                )
            if not all(box[k] < box[k + 3] for k in range(3)):
                raise CaseError(f"box {i}: {box} has x0 >= x1, y0 >= y1 or z0 >= z1", case_id, path)
            label = entry.get("label", 0)
            if not isinstance(label, int) or label < 0:
                raise CaseError(f"box {i}: label must be an int >= 0, found {label!r}", case_id, path)
            boxes.append(box)
            labels.append(label)
        out[case_id] = (np.asarray(boxes, dtype=np.float64).reshape(-1, 6), np.asarray(labels, dtype=np.int64))
    return out


class DetectionDataModule(CaseDataModule):
    step_seeded = False  # a plain shuffled stream
    collate_fn = staticmethod(collate_detection)

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
        roi_size: tuple[int, int, int] = (64, 64, 64),
        pixdim: tuple[float, float, float] | None = None,
        region: Literal["TC", "WT", "ET"] = "WT",
        min_voxels: int = 20,
        boxes_json: str | None = None,
        flip_prob: float = 0.5,
        batch_size: int = 4,
        num_workers: int = 0,
        cache: Literal["none", "memory", "disk"] = "memory",
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            data_dir, layout, label_convention, datalist, fold, val_fraction, test_dir, pixdim, num_workers,
                cache, cache_dir, seed: as for ``medseg.data.datamodule.SegmentationDataModule``.
            roi_size: every scan is resized to this [X, Y, Z] after the head crop.
            region: the label region whose connected components are the objects (``TC``, ``WT``, ``ET``).
            min_voxels: smallest component kept as an object, in voxels of the preprocessed grid.
            boxes_json: world-mm boxes per case (see the module doc) instead of boxes from label maps; only
                the cases it names are used (a case with ``[]`` has no lesion).
            flip_prob: probability of a training flip along each axis.
            batch_size: scans per training step (validation uses the same).
        """
        super().__init__()

    def _usable(self, index: DatasetIndex, data_dir: str, datalist: str | None) -> list[dict]:
        """Labelled cases (boxes from label maps), or with ``boxes_json`` the cases it names, with their boxes."""
        if not self.hparams.boxes_json:
            return super()._usable(index, data_dir, datalist)
        boxes = read_boxes_json(self.hparams.boxes_json)
        unknown = sorted(set(boxes) - {c["case_id"] for c in index.cases})
        if unknown:
            raise LayoutError(
                f"{self.hparams.boxes_json}: names {len(unknown)} case(s) not in {data_dir}, e.g. {unknown[:3]}"
            )
        annotated = [
            {**c, "label": None, "boxes_mm": boxes[c["case_id"]][0], "box_labels": boxes[c["case_id"]][1]}
            for c in index.cases
            if c["case_id"] in boxes
        ]  # the label map itself is not read
        if not annotated:
            raise LayoutError(f"{self.hparams.boxes_json}: names no case; training needs annotated cases")
        return annotated

    def _test_cases(self) -> list[dict]:
        if self.hparams.boxes_json and self.hparams.test_dir:
            raise LayoutError(
                "data.test_dir takes boxes from label maps only; with data.boxes_json, test on the validation "
                "split (leave test_dir unset) or run `medseg test` without boxes_json"
            )
        return super()._test_cases()

    def transform(self, train: bool) -> Compose:
        h = self.hparams
        return detection_transforms(
            self.convention, h.roi_size, h.pixdim, h.region, h.min_voxels,
            with_label=not h.boxes_json, train=train, flip_prob=h.flip_prob,
        )  # fmt: skip
