"""Swin UNETR: MONAI's network, with the input-size rule stated and the fast kernels of ``fast_swin``."""

from __future__ import annotations

from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

from medseg.nets.fast_swin import accelerate


class SwinUNETR(MonaiSwinUNETR):
    """``monai.networks.nets.SwinUNETR`` with a ``size_divisor`` the segmentation module checks its roi against.

    Patch size 2 and five stages of 2x downsampling: every input side must be a multiple of 32. The
    state_dict is MONAI's own, so weights load in both directions.

    Args:
        fast: compute MONAI's modules faster (``medseg.nets.fast_swin``: fused window attention, the
            shifted-window mask built once, oneDNN for every CPU convolution, a cheaper 2x upsampling
            and instance norm). Same parameters, same outputs within float32 rounding;
            ``fast=False`` is MONAI's code path exactly.
        **kwargs: MONAI's ``SwinUNETR`` arguments (``in_channels``, ``out_channels``,
            ``feature_size``, ``use_checkpoint``, ...).
    """

    size_divisor = 32

    def __init__(self, *args, fast: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if fast:
            accelerate(self)

    def inference_bytes(self, voxels: int) -> int:
        """Peak memory of one float32 inference forward over ``voxels`` input voxels, with a margin.

        Measured on CPU (fast path, inference_mode, 64^3 to 128^3 inputs): about 1,750 bytes per voxel
        at feature_size 48 and 750-940 at 12 (docs/benchmarks.md); this returns 30 per feature + 550,
        10-15 % above both.
        """
        return int(voxels * (30 * self.swinViT.embed_dim + 550))  # embed_dim is feature_size
