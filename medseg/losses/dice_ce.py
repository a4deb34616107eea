"""Dice + cross-entropy over mutually exclusive classes (softmax outputs: background + one per class)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn
from torch.nn import functional as F

from medseg.losses.blob import blob_dice_loss


class DiceCELoss(nn.Module):
    """``dice_weight * soft Dice + ce_weight * cross-entropy`` on softmax outputs, as MONAI's ``DiceCELoss``
    (the BTCV recipe), with its parts returned by name: ``loss``, ``dice`` and ``ce``; ``blob_weight`` adds
    that times the blob Dice of the foreground classes (:mod:`medseg.losses.blob`; part ``blob``).

    The Dice term leaves the background out, so the organs, not the abdomen around them, set its scale.
    ``squared_pred``: the Dice denominator sums squared probabilities (off by default, as MONAI's and nnU-Net's).
    """

    def __init__(
        self, dice_weight: float = 1.0, ce_weight: float = 1.0, blob_weight: float = 0.0, squared_pred: bool = False
    ) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight, self.blob_weight = dice_weight, ce_weight, blob_weight
        self.dice = DiceLoss(
            to_onehot_y=True,
            softmax=True,
            include_background=False,
            squared_pred=squared_pred,
            smooth_nr=0.0,
            smooth_dr=1e-5,
        )
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits [B, K+1, *spatial]; target [B, 1, *spatial] class indices (float or int)."""
        dice = self.dice(logits, target)
        ce = self.ce(logits, target[:, 0].long())
        parts = {"loss": self.dice_weight * dice + self.ce_weight * ce, "dice": dice, "ce": ce}
        if self.blob_weight:
            masks = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1)[:, 1:]  # [B, K, *spatial]
            parts["blob"] = blob_dice_loss(torch.softmax(logits, 1)[:, 1:], masks)
            parts["loss"] = parts["loss"] + self.blob_weight * parts["blob"]
        return parts
