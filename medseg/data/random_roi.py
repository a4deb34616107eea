"""Training crops of a random size per batch (``data.random_roi: [min, max]``, off by default).

A network that takes any size (Swin UNETR: multiples of 32) can be run at inference on windows larger than
its training crop, up to the whole cropped volume in one pass (``medseg predict --window auto`` or
``plan``); its instance norms then see another extent than in training. Training on crops whose sides are
drawn per batch from the multiples of 32 in ``[min, max]`` (each axis on its own; a crop larger than a
case's volume is zero-padded, as a window larger than the volume is at inference) puts those windows in
the training distribution. Validation and prediction are unchanged (windows of ``roi_size``).

The draw is a function of ``(seed, step)``: every item of a batch shares the batch's size, and a resumed
fit draws what an uninterrupted one would (:class:`medseg.data.base.StepSeededSampler`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
from monai.data import CacheDataset
from monai.transforms import Compose
from torch.utils.data import Dataset as TorchDataset

ROI_MULTIPLE = 32  # Swin UNETR's size divisor (patch 2, five stages of 2x downsampling)
MIN_TRAINING_SIDE = 64  # at 32 its deepest stage is 1x1x1 and instance norm refuses it in training


def roi_sides(random_roi: Sequence[int], multiple: int = ROI_MULTIPLE) -> tuple[int, ...]:
    """The sides a crop may take: the multiples of ``multiple`` in ``[min, max]``; a ``ValueError`` naming
    ``data.random_roi`` for a range that holds none or starts below ``MIN_TRAINING_SIDE``."""
    if len(random_roi) != 2 or int(random_roi[0]) > int(random_roi[1]):
        raise ValueError(f"data.random_roi must be [min, max] with min <= max, got {list(random_roi)}")
    low, high = int(random_roi[0]), int(random_roi[1])
    if low < MIN_TRAINING_SIDE:
        raise ValueError(
            f"data.random_roi {[low, high]}: the smallest side must be at least {MIN_TRAINING_SIDE} "
            "(Swin UNETR's deepest stage is 1x1x1 at 32, which instance norm refuses in training)"
        )
    sides = tuple(range(-(-low // multiple) * multiple, high + 1, multiple))
    if not sides:
        raise ValueError(f"data.random_roi {[low, high]} holds no multiple of {multiple}")
    return sides


def draw_roi(seed: int, step: int, sides: Sequence[int]) -> tuple[int, int, int]:
    """The crop size of training step ``step``: one of ``sides`` per axis, drawn from ``(seed, step)`` alone."""
    rng = np.random.default_rng([int(seed), int(step)])
    return tuple(int(s) for s in rng.choice(np.asarray(sides), size=3))


class RandomRoiDataset(TorchDataset):
    """The training stream with a crop size per batch.

    Item ``(index, c)`` of :class:`medseg.data.base.StepSeededSampler` (``c = step x batch_size +
    position``): case ``index`` from ``dataset`` (preprocessed, cached as ``data.cache`` says), then the
    crop and augmentation ``tail(roi)`` builds for the roi :func:`draw_roi` gives step ``c // batch_size``,
    reseeded from ``(seed, c)`` as :class:`medseg.data.base.StepSeededDataset` reseeds.

    Returns ``{"image": [C, *roi], "label": [R or 1, *roi]}``: every item of a batch has the same roi.
    """

    def __init__(
        self,
        dataset,
        tail: Callable[[tuple[int, int, int]], Compose],
        sides: Sequence[int],
        seed: int,
        batch_size: int,
    ) -> None:
        self.dataset, self.tail, self.sides = dataset, tail, tuple(sides)
        self.seed, self.batch_size = seed, batch_size
        self.tails: dict[tuple[int, int, int], Compose] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def roi(self, counter: int) -> tuple[int, int, int]:
        """The crop size of the batch that holds item ``counter``."""
        return draw_roi(self.seed, counter // self.batch_size, self.sides)

    def __getitem__(self, key: tuple[int, int]):
        index, counter = key
        roi = self.roi(counter)
        if roi not in self.tails:
            self.tails[roi] = self.tail(roi)
        transform = self.tails[roi]
        transform.set_random_state(seed=(self.seed * 1_000_003 + counter) % 2**32)
        data = self.dataset[index]
        if isinstance(self.dataset, CacheDataset):  # it hands out the cached item itself
            data = copy.deepcopy(data)
        return transform(data)
