"""Dice and HD95 against independent numpy/scipy references on tiny volumes, and the empty-mask rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion, distance_transform_edt
from scipy.spatial.distance import cdist

from medseg.metrics.segmentation import HD95_PENALTY_MM, dice, hd95, metric_keys, region_metrics


def reference_dice(pred: np.ndarray, label: np.ndarray) -> float:
    """Set counts: 2 |P & L| / (|P| + |L|)."""
    return 2 * np.logical_and(pred, label).sum() / (pred.sum() + label.sum())


def reference_hd95(pred: np.ndarray, label: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """Brute force: surface voxels by erosion, all pairwise distances in mm, max of the two directed P95s."""
    surface = [np.argwhere(m & ~binary_erosion(m)) * np.asarray(spacing) for m in (pred, label)]
    distances = cdist(surface[0], surface[1])  # [n_pred_surface, n_label_surface] mm
    return max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95))


def random_masks(seed: int, shape=(9, 10, 7), n=4) -> np.ndarray:
    """n random binary masks [n, *shape] of varying density (blobs touching the border included)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)) < rng.uniform(0.05, 0.6, size=(n, 1, 1, 1))


@pytest.mark.parametrize("seed", range(4))
def test_dice_matches_set_counts(seed):
    pred, label = random_masks(seed), random_masks(seed + 100)
    got = dice(torch.from_numpy(pred)[None], torch.from_numpy(label).float()[None])  # [1, 4]
    expected = [reference_dice(p, lab) for p, lab in zip(pred, label)]
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.3, 2.5)])
def test_hd95_matches_brute_force(seed, spacing):
    pred, label = random_masks(seed), random_masks(seed + 100)
    got = hd95(torch.from_numpy(pred)[None], torch.from_numpy(label)[None], spacing=spacing)  # [1, 4]
    expected = [reference_hd95(p, lab, spacing) for p, lab in zip(pred, label)]
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-5)


def test_hd95_on_blobs_apart():
    """Two cubes shifted by 3 voxels along x: every surface distance is at most 3."""
    pred, label = np.zeros((2, 16, 12, 12), bool)
    pred[2:8, 3:9, 3:9] = True
    label[5:11, 3:9, 3:9] = True
    got = hd95(torch.from_numpy(pred)[None, None], torch.from_numpy(label)[None, None])
    assert got.item() == pytest.approx(reference_hd95(pred, label))
    assert 0 < got.item() <= 3


def test_anisotropic_spacing_counts():
    """Single voxels 2 apart along z: 2 mm at 1 mm spacing, 5 mm at z spacing 2.5, unchanged by x/y spacing."""
    pred, label = torch.zeros(2, 1, 1, 5, 5, 8, dtype=torch.bool)
    pred[..., 2, 2, 3] = True
    label[..., 2, 2, 5] = True
    assert hd95(pred, label).item() == pytest.approx(2.0)
    assert hd95(pred, label, spacing=(1.0, 1.0, 2.5)).item() == pytest.approx(5.0)
    assert hd95(pred, label, spacing=(3.0, 0.5, 2.5)).item() == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("pred_empty", "label_empty", "expected_dice", "expected_hd95"),
    [
        (True, True, 1.0, 0.0),
        (False, True, 0.0, HD95_PENALTY_MM),
        (True, False, 0.0, HD95_PENALTY_MM),
    ],
)
def test_empty_mask_conventions(pred_empty, label_empty, expected_dice, expected_hd95):
    full = torch.zeros(1, 1, 6, 6, 6)
    full[..., 1:4, 2:4, 2:5] = 1
    pred = torch.zeros_like(full) if pred_empty else full
    label = torch.zeros_like(full) if label_empty else full
    assert dice(pred, label).item() == expected_dice
    assert hd95(pred, label, spacing=(1.0, 1.0, 2.0)).item() == pytest.approx(expected_hd95)


def test_penalty_is_the_brats_diagonal():
    assert HD95_PENALTY_MM == pytest.approx(np.sqrt(240**2 + 240**2 + 155**2), abs=0.005)


def test_batch_mixes_empty_and_full_channels():
    """Conventions apply per [b, c], next to ordinary values, with no warning from MONAI."""
    pred, label = torch.zeros(2, 2, 3, 6, 7, 5, dtype=torch.bool)  # two [B=2, C=3, 6, 7, 5]
    pred[0, 0, 1:4, 1:4, 1:3] = label[0, 0, 2:5, 1:4, 1:3] = True  # ordinary
    label[0, 1, 2, 2, 2] = True  # missed
    pred[1, 2, 3, 3, 3] = True  # false positive
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got_hd, got_dice = hd95(pred, label), dice(pred, label)  # [2, 3]
    p = HD95_PENALTY_MM
    ordinary = reference_hd95(pred[0, 0].numpy(), label[0, 0].numpy())
    torch.testing.assert_close(got_hd, torch.tensor([[ordinary, p, 0.0], [0.0, 0.0, p]], dtype=torch.float32))
    ordinary = reference_dice(pred[0, 0].numpy(), label[0, 0].numpy())
    torch.testing.assert_close(got_dice, torch.tensor([[ordinary, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float32))


def test_region_metrics_keys_and_means():
    label = torch.zeros(3, 8, 8, 8)
    label[1, 1:7, 1:7, 1:7] = 1  # WT
    label[0, 2:5, 2:5, 2:5] = 1  # TC
    pred = label.clone()
    pred[0, 2, 2, 2] = 0  # TC slightly off, ET empty in both
    got = region_metrics(pred, label, spacing=(1.0, 1.0, 1.0))
    assert list(got) == ["dice_tc", "dice_wt", "dice_et", "dice_mean", "hd95_tc", "hd95_wt", "hd95_et", "hd95_mean"]
    assert got["dice_tc"] == pytest.approx(reference_dice(pred[0].numpy() > 0, label[0].numpy() > 0))
    assert (got["dice_wt"], got["dice_et"], got["hd95_wt"], got["hd95_et"]) == (1.0, 1.0, 0.0, 0.0)
    assert got["dice_mean"] == pytest.approx((got["dice_tc"] + 2) / 3)
    assert got["hd95_mean"] == pytest.approx(got["hd95_tc"] / 3)
    assert list(region_metrics(pred, label, with_hd95=False)) == ["dice_tc", "dice_wt", "dice_et", "dice_mean"]


def edt_hd95(pred: np.ndarray, label: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """HD95 by scipy distance transforms (no point pairs): the distance of each surface voxel of one mask to
    the nearest surface voxel of the other is the Euclidean distance transform of the other's non-surface."""
    surfaces = [m & ~binary_erosion(m) for m in (pred, label)]
    to_pred, to_label = (distance_transform_edt(~s, sampling=spacing) for s in surfaces)
    return max(np.percentile(to_label[surfaces[0]], 95), np.percentile(to_pred[surfaces[1]], 95))


ORGANS = {"liver": 1, "spleen": 2, "left kidney": 3, "Right-Kidney (R)": 5, "aorta": 7, "pancreas": 8}


def organ_maps(seed: int, shape=(10, 9, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Label and prediction maps with organ values: blocks per organ, the prediction shifted and speckled;
    the aorta is in neither (both empty), the pancreas only in the prediction (one empty)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int64)
    for value, x in zip((1, 2, 3, 5), (0, 2, 5, 7)):
        y, z = rng.integers(0, 4, size=2)
        label[x : x + 3, y : y + 5, z : z + 4] = value
    pred = np.roll(label, int(rng.integers(-1, 2)), axis=1)
    speckle = rng.random(shape) < 0.08
    pred[speckle] = rng.choice([0, 1, 2, 3, 5], size=int(speckle.sum()))
    pred[rng.integers(0, shape[0]), 0, 0] = 8
    return label, pred


@pytest.mark.parametrize("seed", range(3))
def test_multi_class_metrics_match_counts_and_distance_transforms(seed):
    label, pred = organ_maps(seed)
    spacing = (0.8, 1.5, 2.0)
    masks = [np.stack([m == v for v in ORGANS.values()]) for m in (pred, label)]  # [6, *shape] each
    got = region_metrics(torch.from_numpy(masks[0]), torch.from_numpy(masks[1]), spacing, names=list(ORGANS))
    keys = ["liver", "spleen", "left_kidney", "right_kidney_r", "aorta", "pancreas"]
    assert list(got) == [f"dice_{k}" for k in keys] + ["dice_mean"] + [f"hd95_{k}" for k in keys] + ["hd95_mean"]
    dices, distances = [], []
    for value, key in zip(ORGANS.values(), keys):
        p, lab = pred == value, label == value
        if not p.any() and not lab.any():
            expected_dice, expected_hd = 1.0, 0.0
        elif not p.any() or not lab.any():
            expected_dice, expected_hd = 0.0, HD95_PENALTY_MM
        else:
            expected_dice = 2 * np.count_nonzero(p & lab) / (np.count_nonzero(p) + np.count_nonzero(lab))
            expected_hd = edt_hd95(p, lab, spacing)
            assert expected_hd == pytest.approx(reference_hd95(p, lab, spacing))  # the two references agree
        assert got[f"dice_{key}"] == pytest.approx(expected_dice, rel=1e-6), key
        assert got[f"hd95_{key}"] == pytest.approx(expected_hd, rel=1e-5), key
        dices.append(expected_dice)
        distances.append(expected_hd)
    assert (got["dice_aorta"], got["hd95_aorta"]) == (1.0, 0.0)
    assert (got["dice_pancreas"], got["hd95_pancreas"]) == (0.0, pytest.approx(HD95_PENALTY_MM))
    assert got["dice_mean"] == pytest.approx(np.mean(dices), rel=1e-6)  # over the outputs only: no background
    assert got["hd95_mean"] == pytest.approx(np.mean(distances), rel=1e-5)


def test_metric_keys_are_safe_and_unique():
    names = ["TC", "left kidney", "Right-Kidney (R)", "mean", "liver", "Liver", "±", "liver_6"]
    expected = ["tc", "left_kidney", "right_kidney_r", "mean_4", "liver", "liver_6", "output_7", "liver_6_8"]
    assert metric_keys(names) == expected


def test_region_metrics_needs_one_name_per_mask():
    with pytest.raises(ValueError, match=r"expected masks \[2, \*spatial\] \(liver, spleen\)"):
        region_metrics(torch.zeros(3, 4, 4, 4), torch.zeros(3, 4, 4, 4), names=["liver", "spleen"])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same shape"):
        dice(torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 3, 4, 4, 5))
    with pytest.raises(ValueError, match="one value per spatial axis"):
        hd95(torch.ones(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4, 4), spacing=(1.0, 1.0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_stay_on_device():
    pred, label = (torch.from_numpy(random_masks(s)).cuda()[None] for s in (0, 1))
    assert dice(pred, label).device.type == "cuda"
    torch.testing.assert_close(hd95(pred, label).cpu(), hd95(pred.cpu(), label.cpu()))
