"""CLIP image towers: ``image`` [B, C, X, Y, Z] -> [B, embed_dim] (not normalised).

- :class:`SwinImageEncoder`: the Swin transformer of MONAI's ``SwinUNETR`` (``.swinViT``, the same
  state_dict keys, so Swin UNETR weights load into it), last-stage features pooled;
- :class:`ViTImageEncoder`: MONAI's 3-D ``ViT``, patch tokens pooled.

Both pool onto a coarse ``pool_grid`` (default 2 x 2 x 2 cells, flattened) rather than one global mean, so
where a finding lies (left or right hemisphere) survives pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR, ViT
from torch import nn

from medseg.nets.clip.head import ProjectionHead
from medseg.nets.vit import check_img_size, check_input_size


def _grid_pool(features: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """[B, C, X, Y, Z] -> [B, C * prod(grid)]: average over each cell of a coarse grid, then flatten."""
    return F.adaptive_avg_pool3d(features, tuple(grid)).flatten(1)


class SwinImageEncoder(nn.Module):
    """Swin UNETR's encoder (``monai.networks.nets.SwinUNETR(...).swinViT``) + pooling + projection head.

    Args:
        in_channels: image channels (4: t1, t1ce, t2, flair).
        embed_dim: size of the joint embedding.
        feature_size: Swin UNETR's feature size; the last stage has 16 x as many channels.
        depths, num_heads, window_size: Swin UNETR's stage depths, heads per stage and attention window.
        pool_grid: last-stage features are averaged over this grid of cells and flattened.
        head: projection head, ``linear`` or ``mlp``.
        dropout_path_rate: stochastic depth.
        use_checkpoint: gradient checkpointing (less memory, slower).

    Every input side must be a multiple of 32 (``size_divisor``).
    """

    size_divisor = 32

    def __init__(
        self,
        in_channels: int = 4,
        embed_dim: int = 128,
        feature_size: int = 12,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        pool_grid: Sequence[int] = (2, 2, 2),
        head: Literal["linear", "mlp"] = "mlp",
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        net = SwinUNETR(
            in_channels=in_channels,
            out_channels=1,
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            dropout_path_rate=dropout_path_rate,
            use_checkpoint=use_checkpoint,
        )
        self.swinViT = net.swinViT  # the decoder of `net` is dropped
        self.pool_grid = tuple(pool_grid)
        self.head = ProjectionHead(16 * feature_size * _cells(self.pool_grid), embed_dim, head)
        self.embed_dim = embed_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, X, Y, Z] -> [B, embed_dim] (not normalised)."""
        features = self.swinViT(image, normalize=True)[-1]  # [B, 16*feature_size, X/32, Y/32, Z/32]
        return self.head(_grid_pool(features, self.pool_grid))  # [B, embed_dim]


class ViTImageEncoder(nn.Module):
    """MONAI's 3-D ``ViT`` (no classification head, so no Tanh) + pooling of patch tokens + projection head.

    Args:
        img_size: the input size [X, Y, Z] the position embeddings are made for (the data's ``image_size``).
        patch_size: patch edge (one int or three); must divide ``img_size``.
        hidden_size, mlp_dim, num_layers, num_heads: transformer width, MLP width, depth and heads.
        in_channels: image channels.
        embed_dim: size of the joint embedding.
        pool_grid: patch tokens, laid back on their grid, are averaged over this grid of cells and flattened.
        head: projection head, ``linear`` or ``mlp``.
        dropout_rate: dropout inside the transformer.
    """

    def __init__(
        self,
        img_size: Sequence[int] = (64, 64, 64),
        patch_size: int | Sequence[int] = 8,
        hidden_size: int = 192,
        mlp_dim: int = 768,
        num_layers: int = 4,
        num_heads: int = 3,
        in_channels: int = 4,
        embed_dim: int = 128,
        pool_grid: Sequence[int] = (2, 2, 2),
        head: Literal["linear", "mlp"] = "mlp",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size, patch = check_img_size(img_size, patch_size, "ViT image encoder")
        self.grid = tuple(s // p for s, p in zip(self.img_size, patch))
        self.vit = ViT(
            in_channels=in_channels,
            img_size=self.img_size,
            patch_size=patch,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            classification=False,
            dropout_rate=dropout_rate,
            qkv_bias=True,
        )
        for block in self.vit.blocks:  # MONAI builds a LayerNorm for cross-attention it never uses: frozen, DDP
            if not block.with_cross_attention:  # would otherwise stop on parameters without gradients
                block.norm_cross_attn.requires_grad_(False)
        self.pool_grid = tuple(pool_grid)
        self.head = ProjectionHead(hidden_size * _cells(self.pool_grid), embed_dim, head)
        self.embed_dim = embed_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, *img_size] -> [B, embed_dim] (not normalised)."""
        check_input_size(image, self.img_size, type(self).__name__)
        tokens, _ = self.vit(image)  # [B, N, hidden], N = prod(grid)
        features = tokens.transpose(1, 2).reshape(len(tokens), -1, *self.grid)  # [B, hidden, gx, gy, gz]
        return self.head(_grid_pool(features, self.pool_grid))  # [B, embed_dim]


def _cells(grid: Sequence[int]) -> int:
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"pool_grid must be 3 positive sizes, got {tuple(grid)}")
    return int(grid[0] * grid[1] * grid[2])


def build_image_encoder(kind: Literal["swin", "vit"] = "swin", **kwargs) -> nn.Module:
    """``SwinImageEncoder(**kwargs)`` or ``ViTImageEncoder(**kwargs)`` by name."""
    encoders = {"swin": SwinImageEncoder, "vit": ViTImageEncoder}
    if kind not in encoders:
        raise ValueError(f"image encoder must be one of {sorted(encoders)}, got {kind!r}")
    return encoders[kind](**kwargs)
