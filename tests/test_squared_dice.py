"""The soft Dice's denominator: squared probabilities (MONAI's BraTS reference, the regions default) or plain
(nnU-Net's, the classes default), chosen per task by ``SegmentationModule(squared_dice=...)``."""

from __future__ import annotations

import pytest
import torch

from medseg.losses import DiceBCELoss, DiceCELoss
from medseg.modules.segmentation import SegmentationModule
from medseg.nets import SwinUNETR


def half_sure() -> tuple[torch.Tensor, torch.Tensor]:
    """One region over half a crop, predicted at probability 0.5 everywhere (logit 0)."""
    truth = torch.zeros(1, 1, 4, 4, 4)
    truth[..., :2] = 1
    return torch.zeros(1, 1, 4, 4, 4), truth


def test_squared_and_plain_denominators():
    logits, truth = half_sure()  # intersection 32 x 0.5 = 16, truth 32, probabilities 64 x 0.5 (squared: 0.25)
    squared = DiceBCELoss(bce_weight=0.0)(logits, truth)["dice"]
    plain = DiceBCELoss(bce_weight=0.0, squared_pred=False)(logits, truth)["dice"]
    assert float(squared) == pytest.approx(1 - 32 / (16 + 32), abs=1e-5)
    assert float(plain) == pytest.approx(1 - 32 / (32 + 32), abs=1e-5)
    two = torch.cat([logits, logits], 1)  # background and one class, each at probability 0.5
    assert float(DiceCELoss(ce_weight=0.0)(two, truth)["dice"]) == pytest.approx(float(plain), abs=1e-5)
    assert float(DiceCELoss(ce_weight=0.0, squared_pred=True)(two, truth)["dice"]) == pytest.approx(
        float(squared), abs=1e-5
    )


@pytest.mark.parametrize(
    ("squared_dice", "regions", "classes"), [(None, True, False), (False, False, False), (True, True, True)]
)
def test_module_default_is_per_task_kind(squared_dice, regions, classes):
    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12)
    module = SegmentationModule(net=net, roi_size=(32, 32, 32), squared_dice=squared_dice)
    module.set_task(
        {
            "name": "regions",
            "channels": ["T1"],
            "labels": {"a": 1, "b": 2},
            "regions": {"x": [1, 2], "y": [2], "z": [1]},
        }
    )
    assert module.loss.dice.squared_pred is regions
    module.set_task({"name": "organs", "channels": ["CT"], "labels": {"a": 1, "b": 2}})
    assert module.loss.dice.squared_pred is classes
