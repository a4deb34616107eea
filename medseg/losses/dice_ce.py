"""Dice + cross-entropy over mutually exclusive classes (softmax outputs: background + one per class)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn


class DiceCELoss(nn.Module):
    """``dice_weight * soft Dice + ce_weight * cross-entropy`` on softmax outputs, as MONAI's ``DiceCELoss``
    (the BTCV recipe), with its parts returned by name: ``loss``, ``dice`` and ``ce``.

    The Dice term leaves the background out, so the organs, not the abdomen around them, set its scale.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=0.0, smooth_dr=1e-5)
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits [B, K+1, *spatial]; target [B, 1, *spatial] class indices (float or int)."""
        dice = self.dice(logits, target)
        ce = self.ce(logits, target[:, 0].long())
        return {"loss": self.dice_weight * dice + self.ce_weight * ce, "dice": dice, "ce": ce}
