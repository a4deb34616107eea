"""Image and report encoders for CLIP-style pre-training: plain nn.Modules, each ending in a projection head.

- image towers (:mod:`medseg.nets.clip.image`): ``image`` [B, C, X, Y, Z] -> [B, embed_dim]:
  :class:`SwinImageEncoder`, :class:`ViTImageEncoder`;
- text towers (:mod:`medseg.nets.clip.text`): B report strings -> [B, embed_dim]:
  :class:`TransformerTextEncoder` with its :class:`ReportTokenizer` (:mod:`medseg.nets.clip.tokenizer`),
  :class:`HFTextEncoder`.

Saved configs and checkpoints name these classes as ``medseg.nets.clip.<Class>``; they resolve here.
"""

from medseg.nets.clip.head import ProjectionHead
from medseg.nets.clip.image import SwinImageEncoder, ViTImageEncoder, build_image_encoder
from medseg.nets.clip.text import HFTextEncoder, TransformerTextEncoder, build_text_encoder
from medseg.nets.clip.tokenizer import ReportTokenizer

__all__ = [
    "HFTextEncoder",
    "ProjectionHead",
    "ReportTokenizer",
    "SwinImageEncoder",
    "TransformerTextEncoder",
    "ViTImageEncoder",
    "build_image_encoder",
    "build_text_encoder",
]
