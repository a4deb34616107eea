"""N4 bias-field correction of MR channels (SimpleITK's ``N4BiasFieldCorrectionImageFilter``, Tustison et al.
2010), as a preprocessing step: ``data.init_args.bias_field: n4`` (``medseg fit``'s default for MR channels).

MR scans carry a smooth multiplicative intensity field from the receive coils: white matter on one side of
the head reads 20-30 % brighter than on the other, as much as a faint lesion differs from white matter. The
z-score normalisation that follows cannot remove it; N4 estimates the field as a smooth B-spline over the
non-zero voxels (the skull-stripped head) and divides it out. The fit runs on a grid of about ``GRID_MM``
voxels (the image shrunk by a whole factor), three fitting levels of ``ITERATIONS`` iterations each, then
the field is evaluated on the full grid: about 1 s a channel for a 96 x 96 x 64 volume at 2 mm, 2-3 s for
a 240 x 240 x 155 one at 1 mm, on one CPU core (docs/benchmarks.md, issue 13's seventh measurement).

CT channels (intensities in Hounsfield units), channels without positive voxels and channels already
normalised (more than ``NEGATIVE_SHARE`` of their non-zero voxels negative: N4 models positive intensities)
pass unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medseg.errors import CaseError

METHODS = ("n4",)
GRID_MM = 4.0  # the fit's voxel size, about: the field varies over 60+ mm
ITERATIONS = (20, 20, 20)  # per fitting level; a fourth level starts to fit tissue contrast, not the field
MIN_VOXELS = 1000  # fewer non-zero voxels than this: nothing to fit, the channel passes unchanged
MIN_SIDE = 8  # voxels along each axis of the shrunk grid, at least (where the volume has them)
NEGATIVE_SHARE = 0.01  # a few negative voxels (interpolation ringing) are kept as they are; more: skip the channel


def check_bias_field(method: str | None) -> str | None:
    """``method`` if it names a correction (or is None: none); else a ValueError listing the choices."""
    if method is not None and method not in METHODS:
        raise ValueError(f"bias_field must be one of {list(METHODS)} or null, not {method!r}")
    return method


def n4_correct(volume: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``volume`` [X, Y, Z] (0 outside the head) with its N4 bias field divided out, float32; the field is fitted
    on and divided out of the positive voxels, the others keep their values. ``spacing`` in mm along the
    array axes chooses the fit's shrink factor. Unchanged (a float32 copy): fewer than ``MIN_VOXELS`` positive
    voxels, or more than ``NEGATIVE_SHARE`` of the non-zero ones negative (an image normalised already)."""
    mask = volume > 0
    positive, negative = int(mask.sum()), int((volume < 0).sum())
    if positive < MIN_VOXELS or negative > NEGATIVE_SHARE * (negative + positive):
        return volume.astype(np.float32, copy=True)
    size = "x".join(map(str, volume.shape))
    if min(volume.shape) < 3:
        raise ValueError(
            f"N4 bias-field correction needs 3 voxels or more along each axis, found {size} (bias_field: null skips it)"
        )
    image = sitk.GetImageFromArray(volume.astype(np.float32).transpose(2, 1, 0))  # SimpleITK is [Z, Y, X]
    image.SetSpacing([float(s) for s in spacing])
    weights = sitk.GetImageFromArray(mask.astype(np.uint8).transpose(2, 1, 0))
    weights.CopyInformation(image)
    shrink = [max(1, min(int(round(GRID_MM / float(s))), n // MIN_SIDE)) for s, n in zip(spacing, volume.shape)]
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(ITERATIONS))
    try:
        n4.Execute(sitk.Shrink(image, shrink), sitk.Shrink(weights, shrink))
        log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)).transpose(2, 1, 0)  # [X, Y, Z]
    except RuntimeError as err:  # ITK's message is a page of C++; its last line says what went wrong
        reason = str(err).strip().splitlines()[-1]
        raise ValueError(f"N4 bias-field correction failed on a {size} volume: {reason}") from None
    return np.where(mask, volume / np.exp(log_field), volume).astype(np.float32)


class BiasFieldCorrection(Transform):
    """Image [C, X, Y, Z] with each MR channel N4-corrected (:func:`n4_correct`); ``mr`` says, per channel,
    which to correct. The voxel size comes from the MetaTensor's affine (1 mm when it has none)."""

    def __init__(self, mr: Sequence[bool]) -> None:
        self.mr = tuple(bool(m) for m in mr)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        spacing = image.pixdim.tolist() if isinstance(image, MetaTensor) else [1.0, 1.0, 1.0]
        out = image.clone()
        for i, mr in enumerate(self.mr):
            if mr:
                corrected = n4_correct(image[i].detach().cpu().numpy(), spacing)  # [X, Y, Z]
                out[i] = torch.as_tensor(corrected, dtype=out.dtype)
        return out


class BiasFieldCorrectiond(MapTransform):
    """Dictionary twin of :class:`BiasFieldCorrection`."""

    def __init__(self, keys, mr: Sequence[bool], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.correct = BiasFieldCorrection(mr)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.correct(d[key])
            except ValueError as err:
                raise CaseError(str(err), d.get("case_id")) from None
        return d
