"""Blob loss (medseg.losses.blob): a soft Dice per truth lesion, so a missed small lesion costs as much as a
missed large one; wired into both segmentation losses and the module's ``blob_weight``."""

from __future__ import annotations

import pytest
import torch

from medseg.losses import DiceBCELoss, DiceCELoss
from medseg.losses.blob import blob_dice_loss
from medseg.modules.segmentation import SegmentationModule


def two_lesions() -> torch.Tensor:
    """[1, 1, 32, 32, 32]: a 10-voxel cube (1000 voxels) and a 2-voxel cube (8 voxels)."""
    mask = torch.zeros(1, 1, 32, 32, 32)
    mask[..., 2:12, 2:12, 2:12] = 1
    mask[..., 25:27, 25:27, 25:27] = 1
    return mask


def test_a_missed_small_lesion_costs_half_not_one_percent():
    truth = two_lesions()
    found_large = truth.clone()
    found_large[..., 25:27, 25:27, 25:27] = 0
    assert blob_dice_loss(truth, truth) == pytest.approx(0.0, abs=1e-6)
    assert blob_dice_loss(found_large, truth) == pytest.approx(0.5, abs=1e-6)  # lesions 0 and 1: mean 0.5
    whole = 1 - 2 * (found_large * truth).sum() / (found_large.square().sum() + truth.sum())
    assert whole < 0.01  # the voxel-wise soft Dice hardly notices


def test_each_lesion_is_scored_alone_against_the_background():
    truth = two_lesions()
    pred = truth.clone()
    pred[..., 20:22, 2:4, 2:4] = 0.5  # a false positive away from both lesions: it penalises each
    sizes, false_positive = torch.tensor([1000.0, 8.0]), 8 * 0.25
    expected = (1 - 2 * sizes / (2 * sizes + false_positive)).mean()
    assert blob_dice_loss(pred, truth) == pytest.approx(float(expected), rel=1e-5)


def test_no_lesion_gives_zero_with_a_gradient():
    probs = torch.rand(2, 3, 8, 8, 8, requires_grad=True)
    loss = blob_dice_loss(probs, torch.zeros(2, 3, 8, 8, 8))
    loss.backward()
    assert loss == 0 and probs.grad is not None


def test_losses_add_the_blob_term_only_when_weighted():
    logits, truth = torch.randn(1, 1, 32, 32, 32), two_lesions()
    off, on = DiceBCELoss()(logits, truth), DiceBCELoss(blob_weight=2.0)(logits, truth)
    assert "blob" not in off
    assert on["loss"] == pytest.approx(float(off["loss"] + 2.0 * on["blob"]), rel=1e-6)
    classes = truth * 2  # class 2 of background + two classes
    parts = DiceCELoss(blob_weight=1.0)(torch.randn(1, 3, 32, 32, 32), classes)
    assert 0 < parts["blob"] <= 1 and parts["loss"] > parts["ce"]


def test_module_trains_with_blob_weight():
    module = SegmentationModule(net=torch.nn.Conv3d(4, 3, 3, padding=1), roi_size=(16, 16, 16), blob_weight=1.0)
    label = torch.zeros(2, 3, 16, 16, 16)
    label[:, :, 2:6, 2:6, 2:6] = 1
    label[:, :, 10:12, 10:12, 10:12] = 1
    module.log_dict = lambda *a, **k: None  # no trainer attached
    loss = module.training_step({"image": torch.randn(2, 4, 16, 16, 16), "label": label}, 0)
    loss.backward()
    assert torch.isfinite(loss) and module.net.weight.grad is not None
    module.set_task("brats2021")  # the task's loss keeps the weight
    assert module.loss.blob_weight == 1.0
