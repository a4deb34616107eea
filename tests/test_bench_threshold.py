"""scripts/bench_threshold.py: each region's probability cut, the label map painted and scored as evaluate does."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_script

from medseg.tasks import get_task


def test_scores_cut_each_region_at_its_own_threshold():
    bench = load_script("bench_threshold")
    task = get_task("brats2021")  # outputs TC, WT, ET
    prob = np.zeros((3, 4, 1, 1), np.float32)
    prob[1] = np.array([0.9, 0.6, 0.4, 0.1]).reshape(4, 1, 1)  # WT fades out
    prob[0, 0] = prob[2, 0] = 0.9  # TC = ET = the first voxel
    truth = np.zeros((3, 4, 1, 1), bool)
    truth[1, :3] = True  # WT ends after three voxels
    truth[0, 0] = truth[2, 0] = True
    case = {"prob": prob.astype(np.float16), "truth": truth}

    at_half = bench.scores(task, [case], [0.5, 0.5, 0.5])[0]
    assert at_half == pytest.approx([1.0, 2 * 2 / 5, 1.0])  # WT: 2 of 3 voxels
    assert bench.scores(task, [case], [0.5, 0.3, 0.5])[0] == pytest.approx([1.0, 1.0, 1.0])
    # ET painted inside WT: a WT cut that drops the ET voxel cannot remove it from the label map
    assert bench.scores(task, [case], [0.5, 0.95, 0.5])[0, 1] == pytest.approx(2 * 1 / 4)
