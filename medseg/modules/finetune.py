"""Fine-tuning from a pre-trained encoder: layer-wise learning-rate decay and an encoder frozen for the first steps.

Which parameters are the encoder, and its stages, comes from :func:`medseg.nets.encoders.encoder_stages`
(Swin UNETR's ``swinViT``: patch embedding, then four stages; UNETR's ``vit``: patch embedding, then blocks).

- Layer-wise decay ``d`` (BEiT, and Swin UNETR's fine-tuning practice): the decoder trains at ``lr``, the
  deepest encoder stage at ``lr * d``, the one below at ``lr * d^2``, ..., the patch embedding at
  ``lr * d^(stages)``: what pre-training learnt first changes least.
- Freezing for ``N`` steps: the encoder's gradients are dropped after each backward pass of the first
  ``N`` optimizer steps, so AdamW leaves it untouched (no update, no weight decay, no moments) while the
  decoder adapts to it. Gradients still flow through the encoder into the decoder's skip connections; the
  parameters keep ``requires_grad``, so DDP sees the same parameters all along.
"""

from __future__ import annotations

from torch import nn

from medseg.errors import ConfigError
from medseg.nets.encoders import encoder_stages


def _stages_or_error(net: nn.Module, option: str) -> dict[str, int]:
    stages = encoder_stages(net)
    if not stages:
        raise ConfigError(
            f"model.init_args.{option} needs a network with a known encoder (Swin UNETR's swinViT, UNETR's vit); "
            f"{type(net).__name__} has none"
        )
    return stages


def layer_decay_groups(net: nn.Module, lr: float, decay: float) -> list[dict]:
    """AdamW parameter groups of ``net``: one per encoder stage at ``lr * decay^(depth)`` (module docstring),
    the rest at ``lr``; each group names itself (``name``: ``decoder``, ``encoder_stage0`` ...)."""
    if decay == 1.0:
        return [{"params": [p for p in net.parameters() if p.requires_grad], "lr": lr, "name": "all"}]
    if not 0 < decay <= 1:
        raise ConfigError(f"model.init_args.layer_decay must be in (0, 1], got {decay}")
    stages = _stages_or_error(net, "layer_decay")
    deepest = max(stages.values())
    groups: dict[str, dict] = {}
    for name, parameter in net.named_parameters():
        if not parameter.requires_grad:
            continue
        stage = stages.get(name)
        key = "decoder" if stage is None else f"encoder_stage{stage}"
        scale = 1.0 if stage is None else decay ** (deepest - stage + 1)
        groups.setdefault(key, {"params": [], "lr": lr * scale, "name": key})["params"].append(parameter)
    return list(groups.values())


def encoder_parameters(net: nn.Module, option: str = "freeze_encoder_steps") -> list[nn.Parameter]:
    """The parameters of ``net``'s encoder; a ``ConfigError`` naming ``option`` when it has no known encoder."""
    stages = _stages_or_error(net, option)
    return [p for name, p in net.named_parameters() if name in stages]


def drop_gradients(parameters: list[nn.Parameter]) -> None:
    """Set the gradients of ``parameters`` to None: the optimizer step skips them."""
    for parameter in parameters:
        parameter.grad = None
