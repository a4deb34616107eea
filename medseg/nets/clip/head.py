"""The projection head that ends every CLIP tower: tower features -> the joint embedding."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """``linear``: one Linear layer; ``mlp``: Linear -> GELU -> Linear (ConVIRT's non-linear head)."""

    def __init__(self, in_dim: int, embed_dim: int, kind: Literal["linear", "mlp"] = "mlp") -> None:
        super().__init__()
        if kind == "linear":
            self.proj = nn.Linear(in_dim, embed_dim)
        elif kind == "mlp":
            self.proj = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, embed_dim))
        else:
            raise ValueError(f"projection head must be 'linear' or 'mlp', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
