"""Deep supervision as nnU-Net trains it: the same loss on each decoder resolution, weighted 1, 1/2, 1/4, ...
(normalised to sum to 1), against the label downsampled by nearest neighbour."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def deep_supervision_weights(outputs: int) -> list[float]:
    """nnU-Net's weights for ``outputs`` resolutions, full resolution first: 1/2**i, normalised."""
    weights = [0.5**i for i in range(outputs)]
    return [w / sum(weights) for w in weights]


def deep_supervision_loss(
    loss: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    outputs: Sequence[torch.Tensor],
    target: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """``loss`` (a named-parts loss such as ``DiceBCELoss``) over ``outputs`` [logits at full resolution,
    then at 1/2, 1/4 ...], each [B, R or K+1, *spatial_i], against ``target`` [B, R or 1, *spatial].

    Returns the full-resolution parts (``dice``, ``bce`` ...) as ``loss`` returned them, with ``loss`` the
    weighted sum over resolutions and ``ds`` the lower resolutions' share of it.
    """
    weights = deep_supervision_weights(len(outputs))
    parts = loss(outputs[0], target)
    total = weights[0] * parts["loss"]
    lower = torch.zeros_like(total)
    for weight, logits in zip(weights[1:], outputs[1:]):
        small = F.interpolate(target.float(), size=logits.shape[2:], mode="nearest")  # [B, R or 1, *spatial_i]
        lower = lower + weight * loss(logits, small.to(target.dtype))["loss"]
    return {**parts, "loss": total + lower, "ds": lower}
