from medseg.losses.dice_bce import DiceBCELoss
from medseg.losses.dice_ce import DiceCELoss

__all__ = ["DiceBCELoss", "DiceCELoss"]
