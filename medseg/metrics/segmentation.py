"""Dice and HD95 per tumour region (TC, WT, ET), with the BraTS conventions for empty masks.

Both metrics take binary masks ``[B, C, *spatial]`` (bool or 0/1) and return ``[B, C]``. A region can
be absent from a case (many BraTS cases have no enhancing tumour), so what an empty mask scores is part
of the metric, not an edge case. Following the BraTS challenge:

- label empty, prediction empty: Dice 1, HD95 0 (nothing to find, nothing found);
- label empty, prediction not empty: Dice 0, HD95 373.13 mm (``HD95_PENALTY_MM``);
- label not empty, prediction empty: Dice 0, HD95 373.13 mm;
- both not empty: Dice = 2 |P & L| / (|P| + |L|), HD95 as below.

373.13 mm is the diagonal of a 240 x 240 x 155 mm volume (the BraTS image at 1 mm), the largest
distance a prediction can be off by.

HD95 is computed by MONAI (:func:`monai.metrics.compute_hausdorff_distance`, ``percentile=95``): the
surface of a mask is the set of its voxels that a 6-connected binary erosion removes (voxels on the image
border count as surface); each surface voxel of the prediction gets its Euclidean distance, in mm using
the voxel ``spacing``, to the nearest surface voxel of the label, and the other way round; HD95 is the
larger of the 95th percentiles (linear interpolation) of these two directed sets.

MONAI itself returns ``nan`` for all three empty cases (with a warning), so empty masks never reach it
here: they are scored by the list above.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import torch
from monai.metrics import compute_hausdorff_distance
from torch import Tensor

from medseg.data.labels import REGIONS

HD95_PENALTY_MM = 373.13  # sqrt(240**2 + 240**2 + 155**2): the BraTS volume's diagonal in mm


def _binary_pair(pred: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """Both masks as bool tensors [B, C, *spatial] of one shape (any non-zero value is foreground)."""
    pred, label = torch.as_tensor(pred), torch.as_tensor(label)
    if pred.shape != label.shape:
        shapes = f"{tuple(pred.shape)} and {tuple(label.shape)}"
        raise ValueError(f"prediction and label must have the same shape, got {shapes}")
    if pred.ndim < 3:
        raise ValueError(f"expected masks [B, C, *spatial], got shape {tuple(pred.shape)}")
    return pred != 0, label != 0


def metric_name(output: str) -> str:
    """An output's name as it appears in metric keys and CSV columns: ``TC`` -> ``tc``, ``kidney left``
    -> ``kidney_left``."""
    return re.sub(r"[^0-9a-z]+", "_", str(output).lower()).strip("_") or "output"


def dice(pred: Tensor, label: Tensor) -> Tensor:
    """Dice per batch item and channel: [B, C, *spatial] x 2 -> float [B, C].

    Plain tensor math on the inputs' device (cheap enough for every validation step); both empty -> 1,
    one empty -> 0 (see the module docstring).
    """
    pred, label = _binary_pair(pred, label)
    dims = tuple(range(2, pred.ndim))
    intersection = (pred & label).sum(dims)  # [B, C]
    total = pred.sum(dims) + label.sum(dims)  # [B, C]
    score = 2 * intersection.float() / total.clamp(min=1).float()  # [B, C]; 0 where exactly one is empty
    return torch.where(total > 0, score, torch.ones_like(score))


def hd95(pred: Tensor, label: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
    """95th-percentile symmetric Hausdorff distance in mm: [B, C, *spatial] x 2 -> float [B, C].

    Args:
        pred: binary prediction [B, C, *spatial].
        label: binary label, same shape.
        spacing: voxel size in mm, one number per spatial axis (the same for the whole batch); ``None``
            means 1 mm isotropic.

    Masks are empty-checked on their device; the distances are computed by MONAI on the CPU (a KD-tree
    over the surface voxels of the cropped masks). The result is on the inputs' device.
    """
    pred, label = _binary_pair(pred, label)
    if spacing is not None:
        spacing = [float(s) for s in spacing]
        if len(spacing) != pred.ndim - 2:
            raise ValueError(f"spacing {spacing} needs one value per spatial axis of shape {tuple(pred.shape)}")
    pred_any, label_any = pred.flatten(2).any(-1), label.flatten(2).any(-1)  # [B, C]
    out = torch.full(pred.shape[:2], HD95_PENALTY_MM, dtype=torch.float32)  # [B, C]: one empty -> penalty
    out[(~pred_any & ~label_any).cpu()] = 0.0
    pred, label = pred.cpu(), label.cpu()
    for b, c in (pred_any & label_any).nonzero().tolist():
        with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument it passes itself
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
            distance = compute_hausdorff_distance(
                pred[b, c][None, None],
                label[b, c][None, None],
                include_background=True,
                percentile=95,
                spacing=spacing,
            )  # [1, 1]
        out[b, c] = distance[0, 0]
    return out.to(pred_any.device)


def region_metrics(
    pred_regions: Tensor, label_regions: Tensor, spacing: Sequence[float] | None = None, with_hd95: bool = True
) -> dict[str, float]:
    """Metrics of one case from binary regions [3, *spatial] (TC, WT, ET).

    Returns ``dice_tc``, ``dice_wt``, ``dice_et``, ``dice_mean`` and, with ``with_hd95``, ``hd95_tc``,
    ``hd95_wt``, ``hd95_et``, ``hd95_mean`` (mm), all Python floats; the means are over the three regions.
    """
    pred_regions, label_regions = torch.as_tensor(pred_regions), torch.as_tensor(label_regions)
    if pred_regions.shape[0] != len(REGIONS) or label_regions.shape[0] != len(REGIONS):
        raise ValueError(
            f"expected regions [{len(REGIONS)}, *spatial] ({', '.join(REGIONS)}), "
            f"got {tuple(pred_regions.shape)} and {tuple(label_regions.shape)}"
        )
    scores = {"dice": dice(pred_regions[None], label_regions[None])[0]}  # [3]
    if with_hd95:
        scores["hd95"] = hd95(pred_regions[None], label_regions[None], spacing)[0]  # [3]
    out = {}
    for name, values in scores.items():
        out.update({f"{name}_{region.lower()}": float(v) for region, v in zip(REGIONS, values)})
        out[f"{name}_mean"] = float(values.mean())
    return out
