"""MONAI dictionary transforms from case files to network-ready tensors.

A case dict (see ``medseg.data.layouts``) goes in: ``{"case_id", "image": [t1, t1ce, t2, flair] paths or one
4-D path (+ "channel_order"), "label": path | None}``. Out comes:

- ``image``: float32 MetaTensor [4, X, Y, Z], RAS-oriented, cropped to the head, each channel normalised
  over its non-zero voxels; its ``applied_operations`` let ``Invertd`` map predictions back to the input grid;
- ``label``: float32 MetaTensor [3, X, Y, Z], the regions TC, WT, ET (when the case has a label).

Training adds a random ``roi_size`` crop (half the crops centred on tumour), flips and intensity jitter.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor, NibabelReader
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    LoadImage,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Spacingd,
    SpatialPadd,
)

from medseg.data.cases import MODALITIES
from medseg.data.labels import LabelConvention, LabelToRegionsd, get_convention
from medseg.errors import CaseError
from medseg.io import SimpleITKReader, check_case_files, is_nifti


def _load_volume(path: str, case_id: str | None) -> MetaTensor:
    reader = NibabelReader() if is_nifti(path) else SimpleITKReader()
    try:
        volume = LoadImage(reader=reader, image_only=True, dtype=np.float32)(path)
    except Exception as e:  # truncated gzip, random bytes, unsupported encodings ...
        raise CaseError(f"cannot be read ({type(e).__name__}: {e})", case_id, path) from None
    bad = int((~torch.isfinite(volume)).sum())
    if bad:
        raise CaseError(f"holds {bad} NaN/Inf voxels", case_id, path)
    return volume


class LoadCased(MapTransform):
    """Load, check and stack one case: ``image`` -> [4, X, Y, Z], ``label`` -> [1, X, Y, Z].

    Checks headers first (files exist, shapes and affines agree: ``check_case_files``), then the voxels:
    no NaN/Inf, no all-zero modality, label values defined by ``convention``. Every failure is a
    ``CaseError`` naming the case, the file and the problem.
    """

    def __init__(self, convention: str | LabelConvention, keys: Sequence[str] = ("image", "label")) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.convention = get_convention(convention)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        case_id = d.get("case_id")
        check_case_files(d)
        d["image"] = self._load_image(d["image"], d.get("channel_order"), case_id)
        if d.get("label"):
            d["label"] = self._load_label(d["label"], case_id)
        return {k: v for k, v in d.items() if v is not None}  # no label, no fold: nothing to collate

    def _load_image(self, paths, channel_order, case_id) -> MetaTensor:
        if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence):
            volume = _load_volume(str(paths), case_id)  # one 4-D file: [X, Y, Z, C]
            if volume.ndim != 4 or volume.shape[-1] != len(MODALITIES):
                raise CaseError(
                    f"has shape {tuple(volume.shape)}; expected [X, Y, Z, {len(MODALITIES)}]", case_id, paths
                )
            order = list(channel_order) if channel_order is not None else list(range(len(MODALITIES)))
            channels = [volume[..., i] for i in order]
            files = [str(paths)] * len(MODALITIES)
        else:
            if len(paths) != len(MODALITIES):
                raise CaseError(
                    f"has {len(paths)} image files; expected {len(MODALITIES)} ({', '.join(MODALITIES)})", case_id
                )
            channels = [_load_volume(str(p), case_id) for p in paths]
            files = [str(p) for p in paths]
        for volume, path in zip(channels, files):
            if not bool(volume.any()):
                raise CaseError("is empty: every voxel is 0", case_id, path)
        image = MetaTensor(torch.stack([c.as_tensor() for c in channels]), meta=dict(channels[0].meta))  # [4, X, Y, Z]
        image.meta["original_channel_dim"] = 0
        return image

    def _load_label(self, path, case_id) -> MetaTensor:
        label = _load_volume(str(path), case_id)  # [X, Y, Z]
        bad = self.convention.unexpected_values(label)
        if bad:
            raise CaseError(
                f"label holds values {bad[:10]} that the {self.convention.name} convention does not define "
                f"(expected {list(self.convention.values)}); set data.label_convention if the layout was misread",
                case_id,
                path,
            )
        return label[None]  # [1, X, Y, Z]


def preprocessing(
    convention: str | LabelConvention,
    pixdim: Sequence[float] | None = None,
    with_label: bool = True,
    margin: int = 0,
) -> list:
    """Deterministic part shared by training, validation and prediction (what caching stores)."""
    keys = ["image", "label"] if with_label else ["image"]
    transforms = [
        LoadCased(convention),
        Orientationd(keys=keys, axcodes="RAS", labels=None),
    ]
    if pixdim is not None:
        modes = ("bilinear", "nearest") if with_label else ("bilinear",)
        transforms.append(Spacingd(keys=keys, pixdim=pixdim, mode=modes))
    transforms += [
        CropForegroundd(keys=keys, source_key="image", margin=margin, allow_smaller=True),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ]
    if with_label:
        transforms.append(LabelToRegionsd(keys="label", convention=convention))
    return transforms


def train_transforms(
    convention: str | LabelConvention,
    roi_size: Sequence[int],
    pixdim: Sequence[float] | None = None,
    pos_fraction: float = 0.5,
) -> Compose:
    """Preprocessing + random ``roi_size`` crop (``pos_fraction`` of crops centred on tumour), flips, jitter."""
    keys = ["image", "label"]
    return Compose(
        [
            *preprocessing(convention, pixdim, with_label=True),
            SpatialPadd(keys=keys, spatial_size=roi_size),
            RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=roi_size,
                pos=pos_fraction,
                neg=1.0 - pos_fraction,
                num_samples=1,
                image_key="image",
                image_threshold=0.0,
            ),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=2),
            RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


def eval_transforms(
    convention: str | LabelConvention, pixdim: Sequence[float] | None = None, with_label: bool = True
) -> Compose:
    """Preprocessing only: whole (head-cropped) volumes for sliding-window validation and prediction."""
    return Compose(preprocessing(convention, pixdim, with_label=with_label))
