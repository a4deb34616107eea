"""Swin UNETR: MONAI's network, with the input-size rule stated, the fast kernels of ``fast_swin`` and
optional deep-supervision heads."""

from __future__ import annotations

import torch
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
from torch import nn

from medseg.nets.fast_swin import accelerate


class SwinUNETR(MonaiSwinUNETR):
    """``monai.networks.nets.SwinUNETR`` with a ``size_divisor`` the segmentation module checks its roi against.

    Patch size 2 and five stages of 2x downsampling: every input side must be a multiple of 32. The
    state_dict is MONAI's own, so weights load in both directions (with ``deep_supervision``, its heads
    are the extra keys ``ds_heads.*``).

    Args:
        fast: compute MONAI's modules faster (``medseg.nets.fast_swin``: fused window attention, the
            shifted-window mask built once, oneDNN for every CPU convolution, a cheaper 2x upsampling
            and instance norm). Same parameters, same outputs within float32 rounding;
            ``fast=False`` is MONAI's code path exactly.
        deep_supervision: extra 1x1x1 output heads on the decoder at 1/2, 1/4 and 1/8 resolution (0-3),
            as nnU-Net trains: :meth:`forward_deep` returns their logits for the loss
            (``medseg.losses.deep_supervision``). ``forward`` (inference, export) is MONAI's either way.
        **kwargs: MONAI's ``SwinUNETR`` arguments (``in_channels``, ``out_channels``,
            ``feature_size``, ``use_checkpoint``, ...).
    """

    size_divisor = 32

    def __init__(self, *args, fast: bool = True, deep_supervision: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0 <= deep_supervision <= 3:
            raise ValueError(f"deep_supervision must be 0 to 3 (heads at 1/2, 1/4, 1/8), got {deep_supervision}")
        self.deep_supervision = deep_supervision
        self.out_channels = self.out.conv.conv.out_channels
        width = self.swinViT.embed_dim  # feature_size: the decoder has width * 2**i channels at 1/2**(i+1)
        self.ds_heads = nn.ModuleList(nn.Conv3d(width * 2**i, self.out_channels, 1) for i in range(deep_supervision))
        if fast:
            accelerate(self)

    def forward_deep(self, x_in: torch.Tensor) -> list[torch.Tensor]:
        """x_in [B, C, X, Y, Z] -> logits [B, R, X, Y, Z], then one [B, R, X/2**i, Y/2**i, Z/2**i] per head
        (i = 1 .. ``deep_supervision``). MONAI's ``forward``, keeping the decoder's intermediate outputs."""
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_input_size(x_in.shape[2:])
        hidden = self.swinViT(x_in, self.normalize)
        enc0 = self.encoder1(x_in)
        enc1 = self.encoder2(hidden[0])
        enc2 = self.encoder3(hidden[1])
        enc3 = self.encoder4(hidden[2])
        dec4 = self.encoder10(hidden[4])
        dec3 = self.decoder5(dec4, hidden[3])
        dec2 = self.decoder4(dec3, enc3)  # [B, 4 * width, X/8, ...]
        dec1 = self.decoder3(dec2, enc2)  # [B, 2 * width, X/4, ...]
        dec0 = self.decoder2(dec1, enc1)  # [B, width, X/2, ...]
        logits = self.out(self.decoder1(dec0, enc0))
        return [logits] + [head(dec) for head, dec in zip(self.ds_heads, (dec0, dec1, dec2))]

    def inference_bytes(self, voxels: int) -> int:
        """Peak memory of one float32 inference forward over ``voxels`` input voxels, with a margin.

        Measured on CPU (fast path, inference_mode, 64^3 to 128^3 inputs): about 1,750 bytes per voxel
        at feature_size 48 and 750-940 at 12 (docs/benchmarks.md); this returns 30 per feature + 550,
        10-15 % above both.
        """
        return int(voxels * (30 * self.swinViT.embed_dim + 550))  # embed_dim is feature_size
