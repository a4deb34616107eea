"""Expected calibration error (ECE) of predicted probabilities against truth masks.

ECE is measured per output (each region, or each foreground class one-vs-rest) on its own probability of
being positive: 15 equal-width bins, ``sum_b n_b / N * |mean probability_b - fraction positive_b|``, over
the voxels the network segmented (the foreground crop; outside it a probability file holds exact zeros).
Used by ``medseg evaluate``, ``calibrate`` and ``cv`` (:mod:`medseg.inference.calibration`) and logged by
the segmentation module's validation and test (``val/ece_<output>``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BINS = 15


def positive_probabilities(probs: np.ndarray, kind: str) -> np.ndarray:
    """[N, ...] each output's probability of being positive: the regions' channels, or the foreground
    classes' (softmax channels 1..K)."""
    return probs[1:] if kind == "classes" else probs


def segmented(probs: np.ndarray) -> np.ndarray:
    """Bool [...]: the voxels the network segmented (any probability above zero)."""
    return np.asarray(probs).sum(0) > 0


def calibration_error(
    probs: np.ndarray, truth: np.ndarray, names: Sequence[str], kind: str, bins: int = BINS
) -> dict[str, float]:
    """``{"ece_<name>": ECE}`` per output (see the module docstring): ``probs`` [N', *spatial] as a
    predictor writes them, ``truth`` bool [N, *spatial] one mask per output; over :func:`segmented` voxels."""
    within = segmented(probs)
    positive = positive_probabilities(np.asarray(probs, np.float64), kind)
    return {f"ece_{name}": ece(positive[i][within], truth[i][within], bins) for i, name in enumerate(names)}


def ece(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """ECE of probabilities ``p`` against 0/1 truth ``y`` (flat arrays of one output): ``bins`` equal-width bins."""
    if p.size == 0:
        return 0.0
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=p, minlength=bins) - np.bincount(which, weights=y, minlength=bins))
    return float(gap.sum() / count.sum())
