"""Views for self-supervised pre-training (Tang et al., CVPR 2022): two masked, rotated copies of a random crop.

A case dict with ``image`` (no label needed) goes in; out come, for ``v`` in 1 and 2:

- ``target_v``: float32 [C, *roi_size], the crop turned by ``rotation_v`` quarter turns in the axial (X-Y)
  plane, what the reconstruction must restore;
- ``view_v``: ``target_v`` with random cubes filled with uniform noise over the crop's intensity range
  (MONAI's ``RandCoarseDropout``), what the network sees;
- ``rotation_v``: int, 0-3.

The two views share the crop and differ in rotation and masking: what the contrastive part pulls together.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CopyItemsd,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    RandCoarseDropoutd,
    Randomizable,
    RandSpatialCropd,
    SpatialPadd,
    Transform,
)

from medseg.data.transforms import preprocessing
from medseg.tasks import Task


class RandAxialRotate90(Randomizable, Transform):
    """Turn an image [C, X, Y, Z] by a random number of quarter turns (0-3, kept as ``k``) in the X-Y plane."""

    def __init__(self) -> None:
        self.k = 0

    def randomize(self, data=None) -> None:
        self.k = int(self.R.randint(4))

    def __call__(self, image: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        return torch.rot90(torch.as_tensor(image), self.k, dims=(1, 2))  # X, Y: a square roi keeps its shape


class RandAxialRotate90d(Randomizable, MapTransform):
    """Dictionary twin of :class:`RandAxialRotate90`: every key turned alike, the quarter turns in ``label_key``."""

    def __init__(self, keys, label_key: str, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.rotate = RandAxialRotate90()

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.rotate.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        self.rotate.randomize()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.rotate(d[key], randomize=False)
        d[self.label_key] = self.rotate.k
        return d


def pretext_transforms(
    task: Task,
    roi_size: Sequence[int],
    pixdim: Sequence[float] | None = None,
    mask_holes: Sequence[int] = (8, 24),
    mask_size: Sequence[int] = (8, 20),
) -> Compose:
    """Preprocessing (``medseg.data.transforms.preprocessing`` without label), a random ``roi_size`` crop of the
    foreground box (padded where smaller), then the two views (module docstring): each masked with
    ``mask_holes[0]`` to ``mask_holes[1]`` cubes of ``mask_size[0]`` to ``mask_size[1]`` voxels a side."""
    roi = tuple(int(s) for s in roi_size)
    if roi[0] != roi[1]:
        raise ValueError(f"roi_size {list(roi)}: X and Y must be equal, the views are turned in the X-Y plane")
    mask = {
        "holes": int(mask_holes[0]),
        "max_holes": int(mask_holes[1]),
        "spatial_size": int(mask_size[0]),
        "max_spatial_size": int(mask_size[1]),
    }
    return Compose(
        [
            *preprocessing(task, pixdim, with_label=False),
            SpatialPadd(keys="image", spatial_size=roi),
            RandSpatialCropd(keys="image", roi_size=roi, random_size=False),
            EnsureTyped(keys="image", track_meta=False),
            CopyItemsd(keys="image", times=2, names=["target_1", "target_2"]),
            RandAxialRotate90d(keys="target_1", label_key="rotation_1"),
            RandAxialRotate90d(keys="target_2", label_key="rotation_2"),
            CopyItemsd(keys=["target_1", "target_2"], times=1, names=["view_1", "view_2"]),
            RandCoarseDropoutd(keys="view_1", prob=1.0, **mask),  # one transform per view: independent draws
            RandCoarseDropoutd(keys="view_2", prob=1.0, **mask),
            DeleteItemsd(keys="image"),
        ]
    )
