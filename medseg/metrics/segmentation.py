"""Dice and HD95 per named output (tumour regions TC, WT, ET; organ classes), with the BraTS conventions for
empty masks.

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


def metric_keys(names: Sequence[str]) -> list[str]:
    """Names of outputs -> the part of their metric keys: ``TC`` -> ``tc``, ``left kidney`` -> ``left_kidney``.

    Lower case, every run of characters other than ``a-z0-9`` made one ``_`` (safe in CSV headers and
    logger keys). A key that comes out empty, repeats an earlier one or is ``mean`` (taken by the means)
    gets its 1-based position appended (``output_1``, ``mean_3``, ``liver_2``): every output keeps a column.
    """
    keys: list[str] = []
    for i, name in enumerate(names, start=1):
        key = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
        if not key or key in keys or key == "mean":
            key = f"{key or 'output'}_{i}"
        while key in keys:  # a name that already looked like a numbered one
            key += "_"
        keys.append(key)
    return keys


def region_metrics(
    pred_masks: Tensor,
    label_masks: Tensor,
    spacing: Sequence[float] | None = None,
    with_hd95: bool = True,
    names: Sequence[str] = REGIONS,
) -> dict[str, float]:
    """Metrics of one case from binary masks [N, *spatial], one per output named in ``names``.

    The outputs are a task's regions (BraTS: TC, WT, ET, the default) or its foreground classes (one mask
    per organ; the background is not an output).

    Returns ``dice_<key>`` for each output, ``dice_mean`` and, with ``with_hd95``, ``hd95_<key>`` and
    ``hd95_mean`` (mm), all Python floats, where ``<key>`` is the output's name made a key by
    :func:`metric_keys` (``dice_tc``, ``dice_left_kidney``); the means are over the outputs.
    """
    pred_masks, label_masks = torch.as_tensor(pred_masks), torch.as_tensor(label_masks)
    names = [names] if isinstance(names, str) else list(names)
    if not names or pred_masks.shape[0] != len(names) or label_masks.shape[0] != len(names):
        raise ValueError(
            f"expected masks [{len(names)}, *spatial] ({', '.join(names)}), "
            f"got {tuple(pred_masks.shape)} and {tuple(label_masks.shape)}"
        )
    scores = {"dice": dice(pred_masks[None], label_masks[None])[0]}  # [N]
    if with_hd95:
        scores["hd95"] = hd95(pred_masks[None], label_masks[None], spacing)[0]  # [N]
    keys = metric_keys(names)
    out = {}
    for metric, values in scores.items():
        out.update({f"{metric}_{key}": float(v) for key, v in zip(keys, values)})
        out[f"{metric}_mean"] = float(values.mean())
    return out
