"""Swin UNETR's encoder with the heads of its self-supervised pre-training (Tang et al., CVPR 2022).

``SwinPretrainNet(image)`` returns a dict (the pretext tasks of :mod:`medseg.losses.ssl`):

- ``rotation`` [B, 4]: logits of the quarter turn the input was rotated by;
- ``contrastive`` [B, contrastive_dim]: an embedding two views of one crop should share;
- ``reconstruction`` [B, C, X, Y, Z]: the input with its masked cubes filled back in.

Rotation and contrastive heads read the deepest stage's features averaged over the volume; the
reconstruction head is the authors' upsampling decoder from the deepest stage alone (five convolution +
instance norm + LeakyReLU + 2x upsampling steps), so what it restores must pass through the whole encoder.
The encoder is ``swinViT``, with MONAI's keys: a checkpoint's ``net.swinViT.*`` tensors start
``medseg.nets.SwinUNETR``'s encoder (``model.pretrained``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.nets.fast_swin import accelerate
from medseg.nets.swin_unetr import SwinUNETR


def reconstruction_decoder(dim: int, out_channels: int, steps: int = 5) -> nn.Sequential:
    """[B, dim, x, y, z] -> [B, out_channels, 2^steps x, ...]: ``steps`` times conv 3^3 + instance norm +
    LeakyReLU + 2x trilinear upsampling, halving the channels (down to dim / 16), then a 1^3 convolution."""
    layers, channels = [], dim
    for step in range(steps):
        out = max(dim // 2 ** (step + 1), dim // 16)
        layers += [
            nn.Conv3d(channels, out, kernel_size=3, padding=1),
            nn.InstanceNorm3d(out),
            nn.LeakyReLU(),
            nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
        ]
        channels = out
    return nn.Sequential(*layers, nn.Conv3d(channels, out_channels, kernel_size=1))


class SwinPretrainNet(nn.Module):
    """Swin UNETR's Swin transformer (``swinViT``) with rotation, contrastive and reconstruction heads.

    Args:
        in_channels: image channels (1 for CT, 4 for BraTS MR): the fine-tuned network's.
        feature_size: Swin UNETR's feature size (the fine-tuned network's); the deepest stage has 16 x as many.
        depths, num_heads, window_size: Swin UNETR's stage depths, heads per stage and attention window.
        contrastive_dim: size of the contrastive embedding.
        dropout_path_rate: stochastic depth.
        use_checkpoint: gradient checkpointing (less memory, slower).
        fast: the fast kernels of ``medseg.nets.fast_swin`` (same parameters and outputs).

    Every input side must be a multiple of 32 (``size_divisor``), and 64 or more while training (instance
    norm needs more than one voxel at the deepest stage).
    """

    size_divisor = 32

    def __init__(
        self,
        in_channels: int = 1,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        contrastive_dim: int = 512,
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        fast: bool = True,
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
            fast=fast,
        )
        self.swinViT = net.swinViT  # the segmentation decoder of `net` is dropped
        self.in_channels = in_channels
        dim = 16 * feature_size
        self.rotation_head = nn.Linear(dim, 4)
        self.contrastive_head = nn.Linear(dim, contrastive_dim)
        self.conv = reconstruction_decoder(dim, in_channels)
        if fast:
            accelerate(self.conv)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image [B, C, X, Y, Z] -> ``rotation`` [B, 4], ``contrastive`` [B, D], ``reconstruction`` [B, C, X, Y, Z]."""
        deepest = self.swinViT(image.contiguous(), normalize=True)[-1]  # [B, 16F, X/32, Y/32, Z/32]
        pooled = deepest.mean((2, 3, 4))  # [B, 16F]
        return {
            "rotation": self.rotation_head(pooled),  # [B, 4]
            "contrastive": self.contrastive_head(pooled),  # [B, D]
            "reconstruction": self.conv(deepest),  # [B, C, X, Y, Z]
        }
