"""Which tensors of a segmentation network are its encoder, stage by stage.

What a pre-trained start point fills (the loader reports it), what fine-tuning freezes for its first steps
and what layer-wise learning-rate decay scales:

- Swin UNETR: ``swinViT`` (the Swin transformer): stage 0 the patch embedding, stages 1-4 ``layers1`` to
  ``layers4`` (with ``layersNc`` of ``use_v2``); the convolutional encoder blocks (``encoder1`` ...) and the
  decoder take the transformer's features and are not part of it;
- UNETR: ``vit``: stage 0 the patch embedding, stage i + 1 the i-th transformer block, the final norm with
  the last block.
"""

from __future__ import annotations

import re

from torch import nn

ENCODER_PREFIXES = ("swinViT.", "vit.")  # the encoders medseg's segmentation networks have


def encoder_prefix(names) -> str | None:
    """The encoder prefix (``swinViT.``, ``vit.``) under which ``names`` (state_dict keys) hold tensors, or None."""
    names = list(names)
    return next((p for p in ENCODER_PREFIXES if any(n.startswith(p) for n in names)), None)


def encoder_stages(net: nn.Module) -> dict[str, int]:
    """Parameter name -> encoder stage (0: the input embedding, up to the deepest stage) for every parameter of
    the encoder of ``net``; decoder parameters are absent. Empty for a network without a known encoder."""
    stages = {}
    names = [name for name, _ in net.named_parameters()]
    blocks = [int(m.group(1)) for n in names if (m := re.match(r"vit\.blocks\.(\d+)\.", n))]
    last_block = max(blocks, default=0)
    for name in names:
        if name.startswith("swinViT."):
            layer = re.match(r"swinViT\.layers(\d)", name)
            stages[name] = int(layer.group(1)) if layer else 0
        elif name.startswith("vit."):
            block = re.match(r"vit\.blocks\.(\d+)\.", name)
            if block:
                stages[name] = int(block.group(1)) + 1
            else:
                stages[name] = last_block + 1 if name.startswith("vit.norm") else 0
    return stages
