"""Lesion-wise Dice and HD95 (medseg.metrics.lesion) against panoptica called directly, an independent
brute-force implementation and hand-computed cases; ``medseg evaluate --lesion-wise`` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import save as save_nifti
from scipy import ndimage
from scipy.spatial.distance import cdist

from medseg.cli import main as medseg_main
from medseg.metrics.lesion import LESION_HD95_PENALTY_MM, lesion_metrics, lesion_scores
from medseg.metrics.segmentation import hd95
from medseg.tasks import get_task

PENALTY = LESION_HD95_PENALTY_MM
SHAPE = (26, 22, 16)


def box(mask: np.ndarray, lo: tuple[int, ...], hi: tuple[int, ...], value: int = 1) -> np.ndarray:
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    return mask


def pooled_hd95(pred: np.ndarray, label: np.ndarray, spacing) -> float:
    """Brute force: surface voxels by 6-connected erosion, all pairwise distances in mm, the 95th percentile of
    both directed sets pooled (panoptica's definition)."""
    surface = [np.argwhere(m & ~ndimage.binary_erosion(m)) * np.asarray(spacing) for m in (pred, label)]
    distances = cdist(surface[0], surface[1])  # [n_pred_surface, n_label_surface] mm
    return float(np.percentile(np.hstack((distances.min(1), distances.min(0))), 95))


def brute_force(pred: np.ndarray, label: np.ndarray, spacing=(1.0, 1.0, 1.0), min_volume: float = 0.0):
    """Independent lesion-wise scores and the matched pairs: scipy 26-connected components, all-pairs IoU,
    greedy one-to-one matching at IoU >= 0.5, BraTS aggregation."""
    ref_cc, n_ref = ndimage.label(label, np.ones((3, 3, 3)))
    pred_cc, n_pred = ndimage.label(pred, np.ones((3, 3, 3)))
    candidates = []
    for r in range(1, n_ref + 1):
        for p in range(1, n_pred + 1):
            inter = np.sum((ref_cc == r) & (pred_cc == p))
            if inter:
                candidates.append((inter / np.sum((ref_cc == r) | (pred_cc == p)), r, p))
    pairs: dict[int, int] = {}
    for iou, r, p in sorted(candidates, reverse=True):
        if iou >= 0.5 and r not in pairs and p not in pairs.values():
            pairs[r] = p
    dice, hd, tp, fn = 0.0, 0.0, 0, 0
    for r in range(1, n_ref + 1):
        if np.sum(ref_cc == r) * np.prod(spacing) <= min_volume:
            continue
        if r not in pairs:
            fn, hd = fn + 1, hd + PENALTY
            continue
        ref_m, pred_m = ref_cc == r, pred_cc == pairs[r]
        tp, dice = tp + 1, dice + 2 * np.sum(ref_m & pred_m) / (ref_m.sum() + pred_m.sum())
        hd += pooled_hd95(pred_m, ref_m, spacing)
    fp = n_pred - len(pairs)
    n = tp + fn + fp
    scores = {"dice": dice / n if n else 1.0, "hd95": (hd + PENALTY * fp) / n if n else 0.0}
    return {**scores, "tp": tp, "fn": fn, "fp": fp}, pairs, (ref_cc, pred_cc)


def several_lesions() -> tuple[np.ndarray, np.ndarray]:
    """Four truth lesions and a prediction that shifts one, grows one, misses one and splits one, plus specks.

    A 5x5x5 shifted by 1 along x (IoU 4/6): TP. B 4x4x3 grown by one slice (IoU 3/4): TP. C 3x3x3: missed.
    D 6x3x3 predicted as 4 slices + gap + 1 slice: the 4 slices match (IoU 4/6), the 1 slice is an FP.
    Specks: one voxel, and a 2-voxel rod on the border: FPs. Truth 4 lesions, TP 3, FN 1, FP 3.
    """
    label, pred = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    box(label, (2, 2, 2), (7, 7, 7)), box(pred, (3, 2, 2), (8, 7, 7))
    box(label, (12, 3, 2), (16, 7, 5)), box(pred, (12, 3, 2), (16, 7, 6))
    box(label, (3, 13, 10), (6, 16, 13))
    box(label, (14, 12, 8), (20, 15, 11)), box(pred, (14, 12, 8), (18, 15, 11)), box(pred, (19, 12, 8), (20, 15, 11))
    pred[23, 19, 14] = True
    box(pred, (0, 20, 0), (2, 21, 1))
    return pred, label


def panoptica_direct(pred: np.ndarray, label: np.ndarray, spacing, pairs, ccs) -> dict:
    """panoptica with its shipped BraTS configuration for the counts and the per-lesion Dice, and its HD95
    metric per matched pair (that configuration computes no HD95), aggregated the BraTS way."""
    from panoptica import Metric, MetricMode, Panoptica_Evaluator
    from panoptica.utils.filepath import config_by_name

    evaluator = Panoptica_Evaluator.load_from_config(config_by_name("panoptica_evaluator_BRATS"))
    results = evaluator.evaluate(pred.astype(np.uint8), label.astype(np.uint8), voxelspacing=spacing, log_times=False)
    (result,) = results.values()
    ref_cc, pred_cc = ccs
    hd = [Metric.HD95(ref_cc, pred_cc, r, p, voxelspacing=spacing) for r, p in pairs.items()]
    n = result.tp + result.fn + result.fp
    dice = float(np.sum(result.get_list_metric(Metric.DSC, MetricMode.ALL)))
    scores = {"dice": dice / n, "hd95": (sum(hd) + PENALTY * (result.fn + result.fp)) / n}
    return {**scores, "tp": result.tp, "fn": result.fn, "fp": result.fp}


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.3, 2.5)])
def test_several_lesions_match_panoptica_and_brute_force(spacing):
    pred, label = several_lesions()
    got = lesion_scores(pred, label, spacing)
    expected, pairs, ccs = brute_force(pred, label, spacing)
    direct = panoptica_direct(pred, label, spacing, pairs, ccs)
    assert (got["tp"], got["fn"], got["fp"]) == (3, 1, 3)
    for reference in (expected, direct):
        assert (got["tp"], got["fn"], got["fp"]) == (reference["tp"], reference["fn"], reference["fp"])
        assert got["dice"] == pytest.approx(reference["dice"], abs=1e-4)
        assert got["hd95"] == pytest.approx(reference["hd95"], abs=1e-4)
    # hand: Dice of A 2*100/250, B 2*48/112, D 2*36/(54+36); over 3 TP + 1 FN + 3 FP
    assert got["dice"] == pytest.approx((200 / 250 + 96 / 112 + 72 / 90) / 7)


def test_one_found_one_missed_one_speck():
    """2 truth lesions, one predicted perfectly, one missed, one false-positive speck: Dice 1/3."""
    label, pred = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    box(label, (2, 2, 2), (6, 6, 6)), box(pred, (2, 2, 2), (6, 6, 6))
    box(label, (12, 12, 8), (16, 16, 12))
    pred[22, 3, 14] = True
    got = lesion_scores(pred, label, spacing=(1.0, 1.0, 2.0))
    assert got == {"dice": pytest.approx(1 / 3), "hd95": pytest.approx(2 * PENALTY / 3), "tp": 1, "fn": 1, "fp": 1}


def test_split_lesion_is_missed_and_two_false_positives():
    """A 9-slice lesion predicted as 4 + gap + 4 slices: each half has IoU 4/9 < 0.5, so no match (the BraTS
    2023 script, which matches any overlap, would merge them: see medseg.metrics.lesion)."""
    label, pred = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    box(label, (2, 2, 2), (11, 6, 6))
    box(pred, (2, 2, 2), (6, 6, 6)), box(pred, (7, 2, 2), (11, 6, 6))
    assert lesion_scores(pred, label) == {"dice": 0.0, "hd95": PENALTY, "tp": 0, "fn": 1, "fp": 2}


def test_empty_masks():
    empty, lesion = np.zeros(SHAPE, bool), box(np.zeros(SHAPE, bool), (2, 2, 2), (5, 5, 5))
    assert lesion_scores(empty, empty) == {"dice": 1.0, "hd95": 0.0, "tp": 0, "fn": 0, "fp": 0}
    assert lesion_scores(lesion, empty) == {"dice": 0.0, "hd95": PENALTY, "tp": 0, "fn": 0, "fp": 1}
    assert lesion_scores(empty, lesion) == {"dice": 0.0, "hd95": PENALTY, "tp": 0, "fn": 1, "fp": 0}
    assert lesion_scores(empty, lesion, with_hd95=False) == {"dice": 0.0, "tp": 0, "fn": 1, "fp": 0}


def test_small_truth_lesions_left_out_by_volume_in_mm3():
    """Two 8-voxel truth lesions, one found and one missed, beside a perfect big one. At 1 mm they are 8 mm3
    <= 10: neither counts (the found one's prediction is no FP either); at 2 mm they are 64 mm3 and count."""
    label, pred = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    box(label, (2, 2, 2), (8, 8, 8)), box(pred, (2, 2, 2), (8, 8, 8))
    box(label, (12, 2, 2), (14, 4, 4)), box(pred, (12, 2, 2), (14, 4, 4))
    box(label, (12, 12, 2), (14, 14, 4))
    small = lesion_scores(pred, label, min_lesion_volume_mm3=10)
    assert small == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fn": 0, "fp": 0}
    counted = lesion_scores(pred, label, spacing=(2.0, 2.0, 2.0), min_lesion_volume_mm3=10)
    assert (counted["dice"], counted["tp"], counted["fn"], counted["fp"]) == (pytest.approx(2 / 3), 2, 1, 0)
    expected, _, _ = brute_force(pred, label, (2.0, 2.0, 2.0), min_volume=10)
    assert counted["hd95"] == pytest.approx(expected["hd95"], abs=1e-4)


def test_lesion_hd95_pools_both_directions_unlike_voxelwise_hd95():
    """One lesion with a long spur: medseg's voxel-wise HD95 (MONAI, max of the directed P95s) and the lesion
    HD95 (panoptica, P95 of both directions pooled) differ, each matching its brute force."""
    label, pred = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    box(label, (4, 4, 4), (12, 12, 12)), box(pred, (4, 4, 4), (12, 12, 12)), box(pred, (12, 7, 7), (20, 9, 9))
    spacing = (1.0, 1.2, 1.5)
    lesion = lesion_scores(pred, label, spacing)["hd95"]
    voxelwise = hd95(torch.from_numpy(pred)[None, None], torch.from_numpy(label)[None, None], spacing).item()
    assert lesion == pytest.approx(pooled_hd95(pred, label, spacing), abs=1e-4)
    assert lesion < voxelwise - 0.5


def test_lesion_metrics_keys_and_means():
    pred, label = several_lesions()
    empty = np.zeros(SHAPE, bool)
    out = lesion_metrics(
        np.stack([pred, empty]), torch.from_numpy(np.stack([label, empty])), names=["liver", "left kidney"]
    )
    first = lesion_scores(pred, label)
    assert list(out) == [
        *("lesion_dice_liver", "lesion_dice_left_kidney", "lesion_dice_mean"),
        *("lesion_hd95_liver", "lesion_hd95_left_kidney", "lesion_hd95_mean"),
        *("lesions_tp_liver", "lesions_tp_left_kidney", "lesions_fn_liver", "lesions_fn_left_kidney"),
        *("lesions_fp_liver", "lesions_fp_left_kidney"),
    ]
    assert out["lesion_dice_mean"] == pytest.approx((first["dice"] + 1.0) / 2)
    assert out["lesion_hd95_mean"] == pytest.approx(first["hd95"] / 2)
    assert (out["lesions_fp_liver"], out["lesions_fp_left_kidney"]) == (3, 0)
    with pytest.raises(ValueError, match="expected masks"):
        lesion_metrics(pred[None], label[None], names=["a", "b"])


def brats2023_case(found_second: bool) -> tuple[np.ndarray, np.ndarray]:
    """Label: lesion 1 an enhancing 2x2x2 core (3) in a 4x4x4 edema block (2); lesion 2 a 3x3x3 edema block.
    Prediction: lesion 1 exact; lesion 2 exact or missed (then an edema speck elsewhere: a false positive)."""
    label = np.zeros((16, 12, 10), np.uint8)
    box(label, (1, 1, 1), (5, 5, 5), 2), box(label, (2, 2, 2), (4, 4, 4), 3), box(label, (9, 6, 5), (12, 9, 8), 2)
    pred = label.copy()
    if not found_second:
        pred[9:12, 6:9, 5:8] = 0
        pred[14, 10, 8] = 2
    return pred, label


def test_cli_lesion_wise_end_to_end(tmp_path, capsys):
    for case, found in (("case_a", False), ("case_b", True)):
        pred, label = brats2023_case(found)
        save_nifti(tmp_path / "labels" / f"{case}.nii.gz", label, np.diag([1.0, 1.0, 1.5, 1.0]))
        save_nifti(tmp_path / "preds" / f"{case}.nii.gz", pred, np.diag([1.0, 1.0, 1.5, 1.0]))
    base = ["evaluate", "--pred", str(tmp_path / "preds"), "--label", str(tmp_path / "labels"), "--convention"]
    assert medseg_main([*base, "brats2023", "--lesion-wise"]) == 0
    out = capsys.readouterr().out
    assert "lesion Dice mean ± std" in out and "lesion HD95 (mm) mean ± std" in out
    assert "lesions found/missed/false positive over 2 cases: TC 2/0/0, WT 3/1/1, ET 2/0/0" in out
    with open(tmp_path / "preds" / "metrics_per_case.csv") as f:
        rows = {row["case_id"]: row for row in csv.DictReader(f)}
    columns = list(rows["case_a"])
    assert columns[columns.index("hd95_mean") + 1 :][:4] == [
        "lesion_dice_tc",
        "lesion_dice_wt",
        "lesion_dice_et",
        "lesion_dice_mean",
    ]
    a, b = rows["case_a"], rows["case_b"]
    assert float(a["lesion_dice_wt"]) == pytest.approx(1 / 3, abs=1e-5)
    assert float(a["lesion_hd95_wt"]) == pytest.approx(2 * PENALTY / 3, abs=1e-3)
    assert (a["lesions_tp_wt"], a["lesions_fn_wt"], a["lesions_fp_wt"]) == ("1", "1", "1")
    assert float(a["lesion_dice_tc"]) == float(b["lesion_dice_wt"]) == 1.0
    task = get_task("brats2023")
    masks = [task.to_masks(torch.from_numpy(m.astype(np.int64))) for m in brats2023_case(False)]  # pred, label
    direct = lesion_metrics(*masks, (1.0, 1.0, 1.5), task.outputs)
    for key, value in direct.items():
        assert float(a[key]) == pytest.approx(value, rel=1e-5, abs=1e-6)  # the CSV keeps 6 digits
    summary = json.loads((tmp_path / "preds" / "metrics_summary.json").read_text(encoding="utf-8"))
    assert summary["lesion_dice_wt"]["mean"] == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)
    assert summary["lesion_wise"]["library"].startswith("panoptica ")

    assert medseg_main(base + ["brats2023"]) == 0  # without the flag: no lesion columns, no lesion summary
    out = capsys.readouterr().out
    assert "lesion Dice" not in out and "lesions found" not in out
    assert "lesion" not in (tmp_path / "preds" / "metrics_per_case.csv").read_text(encoding="utf-8")
    assert "lesion" not in (tmp_path / "preds" / "metrics_summary.json").read_text(encoding="utf-8")
    with pytest.raises(SystemExit):
        medseg_main([*base, "brats2023", "--min-lesion-volume", "50"])
