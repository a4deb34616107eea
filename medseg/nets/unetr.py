"""UNETR: MONAI's network, with its fixed input size stated where a config can be checked against it."""

from __future__ import annotations

import torch
from monai.networks.nets import UNETR as MonaiUNETR

from medseg.nets.vit import check_img_size, check_input_size


class UNETR(MonaiUNETR):
    """``monai.networks.nets.UNETR`` that takes only inputs of exactly ``img_size``, and says so.

    A ViT encoder (12 layers, patch 16, a learned position embedding per patch) with a convolutional
    decoder: the position embedding fixes the input size, so the segmentation module's ``roi_size``
    (training crop and sliding window) must equal ``img_size``, each side a multiple of 16
    (``size_divisor``; 16 is the smallest that trains). Another size is refused with both sizes named,
    not with a tensor mismatch deep in the encoder. The state_dict is MONAI's own.
    """

    size_divisor = 16

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: tuple[int, int, int],
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        proj_type: str = "conv",
        norm_name: str = "instance",
        conv_block: bool = True,
        res_block: bool = True,
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
    ) -> None:
        """
        Args:
            in_channels: input channels (4 MRI contrasts).
            out_channels: output channels (3 regions TC, WT, ET).
            img_size: the one input size [X, Y, Z] it takes; set the module's and the data's ``roi_size`` to it.
            feature_size: channels of the first decoder stage (doubled at each deeper stage).
            hidden_size: transformer width; a multiple of ``num_heads``.
            mlp_dim: width of each transformer block's MLP.
            num_heads: attention heads.
            proj_type: patch embedding, ``conv`` or ``perceptron``.
            norm_name: normalisation of the decoder blocks (``instance``, ``batch``).
            conv_block: convolutional blocks in the skip connections.
            res_block: residual decoder blocks.
            dropout_rate: dropout in the transformer.
            qkv_bias: bias in the attention's query/key/value projection.
        """
        size, _ = check_img_size(img_size, self.size_divisor, "UNETR")  # MONAI's UNETR: patch 16
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            img_size=size,
            feature_size=feature_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_heads=num_heads,
            proj_type=proj_type,
            norm_name=norm_name,
            conv_block=conv_block,
            res_block=res_block,
            dropout_rate=dropout_rate,
            spatial_dims=3,
            qkv_bias=qkv_bias,
        )
        self.img_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *img_size] -> logits [B, out_channels, *img_size]."""
        check_input_size(x, self.img_size, type(self).__name__)
        return super().forward(x)
