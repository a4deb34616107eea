"""Test-time augmentation by mirroring, as nnU-Net does: run the network on every combination of flips of
the allowed spatial axes, flip each output back, and average the probabilities.

Axes are spatial, in the RAS orientation both validation and ``medseg predict`` feed the network: 0 is
left-right, 1 anterior-posterior, 2 inferior-superior. By default a regions task (brain tumours: no
sides) mirrors all three axes (8 passes); a classes task mirrors only 1 and 2 (4 passes), since mirroring
left-right would turn a left kidney into a right one for a network that learned sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import torch

DEFAULT_AXES = {"regions": (0, 1, 2), "classes": (1, 2)}


def mirror_axes(kind: str, axes: Sequence[int] | None = None) -> tuple[int, ...]:
    """The spatial axes to mirror: ``axes`` checked (each of 0, 1, 2, once), or the default of the task's
    ``kind`` (``regions``: 0, 1, 2; ``classes``: 1, 2)."""
    if axes is None:
        return DEFAULT_AXES[kind]
    chosen = tuple(int(a) for a in axes)
    if any(a not in (0, 1, 2) for a in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(f"mirror axes {list(axes)}: give distinct spatial axes among 0, 1, 2 (0 is left-right)")
    return tuple(sorted(chosen))


def mirror_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every combination of the axes, the unflipped pass first: ``2 ** len(axes)`` of them."""
    return [flip for n in range(len(axes) + 1) for flip in combinations(axes, n)]


def activation(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """logits [B, N, *spatial] -> probabilities: sigmoid per region, or softmax over background and classes."""
    return torch.sigmoid(logits) if kind == "regions" else torch.softmax(logits, 1)


def to_logits(probabilities: torch.Tensor, kind: str, eps: float = 1e-6) -> torch.Tensor:
    """The inverse of :func:`activation` (up to ``eps``), for code that takes logits (losses, ``masks``)."""
    p = probabilities.clamp(eps, 1 - eps)
    return torch.log(p / (1 - p)) if kind == "regions" else torch.log(p)


def mirrored_probabilities(
    predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, kind: str, axes: Sequence[int]
) -> torch.Tensor:
    """Mean probabilities [B, N, X, Y, Z] of ``predict`` (image [B, C, X, Y, Z] -> logits [B, N, X, Y, Z])
    over the ``2 ** len(axes)`` mirrored copies of ``image``, each output flipped back before averaging.
    With no axes: one plain pass."""
    total = None
    flips = mirror_sets(axes)
    for flip in flips:
        dims = [2 + a for a in flip]  # spatial axis a is tensor dim 2 + a
        logits = predict(image.flip(dims) if dims else image)  # [B, N, X, Y, Z] on the stitch device
        probs = activation(logits.float(), kind)
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total.add_(probs)
    return total / len(flips)
