"""Swin UNETR: MONAI's network, with the input-size rule stated where a config can be checked against it."""

from __future__ import annotations

from monai.networks.nets import SwinUNETR as MonaiSwinUNETR


class SwinUNETR(MonaiSwinUNETR):
    """``monai.networks.nets.SwinUNETR`` with a ``size_divisor`` the segmentation module checks its roi against.

    Patch size 2 and five stages of 2x downsampling: every input side must be a multiple of 32. The
    state_dict is MONAI's own, so weights load in both directions.
    """

    size_divisor = 32
