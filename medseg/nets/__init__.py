"""Plain nn.Modules: no Lightning in here."""

from medseg.nets.swin_unetr import SwinUNETR

__all__ = ["SwinUNETR"]
