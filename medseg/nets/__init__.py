"""Plain nn.Modules: no Lightning in here."""

from medseg.nets.clip import HFTextEncoder, SwinImageEncoder, TransformerTextEncoder, ViTImageEncoder
from medseg.nets.detr import ConvBackbone3d, DETR3d, ResNetBackbone3d
from medseg.nets.ssl import SwinPretrainNet
from medseg.nets.swin_unetr import SwinUNETR
from medseg.nets.unetr import UNETR
from medseg.nets.vit import ViTClassifier

__all__ = [
    "DETR3d", "ConvBackbone3d", "HFTextEncoder", "ResNetBackbone3d", "SwinImageEncoder", "SwinPretrainNet", "SwinUNETR",
    "TransformerTextEncoder", "UNETR", "ViTClassifier", "ViTImageEncoder",
]  # fmt: skip
