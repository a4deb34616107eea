from medseg.losses.dice_bce import DiceBCELoss

__all__ = ["DiceBCELoss"]
