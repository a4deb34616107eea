"""MONAI dictionary transforms from case files to network-ready tensors, for any task (:mod:`medseg.tasks`).

A case dict (see ``medseg.data.cases``) goes in: ``{"case_id", "image": one path per channel or one 4-D
path (+ "channel_order"), "label": path | None}``. Out comes:

- ``image``: float32 MetaTensor [C, X, Y, Z], RAS-oriented, optionally resampled, cropped to the
  foreground (MR: non-zero voxels; CT: the body, above -500 HU), each channel normalised by its kind
  (MR: z-score over its non-zero voxels; CT: clip to the dataset's window, z-score with its statistics);
  its ``applied_operations`` let ``Invertd`` map predictions back to the input grid;
- ``label``: float32 MetaTensor, the task's target: regions [R, X, Y, Z] (TC, WT, ET for BraTS), or
  class indices [1, X, Y, Z] (0 background, i the i-th class) for a classes task.

Training adds a random ``roi_size`` crop (regions: ``pos_fraction`` of the crops centred on a labelled voxel;
classes: every class equally often, MONAI's RandCropByLabelClassesd) and the augmentation ``augment`` names
(:mod:`medseg.data.augment`: nnU-Net's by default; ``light``, flips and intensity jitter, is what training
had before).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor, NibabelReader
from monai.transforms import (
    BorderPadd,
    Compose,
    CropForegroundd,
    EnsureTyped,
    LoadImage,
    MapTransform,
    NormalizeIntensity,
    NormalizeIntensityd,
    Orientationd,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    Spacingd,
    SpatialPadd,
    Transform,
)

from medseg.data.augment import augment_spec, augmentations, crop_size
from medseg.data.bias_field import BiasFieldCorrectiond, check_bias_field
from medseg.data.labels import LabelToRegionsd
from medseg.errors import CaseError
from medseg.io import SimpleITKReader, check_case_files, is_nifti
from medseg.tasks import CT_BODY_HU, Channel, Task, get_task


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
    """Load, check and stack one case: ``image`` -> [C, X, Y, Z] (the task's channels), ``label`` -> [1, X, Y, Z].

    Checks headers first (files exist, shapes and affines agree: ``check_case_files``), then the voxels:
    no NaN/Inf, no all-zero channel, label values defined by the task. Every failure is a ``CaseError``
    naming the case, the file and the problem.
    """

    def __init__(self, task: str | dict | Task, keys: Sequence[str] = ("image", "label")) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.task = self.convention = get_task(task)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        case_id = d.get("case_id")
        check_case_files(d)
        d["image"] = self._load_image(d["image"], d.get("channel_order"), case_id)
        if d.get("label"):
            d["label"] = self._load_label(d["label"], case_id)
        return {k: v for k, v in d.items() if v is not None}  # no label, no fold: nothing to collate

    def _load_image(self, paths, channel_order, case_id) -> MetaTensor:
        n, names = self.task.in_channels, ", ".join(self.task.channel_names)
        if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence):
            volume = _load_volume(str(paths), case_id)  # one file: [X, Y, Z] or [X, Y, Z, C]
            if volume.ndim == 4 and volume.shape[-1] == 1 and n == 1:
                volume = volume[..., 0]
            order = list(channel_order) if channel_order is not None else list(range(n))
            if volume.ndim == 3 and n == 1:
                channels = [volume]
            elif volume.ndim == 4 and len(order) == n and max(order) < volume.shape[-1]:
                channels = [volume[..., i] for i in order]
            else:
                expected = "[X, Y, Z]" if n == 1 else f"[X, Y, Z, {n}]"
                raise CaseError(f"has shape {tuple(volume.shape)}; expected {expected} ({names})", case_id, paths)
            files = [str(paths)] * n
        else:
            if len(paths) != n:
                raise CaseError(f"has {len(paths)} image files; expected {n} ({names})", case_id)
            channels = [_load_volume(str(p), case_id) for p in paths]
            files = [str(p) for p in paths]
        for volume, path in zip(channels, files):
            if not bool(volume.any()):
                raise CaseError("is empty: every voxel is 0", case_id, path)
        image = MetaTensor(torch.stack([c.as_tensor() for c in channels]), meta=dict(channels[0].meta))  # [C, X, Y, Z]
        image.meta["original_channel_dim"] = 0
        return image

    def _load_label(self, path, case_id) -> MetaTensor:
        label = _load_volume(str(path), case_id)  # [X, Y, Z]
        if label.ndim == 4 and label.shape[-1] == 1:
            label = label[..., 0]
        bad = self.task.unexpected_values(label)
        if bad:
            hint = "set data.task if the layout was misread"
            if 4 in bad and self.task.name == "brats2023":
                hint = "BraTS 2024 post-treatment glioma has 4 = resection cavity: set data.task: brats2024-gli-post"
            raise CaseError(
                f"label holds values {bad[:10]} that the {self.task.name} task does not define "
                f"(expected {list(self.task.values)}); {hint}",
                case_id,
                path,
            )
        return label[None]  # [1, X, Y, Z]


class ForegroundMask:
    """Foreground of an image [C, X, Y, Z] for cropping: MR channels above 0, CT channels above -500 HU
    (the body; air is -1000); a picklable ``select_fn`` for ``CropForegroundd``."""

    def __init__(self, channels: Sequence[Channel]) -> None:
        self.ct = [c.kind == "CT" for c in channels]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        ct = torch.tensor(self.ct, device=image.device).view(-1, *[1] * (image.ndim - 1))
        return torch.where(ct, image > CT_BODY_HU, image > 0)


class NormalizeChannels(Transform):
    """Image [C, X, Y, Z] normalised channel by channel according to its kind (see :class:`medseg.tasks.Channel`):
    MR z-score over non-zero voxels; CT clip to ``window`` then z-score with ``mean``/``std``, or the window
    scaled to [0, 1] when the channel has no statistics."""

    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels = tuple(channels)
        for channel in self.channels:
            if channel.needs_statistics:
                raise ValueError(f"CT channel {channel.name!r} has no window: measure it first (medseg plan)")
        self.mr = NormalizeIntensity(nonzero=True)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        out = image.clone()
        for i, channel in enumerate(self.channels):
            if channel.kind == "MR":
                out[i] = self.mr(image[i])
                continue
            low, high = channel.window
            clipped = image[i].clamp(low, high)
            if channel.mean is not None:
                out[i] = (clipped - channel.mean) / channel.std
            else:
                out[i] = (clipped - low) / (high - low)
        return out


class NormalizeChannelsd(MapTransform):
    """Dictionary twin of :class:`NormalizeChannels`."""

    def __init__(self, keys, channels: Sequence[Channel], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = NormalizeChannels(channels)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d


def preprocessing(
    task: str | dict | Task,
    pixdim: Sequence[float] | None = None,
    with_label: bool = True,
    margin: int = 0,
    bias_field: str | None = None,
) -> list:
    """Deterministic part shared by training, validation and prediction (what caching stores); ``bias_field``
    ``n4`` corrects the MR channels' bias field on the native grid (:mod:`medseg.data.bias_field`)."""
    task = get_task(task)
    keys = ["image", "label"] if with_label else ["image"]
    transforms = [
        LoadCased(task),
        Orientationd(keys=keys, axcodes="RAS", labels=None),
    ]
    if check_bias_field(bias_field) == "n4":
        transforms.append(BiasFieldCorrectiond(keys="image", mr=[c.kind == "MR" for c in task.channels]))
    if pixdim is not None:
        modes = ("bilinear", "nearest") if with_label else ("bilinear",)
        transforms.append(Spacingd(keys=keys, pixdim=pixdim, mode=modes))
    if all(c.kind == "MR" for c in task.channels):  # brain-tumour MRI: exactly the transforms it always had
        transforms += [
            CropForegroundd(keys=keys, source_key="image", margin=margin, allow_smaller=True),
            NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        ]
    else:
        select = ForegroundMask(task.channels)
        transforms += [
            CropForegroundd(keys=keys, source_key="image", select_fn=select, margin=margin, allow_smaller=True),
            NormalizeChannelsd(keys="image", channels=task.channels),
        ]
    if with_label:
        transforms.append(LabelToRegionsd(keys="label", convention=task))
    return transforms


def train_transforms(
    task: str | dict | Task,
    roi_size: Sequence[int],
    pixdim: Sequence[float] | None = None,
    pos_fraction: float = 0.5,
    augment: str | Mapping = "nnunet",
    bias_field: str | None = None,
) -> Compose:
    """Preprocessing + a random ``roi_size`` crop + ``augment`` (:mod:`medseg.data.augment`; module docstring)."""
    task = get_task(task)
    crop = crop_and_augment(task, roi_size, pos_fraction, augment)
    return Compose([*preprocessing(task, pixdim, with_label=True, bias_field=bias_field), *crop.transforms])


def crop_and_augment(
    task: str | dict | Task,
    roi_size: Sequence[int],
    pos_fraction: float = 0.5,
    augment: str | Mapping = "nnunet",
) -> Compose:
    """What training does after preprocessing: pad to ``roi_size``, a random crop, ``augment``.

    With rotation or scaling the crop is ``crop_size`` (larger than the roi) around the centre the roi crop
    would have had: the volume is first padded by the difference, after the cache (a nested ``Compose``
    counts as random), so cached volumes keep their size and the crop centres their distribution.
    """
    task = get_task(task)
    keys = ["image", "label"]
    spec = augment_spec(augment)
    size = crop_size(spec, roi_size)
    if task.kind == "regions":
        crop = RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=size,
            pos=pos_fraction,
            neg=1.0 - pos_fraction,
            num_samples=1,
            image_key="image",
            image_threshold=0.0,
        )
    else:
        k = len(task.classes)
        ratios = [1.0 - pos_fraction, *[pos_fraction / k] * k]  # background, then every class alike
        crop = RandCropByLabelClassesd(
            keys=keys, label_key="label", spatial_size=size, ratios=ratios, num_classes=k + 1, warn=False
        )
    if tuple(size) != tuple(roi_size):
        margin = [(c - r + 1) // 2 for c, r in zip(size, roi_size)]
        crop = Compose([BorderPadd(keys=keys, spatial_border=margin), crop])
    return Compose(
        [
            SpatialPadd(keys=keys, spatial_size=roi_size),
            crop,
            *augmentations(spec, task, roi_size),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


def eval_transforms(
    task: str | dict | Task,
    pixdim: Sequence[float] | None = None,
    with_label: bool = True,
    bias_field: str | None = None,
) -> Compose:
    """Preprocessing only: whole (foreground-cropped) volumes for sliding-window validation and prediction."""
    return Compose(preprocessing(task, pixdim, with_label=with_label, bias_field=bias_field))
