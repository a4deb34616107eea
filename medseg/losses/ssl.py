"""The self-supervised pre-training loss of Swin UNETR (Tang et al., CVPR 2022), as named parts.

Two views of each crop, each rotated by its own quarter turn and with its own cubes masked, go through the
network as one batch [2B, ...]: rows 0..B-1 the first views, B..2B-1 the second, in the same crop order.

- ``inpaint``: L1 between the reconstruction and the rotated view before masking (the whole volume);
- ``rotation``: cross-entropy of the predicted quarter turn (4 classes);
- ``contrastive``: MONAI's ``ContrastiveLoss`` (NT-Xent) between the embeddings of the two views of each
  crop, every other crop of the batch a negative (0 for a batch of one crop: nothing to contrast with);
- ``loss``: ``inpaint_weight * inpaint + rotation_weight * rotation + contrastive_weight * contrastive``.

A weight of 0 leaves its part out of ``loss`` (it is still computed and logged): ``rotation_weight: 0,
contrastive_weight: 0`` is a plain masked-image objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss
from torch import nn


class SSLLoss(nn.Module):
    def __init__(
        self,
        inpaint_weight: float = 1.0,
        rotation_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        temperature: float = 0.5,
    ) -> None:
        super().__init__()
        self.weights = {"inpaint": inpaint_weight, "rotation": rotation_weight, "contrastive": contrastive_weight}
        self.contrastive = ContrastiveLoss(temperature=temperature)

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor, rotation: torch.Tensor) -> dict:
        """outputs: the network's dict over 2B views (``rotation`` [2B, 4], ``contrastive`` [2B, D],
        ``reconstruction`` [2B, C, X, Y, Z]); target [2B, C, X, Y, Z], the views before masking; rotation [2B]
        quarter turns. Returns ``loss``, ``inpaint``, ``rotation``, ``contrastive``."""
        embedding = outputs["contrastive"]  # [2B, D]
        half = len(embedding) // 2
        parts = {
            "inpaint": F.l1_loss(outputs["reconstruction"], target),
            "rotation": F.cross_entropy(outputs["rotation"], rotation),
            "contrastive": self.contrastive(embedding[:half], embedding[half:]),
        }
        loss = sum(self.weights[name] * value for name, value in parts.items() if self.weights[name])
        return {"loss": loss, **parts}
