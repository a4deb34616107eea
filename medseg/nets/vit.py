"""ViT classifier: MONAI's ViT returning raw logits, ready for cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import ViT


class ViTClassifier(ViT):
    """``monai.networks.nets.ViT(classification=True, post_activation=None)`` returning logits only.

    MONAI's ViT returns a tuple ``(logits, hidden_states)`` and, unless told otherwise, squashes the
    logits with Tanh into [-1, 1], which caps the softmax of cross-entropy far below 1. Here the head
    is a plain linear layer on the class token and ``forward`` returns its output alone. The
    state_dict is MONAI's own (``ViT(..., classification=True, post_activation=None)``).
    """

    def __init__(
        self,
        in_channels: int,
        img_size: tuple[int, int, int],
        patch_size: tuple[int, int, int] = (16, 16, 16),
        num_classes: int = 2,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        proj_type: str = "conv",
        pos_embed_type: str = "learnable",
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
    ) -> None:
        """
        Args:
            in_channels: input channels (4 MRI contrasts).
            img_size: the one input size [X, Y, Z] it takes (the data module's ``img_size``).
            patch_size: patch size [X, Y, Z]; each side divides ``img_size``.
            num_classes: number of classes (logits per volume).
            hidden_size: transformer width; a multiple of ``num_heads``.
            mlp_dim: width of each transformer block's MLP.
            num_layers: transformer blocks.
            num_heads: attention heads.
            proj_type: patch embedding, ``conv`` or ``perceptron``.
            pos_embed_type: ``learnable``, ``sincos`` or ``none``.
            dropout_rate: dropout in the transformer.
            qkv_bias: bias in the attention's query/key/value projection.
        """
        size, patch = check_img_size(img_size, patch_size, "ViT")
        super().__init__(
            in_channels=in_channels,
            img_size=size,
            patch_size=patch,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type=proj_type,
            pos_embed_type=pos_embed_type,
            classification=True,
            num_classes=num_classes,
            dropout_rate=dropout_rate,
            spatial_dims=3,
            post_activation=None,
            qkv_bias=qkv_bias,
        )
        self.img_size = size
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *img_size] -> logits [B, num_classes] (no activation)."""
        check_input_size(x, self.img_size, type(self).__name__)
        logits, _hidden_states = super().forward(x)  # [B, num_classes], list of [B, 1 + n_patches, hidden]
        return logits


def check_img_size(
    img_size: Sequence[int], patch_size: int | Sequence[int], name: str
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(img_size, patch_size)`` as three ints each, or a ``ValueError`` naming both when a patch side does
    not divide the image side (networks with a position embedding per patch: ViT, UNETR)."""
    size = tuple(int(s) for s in img_size)
    patch = (int(patch_size),) * 3 if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
    if len(size) != 3 or len(patch) != 3 or any(s <= 0 or p <= 0 or s % p for s, p in zip(size, patch)):
        step = patch[0] if len(set(patch)) == 1 else patch
        raise ValueError(
            f"{name} img_size {tuple(img_size)}: expected 3 sides, each a multiple of {step} "
            f"(patch_size {tuple(patch)} must divide every side)"
        )
    return size, patch


def check_input_size(x: torch.Tensor, img_size: Sequence[int], name: str) -> None:
    """A ``ValueError`` naming both sizes when ``x`` [B, C, X, Y, Z] is not ``img_size`` spatially."""
    if tuple(x.shape[2:]) != tuple(img_size):
        raise ValueError(
            f"{name} was built for img_size {tuple(img_size)} but got an input of {tuple(x.shape[2:])} "
            f"(batch {tuple(x.shape)}); the window or volume size the data module and the module feed it "
            f"(roi_size, img_size, image_size) must equal the network's img_size"
        )
