"""Training augmentation as small data: presets of probabilities and strengths, built into MONAI transforms.

``augment`` (the datamodule's ``data.init_args.augment``) is a preset's name or a dict that overrides
single entries of one: ``{preset: nnunet, elastic: {prob: 0.2}}`` (the preset defaults to ``nnunet``).

- ``nnunet`` (the default): nnU-Net's (v2 ``nnUNetTrainer``) augmentation and probabilities: rotation
  (0.2) and scaling 0.7-1.4 (0.2) in one ``RandAffined``, Gaussian noise of variance up to 0.1 (0.1),
  blur sigma 0.5-1 (0.2), brightness x 0.75-1.25 (0.15), contrast 0.75-1.25 (0.15), low resolution
  zoom 0.5-1 (0.25), gamma 0.7-1.5 on the inverted image (0.1) and on the image (0.3), mirroring per axis
  (0.5; regions tasks only: a classes task may tell left from right). Elastic deformation is there,
  off (``elastic: {prob: 0.2}`` turns it on).
- ``light``: what training had before the presets, transform for transform: flips (regions tasks) and
  intensity scale and shift of up to 10 %, always (``configs/swin_unetr_demo.yaml`` keeps it).
- ``none``: the crop alone.

Rotation is ``degrees: auto``: +-30 degrees about every axis, or, when the roi is anisotropic (its
longest side over 3 x its shortest, nnU-Net's rule), +-180 degrees about the short axis only (in-plane).

Where MONAI's transforms differ from nnU-Net's: the scale is drawn per axis (nnU-Net: one for all, unless
``independent_scale_for_each_axis``); noise std is uniform up to sqrt(variance) (nnU-Net: the variance
is uniform); gamma takes one value and one intensity range over all channels, blur and low resolution
one draw for all channels (nnU-Net: each channel with probability 0.5).

``histogram_shift`` (not nnU-Net's; off in every preset) remaps the intensities through a random monotone
curve (MONAI's ``RandHistogramShiftd``, 5-15 control points, one curve for all channels), so that no
absolute intensity level marks a boundary.

Spatial transforms cost one resample at the roi: the crop is taken larger (``crop_size``), around the
centre the roi crop would have had, and ``RandAffined(spatial_size=roi)`` (``Rand3DElasticd`` when the
draw includes elastic deformation) samples the roi out of it; crops drawn without any are centre-cropped
to the roi. A ``OneOf`` over the combinations, weighted so that each happens independently with its
probability, chooses.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import (
    CenterSpatialCropd,
    OneOf,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)

from medseg.tasks import Task, get_task

KEYS = ("image", "label")
ANISOTROPY = 3.0  # longest / shortest roi side above which rotation is in-plane only (nnU-Net's rule)

# Every entry and field, probability 0: a preset names what it turns on, a dict override any field.
ENTRIES: dict[str, dict[str, Any]] = {
    "rotate": {"prob": 0.0, "degrees": "auto"},  # auto, one angle for every axis, or one per axis
    "scale": {"prob": 0.0, "range": [0.7, 1.4]},
    "elastic": {"prob": 0.0, "sigma": [9.0, 13.0], "magnitude": [0.0, 900.0]},  # voxels, as batchgenerators'
    "noise": {"prob": 0.0, "variance": 0.1},
    "blur": {"prob": 0.0, "sigma": [0.5, 1.0]},
    "brightness": {"prob": 0.0, "range": [0.75, 1.25]},
    "contrast": {"prob": 0.0, "range": [0.75, 1.25]},
    "lowres": {"prob": 0.0, "zoom": [0.5, 1.0]},
    "gamma_inverted": {"prob": 0.0, "range": [0.7, 1.5]},
    "gamma": {"prob": 0.0, "range": [0.7, 1.5]},
    "histogram_shift": {"prob": 0.0, "control_points": [5, 15]},  # a random monotone intensity curve
    "mirror": {"prob": 0.0, "axes": "auto"},  # auto: every axis for a regions task, none for a classes task
    "jitter": {"prob": 0.0, "scale": 0.1, "shift": 0.1},  # the light preset's intensity scale and shift
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "light": {"mirror": {"prob": 0.5}, "jitter": {"prob": 1.0}},
    "nnunet": {
        "rotate": {"prob": 0.2},
        "scale": {"prob": 0.2},
        "noise": {"prob": 0.1},
        "blur": {"prob": 0.2},
        "brightness": {"prob": 0.15},
        "contrast": {"prob": 0.15},
        "lowres": {"prob": 0.25},
        "gamma_inverted": {"prob": 0.1},
        "gamma": {"prob": 0.3},
        "mirror": {"prob": 0.5},
    },
}


def augment_spec(augment: str | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every entry of ``ENTRIES`` with its fields, from a preset's name or a dict of overrides
    (``{preset: nnunet, gamma: {prob: 0.5}}``); a ``ValueError`` names an unknown preset, entry or field."""
    overrides = {"preset": augment} if isinstance(augment, str) else dict(augment)
    preset = overrides.pop("preset", "nnunet")
    if preset not in PRESETS:
        raise ValueError(f"augment: unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    spec = copy.deepcopy(ENTRIES)
    for layer in (PRESETS[preset], overrides):
        for name, fields in layer.items():
            if name not in spec:
                raise ValueError(f"augment: unknown entry {name!r}; expected 'preset' or one of {sorted(spec)}")
            if not isinstance(fields, Mapping):
                raise ValueError(f"augment.{name}: expected a mapping of {sorted(spec[name])}, got {fields!r}")
            unknown = sorted(set(fields) - set(spec[name]))
            if unknown:
                raise ValueError(f"augment.{name}: unknown fields {unknown}; expected {sorted(spec[name])}")
            spec[name].update(copy.deepcopy(dict(fields)))
    for name, fields in spec.items():
        if not 0.0 <= float(fields["prob"]) <= 1.0:
            raise ValueError(f"augment.{name}.prob must be within [0, 1], got {fields['prob']}")
    return spec


def rotation_degrees(spec: Mapping[str, Any], roi_size: Sequence[int]) -> tuple[float, float, float]:
    """The largest rotation about each axis in degrees (``rotate.degrees``; module docstring for ``auto``)."""
    degrees = spec["rotate"]["degrees"]
    if degrees == "auto":
        if max(roi_size) / min(roi_size) > ANISOTROPY:
            short = int(np.argmin(roi_size))
            return tuple(180.0 if axis == short else 0.0 for axis in range(3))
        return (30.0, 30.0, 30.0)
    if isinstance(degrees, (int, float)):
        return (float(degrees),) * 3
    return tuple(float(d) for d in degrees)


def crop_size(spec: Mapping[str, Any], roi_size: Sequence[int]) -> tuple[int, int, int]:
    """The crop rotation and scaling sample the roi from: the roi when neither is on; else the roi zoomed out
    by the largest scale, or rotated by the largest angle about one axis (nnU-Net's ``get_patch_size``
    rule), whichever is larger: about 1.4 x the roi. Samples drawn at the extremes of both, or rotated
    about several axes at once, reach beyond it and get zeros in their corners, as the volume's own
    border gives (nnU-Net's zero padding): a bounding box of every draw would be 2.4 x the roi at +-30
    degrees (14 x its voxels to pad and index)."""
    roi = np.asarray(roi_size, float)
    extent = roi.copy()
    if spec["rotate"]["prob"] > 0:
        for axis, degrees in enumerate(rotation_degrees(spec, roi_size)):
            plane = [i for i in range(3) if i != axis]
            u, v = roi[plane]
            extent[plane] = np.maximum(extent[plane], [_rotated_side(u, v, degrees), _rotated_side(v, u, degrees)])
    if spec["scale"]["prob"] > 0:
        extent = np.maximum(extent, roi * max(1.0, float(spec["scale"]["range"][1])))
    return tuple(max(int(s), int(math.ceil(e - 1e-6))) for s, e in zip(roi_size, extent))


def _rotated_side(u: float, v: float, degrees: float) -> float:
    """The largest extent along ``u``'s axis of a ``u`` x ``v`` rectangle rotated by up to ``degrees``."""
    a = math.radians(min(abs(degrees), 180.0))
    best = math.atan2(v, u)  # u cos t + v sin t peaks there, at hypot(u, v)
    return math.hypot(u, v) if a >= best else u * math.cos(a) + v * math.sin(a)


def _spatial(spec: Mapping[str, Any], roi_size: Sequence[int]) -> list:
    """Rotation, scaling and elastic deformation, each with its own probability, in one resample from the
    ``crop_size`` crop to the roi: ``OneOf`` the combinations, weighted by their probabilities."""
    roi = tuple(int(s) for s in roi_size)
    p = [float(spec[name]["prob"]) for name in ("rotate", "scale", "elastic")]
    if not any(p):
        return []
    low, high = spec["scale"]["range"]
    ranges = {
        "rotate_range": [math.radians(d) for d in rotation_degrees(spec, roi)],
        "scale_range": [(float(low) - 1.0, float(high) - 1.0)] * 3,
    }
    common = {"keys": KEYS, "spatial_size": roi, "prob": 1.0, "mode": ("bilinear", "nearest"), "padding_mode": "zeros"}
    elastic = {"sigma_range": tuple(spec["elastic"]["sigma"]), "magnitude_range": tuple(spec["elastic"]["magnitude"])}
    transforms, weights = [], []
    for drawn in itertools.product((True, False), repeat=3):  # rotate, scale, elastic
        weight = math.prod(q if d else 1.0 - q for q, d in zip(p, drawn))
        if weight == 0:
            continue
        chosen = {key: value for (key, value), d in zip(ranges.items(), drawn) if d}
        if drawn[2]:
            transforms.append(Rand3DElasticd(**common, **elastic, **chosen))
        elif chosen:
            transforms.append(RandAffined(**common, **chosen, cache_grid=True))
        else:
            transforms.append(CenterSpatialCropd(keys=KEYS, roi_size=roi))
        weights.append(weight)
    return [OneOf(transforms, weights=weights)]


def augmentations(spec: str | Mapping[str, Any], task: str | dict | Task, roi_size: Sequence[int]) -> list:
    """MONAI transforms for a training crop of ``crop_size(spec, roi_size)`` (``image`` [C, *crop],
    ``label`` [R or 1, *crop]) -> the same keys at ``roi_size``, augmented as ``spec`` says (module docstring).

    ``spec``: a preset's name, a dict of overrides, or ``augment_spec``'s result. Every transform is MONAI
    ``Randomizable``: ``Compose.set_random_state`` reseeds them all. Labels are resampled nearest.
    """
    task = get_task(task)
    spec = augment_spec(spec)  # a resolved spec resolves to itself
    p = {name: float(fields["prob"]) for name, fields in spec.items()}
    out = _spatial(spec, roi_size)
    if p["noise"]:
        std = math.sqrt(float(spec["noise"]["variance"]))
        out.append(RandGaussianNoised(keys="image", prob=p["noise"], std=std, sample_std=True))
    if p["blur"]:
        sigma = tuple(spec["blur"]["sigma"])
        out.append(RandGaussianSmoothd(keys="image", sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=p["blur"]))
    if p["brightness"]:
        factors = tuple(float(f) - 1.0 for f in spec["brightness"]["range"])
        out.append(RandScaleIntensityd(keys="image", factors=factors, prob=p["brightness"], channel_wise=True))
    if p["contrast"]:  # nnU-Net's: around the mean, clipped to the former range
        factors = tuple(float(f) - 1.0 for f in spec["contrast"]["range"])
        contrast = RandScaleIntensityFixedMeand(
            keys="image", factors=factors, preserve_range=True, prob=p["contrast"], channel_wise=True
        )
        out.append(contrast)
    if p["lowres"]:
        out.append(RandSimulateLowResolutiond(keys="image", prob=p["lowres"], zoom_range=tuple(spec["lowres"]["zoom"])))
    for name, invert in (("gamma_inverted", True), ("gamma", False)):
        if p[name]:
            gamma = tuple(spec[name]["range"])
            out.append(
                RandAdjustContrastd(keys="image", prob=p[name], gamma=gamma, invert_image=invert, retain_stats=True)
            )
    if p["histogram_shift"]:
        points = spec["histogram_shift"]["control_points"]  # a number, or the range to draw it from (MONAI's)
        points = int(points) if isinstance(points, (int, float)) else tuple(int(n) for n in points)
        out.append(RandHistogramShiftd(keys="image", num_control_points=points, prob=p["histogram_shift"]))
    axes = spec["mirror"]["axes"]
    if axes == "auto":
        axes = (0, 1, 2) if task.kind == "regions" else ()
    if p["mirror"]:
        out += [RandFlipd(keys=list(KEYS), prob=p["mirror"], spatial_axis=axis) for axis in axes]
    if p["jitter"]:
        j = spec["jitter"]
        out += [
            RandScaleIntensityd(keys="image", factors=float(j["scale"]), prob=p["jitter"]),
            RandShiftIntensityd(keys="image", offsets=float(j["shift"]), prob=p["jitter"]),
        ]
    return out
