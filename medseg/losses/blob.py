"""Blob loss: a soft Dice per lesion (connected component of the truth), so a small lesion weighs as much as a
large one (Kofler et al., "blob loss: instance imbalance aware loss functions for semantic segmentation",
IPMI 2023).

The voxel-wise Dice of a region is dominated by its largest lesion: missing a 100-voxel satellite beside a
10 000-voxel tumour costs 1 % of it, but a whole lesion (Dice 0) in the lesion-wise scores BraTS ranks by.
For each truth lesion ``k`` of a crop, the prediction is scored against ``k`` alone with the other lesions
masked out (their voxels neither reward nor penalise), the background kept (a false positive anywhere
penalises every lesion); the losses are averaged over the lesions of a channel, then over the channels and
crops that hold any.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

_CONNECTIVITY = {2: np.ones((3, 3), bool), 3: np.ones((3, 3, 3), bool)}  # 8- / 26-connected lesions


def blob_dice_loss(probs: torch.Tensor, masks: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Mean over lesions of ``1 - soft Dice`` (squared prediction in the denominator, as MONAI's
    ``DiceLoss(squared_pred=True)``).

    Args:
        probs: predicted probabilities [B, C, *spatial] (sigmoid for regions, softmax foreground classes).
        masks: binary truth [B, C, *spatial], same shape.
        smooth: added to each lesion's denominator.

    Returns:
        a scalar tensor; 0 (with a gradient path) where no crop holds a lesion.
    """
    if probs.shape != masks.shape:
        raise ValueError(f"probs and masks must have the same shape, got {tuple(probs.shape)} and {tuple(masks.shape)}")
    structure = _CONNECTIVITY[probs.ndim - 2]
    truth = masks.detach().cpu().numpy() != 0
    losses = []
    for b in range(probs.shape[0]):
        for c in range(probs.shape[1]):
            lesions, count = ndimage.label(truth[b, c], structure)
            if count == 0:
                continue
            ids = torch.as_tensor(lesions, device=probs.device).flatten().long()  # [V], 0 background
            p = probs[b, c].flatten()
            per_id = torch.zeros(count + 1, dtype=p.dtype, device=p.device)
            squared = per_id.index_add(0, ids, p * p)  # [count + 1]: sum of p^2 over the background, each lesion
            inside = per_id.index_add(0, ids, p)[1:]  # [count]: sum of p over each lesion
            size = torch.bincount(ids, minlength=count + 1)[1:].to(p.dtype)  # [count]
            dice = 2 * inside / (squared[0] + squared[1:] + size + smooth)
            losses.append((1 - dice).mean())
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()
