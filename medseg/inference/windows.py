"""Where sliding-window inference puts its windows: the settings ``--window`` takes, and the plans they make.

A window plan is what ``monai.inferers.sliding_window_inference`` will do with a window size and an overlap
on a volume: along each axis ``n`` windows, the first at 0, the next every ``int(side * (1 - overlap))``
voxels, the last moved back to end at the volume's edge (a volume smaller than the window is padded to it,
one window). :func:`monai_plan` states that for any setting; :func:`plan_windows` chooses the window side
and count per axis from the volume itself (``--window plan``):

1. per axis the fewest windows no larger than ``largest`` (the training roi): ``ceil(extent / largest)``;
2. then the smallest side, a multiple of the network's size divisor, with which that many windows cover the
   extent and neighbours overlap by at least ``min_overlap`` voxels;
3. while one window does not fit the memory budget, one more window along the axis of the longest side.

For a BraTS head crop of 146 x 174 x 149 and a 128 roi that is 2 x 2 x 2 windows of 96^3 (7.1 M voxels
through the network) where the roi at overlap 0.5 slides 2 x 2 x 2 windows of 128^3 (16.8 M): each side
just over 128 needs two windows either way, and two of 96 cover it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medseg.errors import MedsegError

MODES = ("roi", "auto", "plan")


@dataclass(frozen=True)
class WindowPlan:
    """Windows over one volume: ``counts[i]`` windows of ``window[i]`` voxels along axis ``i``, placed by
    ``sliding_window_inference`` with ``overlap[i]`` (a per-axis overlap that gives exactly those counts)."""

    window: tuple[int, int, int]
    counts: tuple[int, int, int]
    overlap: tuple[float, float, float]

    @property
    def windows(self) -> int:
        return int(np.prod(self.counts))

    @property
    def voxels(self) -> int:
        """Voxels through the network: windows x voxels per window."""
        return self.windows * int(np.prod(self.window))

    def describe(self) -> str:
        """``8 windows (2 x 2 x 2) of 96 x 96 x 96, 7.1 M voxels``."""
        sides = " x ".join(map(str, self.window))
        grid = " x ".join(map(str, self.counts))
        plural = "s" if self.windows > 1 else ""
        return f"{self.windows} window{plural} ({grid}) of {sides}, {self.voxels / 1e6:.1f} M voxels"


def scan_count(extent: int, side: int, overlap: float) -> int:
    """Windows ``sliding_window_inference`` places along one axis (MONAI's ``_get_scan_interval`` and
    ``dense_patch_slices``): one when the window covers the (padded) extent, else ``ceil((extent - side) /
    interval) + 1`` with ``interval = max(1, int(side * (1 - overlap)))``."""
    if side >= extent:
        return 1
    interval = max(1, int(side * (1 - overlap)))
    return math.ceil((extent - side) / interval) + 1


def monai_plan(shape: Sequence[int], window: Sequence[int], overlap: float | Sequence[float]) -> WindowPlan:
    """The plan ``sliding_window_inference(roi_size=window, overlap=overlap)`` makes over ``shape``."""
    overlaps = tuple(float(o) for o in (overlap if isinstance(overlap, Sequence) else [overlap] * 3))
    counts = tuple(scan_count(int(s), int(w), o) for s, w, o in zip(shape, window, overlaps))
    return WindowPlan(tuple(int(w) for w in window), counts, overlaps)


def _side(extent: int, count: int, divisor: int, min_overlap: int) -> int:
    """The smallest multiple of ``divisor`` with which ``count`` windows cover ``extent`` and neighbours
    share at least ``min_overlap`` voxels."""
    need = extent if count == 1 else (extent + (count - 1) * min_overlap) / count
    return max(divisor, divisor * math.ceil(need / divisor))


def _axis_overlap(extent: int, side: int, count: int) -> float:
    """The overlap with which ``sliding_window_inference`` places exactly ``count`` windows of ``side``:
    an interval of ``ceil((extent - side) / (count - 1))`` voxels, the last window at the edge."""
    if count == 1 or side >= extent:
        return 0.0
    interval = math.ceil((extent - side) / (count - 1))
    return 0.0 if interval >= side else 1.0 - (interval + 0.5) / side  # +0.5: MONAI's int() lands on interval


def plan_windows(
    shape: Sequence[int],
    largest: Sequence[int],
    divisor: int,
    fits: Callable[[int], bool] = lambda voxels: True,
    min_overlap: int = 16,
) -> WindowPlan:
    """Window side and count per axis for a volume of ``shape`` (module docstring).

    Args:
        shape: the preprocessed (cropped) volume [X, Y, Z].
        largest: the largest window side per axis (the training roi, or the largest training crop).
        divisor: every side a multiple of it (``net.size_divisor``: 32 for Swin UNETR).
        fits: whether one window of that many voxels fits memory (``net.inference_bytes`` within a budget).
        min_overlap: voxels neighbouring windows share at least (at most a quarter of the largest side), so
            that no voxel is seen only at a window's edge.

    Returns a :class:`WindowPlan` whose overlaps make ``sliding_window_inference`` place exactly its counts.
    Never smaller than ``divisor`` per side, even when that does not fit.
    """
    shape = [int(s) for s in shape]
    cap = [max(divisor, int(s) // divisor * divisor) for s in largest]
    counts = [max(1, math.ceil(s / c)) for s, c in zip(shape, cap)]
    margins = [min(int(min_overlap), c // 4) for c in cap]  # more windows always bring the side under the cap
    while True:
        window = [_side(s, n, divisor, m) for s, n, m in zip(shape, counts, margins)]
        too_large = [i for i in range(3) if window[i] > cap[i]]
        if too_large:  # the overlap pushed a side past the cap: one window more there
            counts[too_large[0]] += 1
            continue
        if fits(int(np.prod(window))):
            break
        shrinkable = [i for i in range(3) if window[i] > divisor]
        if not shrinkable:
            break
        counts[max(shrinkable, key=lambda i: window[i])] += 1
    overlap = tuple(_axis_overlap(s, w, n) for s, w, n in zip(shape, window, counts))
    return WindowPlan(tuple(window), tuple(counts), overlap)


def check_window(window: str | Sequence[int], net) -> str | tuple[int, int, int]:
    """``"auto"``, ``"plan"``, ``"roi"`` or three window sides a multiple of the network's size divisor.

    ``auto`` needs a network that takes any size and states its memory (``inference_bytes``), ``plan`` one
    that takes any size; otherwise both fall back to ``roi``."""
    any_size = hasattr(net, "size_divisor") and getattr(net, "img_size", None) is None
    if window == "auto":
        return "auto" if any_size and hasattr(net, "inference_bytes") else "roi"
    if window == "plan":
        return "plan" if any_size else "roi"
    if window == "roi":
        return "roi"
    divisor = getattr(net, "size_divisor", 1)
    try:
        sides = tuple(int(s) for s in ([window] if isinstance(window, str) else window))
    except ValueError:
        sides = ()
    if len(sides) != 3 or any(s <= 0 or s % divisor for s in sides) or not any_size:
        shown = window if isinstance(window, str) else " ".join(str(s) for s in window)
        raise MedsegError(
            f"window {shown!r}: use {', '.join(MODES)} or three sides; "
            f"{type(net).__name__} takes windows of three sides, each a multiple of {divisor}"
            + ("" if any_size else " (this network takes only its roi_size: use --window roi)")
        )
    return sides


def largest_window(shape: Sequence[int], divisor: int, fits) -> tuple[int, int, int]:
    """The whole of ``shape`` rounded up to ``divisor`` if ``fits(voxels)``; else shrink its longest side
    by ``divisor`` until it does (never below ``divisor`` per side)."""
    window = [max(divisor, -(-int(s) // divisor) * divisor) for s in shape]
    while not fits(int(np.prod(window))) and max(window) > divisor:
        longest = int(np.argmax(window))
        window[longest] -= divisor
    return tuple(window)


def covers(window: Sequence[int], shape: Sequence[int]) -> bool:
    """Whether one window covers the whole volume."""
    return all(int(w) >= int(s) for w, s in zip(window, shape))


def available_memory(device: torch.device) -> int:
    """Bytes free for inference on ``device``: CUDA's free memory, or the system's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
