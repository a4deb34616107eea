"""Symmetric InfoNCE (CLIP / ConVIRT) between image and report embeddings, with a learnable temperature.

Under DDP the embeddings of every rank are gathered with ``torch.distributed.nn.functional.all_gather``,
whose backward sums the gradients of all ranks into the local tensors, so the negatives of each pair span
the global batch and gradients still reach the local encoders.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def gather_embeddings(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], int]:
    """All ranks' tensors concatenated along dim 0 (differentiable), and this rank's index.

    Each tensor is [B, D] with the same B on every rank (Lightning's DistributedSampler gives every rank as
    many samples). Without an initialised process group, or with one process, the tensors come back as they are.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(tensors), 0
    from torch.distributed.nn.functional import all_gather

    return [torch.cat(all_gather(t), dim=0) for t in tensors], dist.get_rank()  # each [W*B, D]


class ClipLoss(nn.Module):
    """``(CE(image -> text) + CE(text -> image)) / 2`` over cosine similarities scaled by ``exp(logit_scale)``.

    The temperature is learnable: ``logit_scale`` starts at ``log(1 / init_temperature)`` (1/0.07 as in CLIP)
    and the scale used is clamped at ``max_scale`` (100).

    Args:
        init_temperature: starting temperature; the starting scale is its inverse.
        max_scale: largest scale used (the gradient stops there, as the scale is clamped).
        learn_temperature: False keeps the temperature fixed.
        local_loss: under DDP, score only this rank's rows against the global batch (cheaper for large
            batches); the mean over ranks is then the global loss. False: every rank computes the full
            global loss.
        gather: gather embeddings from all ranks under DDP (False: negatives from the local batch only).

    ``forward(image, text)`` takes L2-normalised embeddings [B, D] (pair i is row i of both) and returns
    ``loss`` (what is optimised), ``loss_i2t``, ``loss_t2i`` and ``logit_scale`` (the scale used, detached).
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        max_scale: float = 100.0,
        learn_temperature: bool = True,
        local_loss: bool = False,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if init_temperature <= 0 or 1.0 / init_temperature > max_scale:
            raise ValueError(
                f"init_temperature must be > 0 with 1/init_temperature <= max_scale ({max_scale}), "
                f"got {init_temperature}"
            )
        log_scale = torch.tensor(math.log(1.0 / init_temperature))
        self.logit_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)
        self.max_scale, self.local_loss, self.gather = max_scale, local_loss, gather

    def scale(self) -> torch.Tensor:
        """The multiplier of the cosine similarities, ``exp(logit_scale)`` clamped at ``max_scale``."""
        return self.logit_scale.exp().clamp(max=self.max_scale)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.shape != text.shape or image.ndim != 2:
            raise ValueError(
                f"image and text embeddings must both be [B, D], got {tuple(image.shape)} and {tuple(text.shape)}"
            )
        batch = len(image)
        (all_image, all_text), rank = gather_embeddings(image, text) if self.gather else ([image, text], 0)
        scale = self.scale()
        if self.local_loss:
            logits_i2t = scale * image @ all_text.T  # [B, W*B]
            logits_t2i = scale * text @ all_image.T  # [B, W*B]
            target = torch.arange(batch, device=image.device) + rank * batch  # [B]
        else:
            logits_i2t = scale * all_image @ all_text.T  # [W*B, W*B]
            logits_t2i = logits_i2t.T
            target = torch.arange(len(all_image), device=image.device)  # [W*B]
        loss_i2t = F.cross_entropy(logits_i2t, target)
        loss_t2i = F.cross_entropy(logits_t2i, target)
        return {
            "loss": (loss_i2t + loss_t2i) / 2,
            "loss_i2t": loss_i2t,
            "loss_t2i": loss_t2i,
            "logit_scale": scale.detach(),
        }
