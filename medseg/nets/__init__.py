"""Plain nn.Modules: no Lightning in here."""

from medseg.nets.swin_unetr import SwinUNETR
from medseg.nets.unetr import UNETR
from medseg.nets.vit import ViTClassifier

__all__ = ["SwinUNETR", "UNETR", "ViTClassifier"]
