"""Dice + binary cross-entropy over overlapping regions (TC, WT, ET are nested, not exclusive classes)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn


class DiceBCELoss(nn.Module):
    """``dice_weight * soft Dice + bce_weight * BCE`` on sigmoid outputs, one channel per region.

    MONAI's ``DiceCELoss`` applies a softmax cross-entropy to multi-channel input even with
    ``sigmoid=True``, which is wrong for nested regions; hence this pairing.

    Returns a dict of named parts: ``loss`` (what is optimised), ``dice`` and ``bce``.
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight
        # MONAI's BraTS reference settings: no numerator smoothing, so a region absent from a crop adds
        # no push towards predicting nothing (BCE handles background); squared terms in the denominator
        self.dice = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits, target: [B, C, *spatial]; target is 0/1 (float or bool)."""
        target = target.float()
        dice = self.dice(logits, target)
        bce = self.bce(logits, target)
        return {"loss": self.dice_weight * dice + self.bce_weight * bce, "dice": dice, "bce": bce}
