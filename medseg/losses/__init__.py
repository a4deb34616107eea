from medseg.losses.deep_supervision import deep_supervision_loss
from medseg.losses.dice_bce import DiceBCELoss
from medseg.losses.dice_ce import DiceCELoss
from medseg.losses.ssl import SSLLoss

__all__ = ["DiceBCELoss", "DiceCELoss", "SSLLoss", "deep_supervision_loss"]
