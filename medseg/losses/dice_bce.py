"""Dice + binary cross-entropy over overlapping regions (TC, WT, ET are nested, not exclusive classes)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn

from medseg.losses.blob import blob_dice_loss


class DiceBCELoss(nn.Module):
    """``dice_weight * soft Dice + bce_weight * BCE + blob_weight * blob Dice`` on sigmoid outputs, one channel
    per region (blob Dice: :mod:`medseg.losses.blob`, a soft Dice per lesion; off at 0).

    MONAI's ``DiceCELoss`` applies a softmax cross-entropy to multi-channel input even with
    ``sigmoid=True``, which is wrong for nested regions; hence this pairing.

    ``squared_pred``: the Dice denominator sums squared probabilities (MONAI's BraTS reference, the default);
    False sums them as they are (nnU-Net's soft Dice).

    Returns a dict of named parts: ``loss`` (what is optimised), ``dice``, ``bce`` (and ``blob`` when on).
    """

    def __init__(
        self, dice_weight: float = 1.0, bce_weight: float = 1.0, blob_weight: float = 0.0, squared_pred: bool = True
    ) -> None:
        super().__init__()
        self.dice_weight, self.bce_weight, self.blob_weight = dice_weight, bce_weight, blob_weight
        # MONAI's BraTS reference settings: no numerator smoothing, so a region absent from a crop adds
        # no push towards predicting nothing (BCE handles background)
        self.dice = DiceLoss(sigmoid=True, squared_pred=squared_pred, smooth_nr=0.0, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits, target: [B, C, *spatial]; target is 0/1 (float or bool)."""
        target = target.float()
        dice = self.dice(logits, target)
        bce = self.bce(logits, target)
        parts = {"loss": self.dice_weight * dice + self.bce_weight * bce, "dice": dice, "bce": bce}
        if self.blob_weight:
            parts["blob"] = blob_dice_loss(torch.sigmoid(logits), target)
            parts["loss"] = parts["loss"] + self.blob_weight * parts["blob"]
        return parts
