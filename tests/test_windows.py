"""Window planning (``--window plan``) as a pure function on shapes, against MONAI's own window placement,
and through the Predictor: the same output as ``sliding_window_inference`` with the planned window."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import blob_label, write_case
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval
from torch import nn

from medseg.devices import resolve_precision
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.windows import check_window, monai_plan, plan_windows, scan_count
from medseg.modules.segmentation import SegmentationModule

BRATS_CROP = (146, 174, 149)  # a real skull-stripped BraTS brain's head crop at 1 mm


def monai_counts(shape, window, overlap) -> tuple[int, ...]:
    """Windows per axis as sliding_window_inference places them (after padding the volume to the window)."""
    padded = [max(s, w) for s, w in zip(shape, window)]
    interval = _get_scan_interval(padded, window, 3, overlap)
    starts = [sorted({sl[d].start for sl in dense_patch_slices(padded, window, interval)}) for d in range(3)]
    return tuple(len(s) for s in starts)


def test_brats_crop_with_a_128_roi():
    """Each side is just over 128: two windows per axis either way; two of 96 (overlapping by 18-46
    voxels, at least 16) cover 146, 174 and 149, so 7.1 M voxels go through the network instead of the
    roi's 16.8 M at overlap 0.5, with no window larger than training's."""
    plan = plan_windows(BRATS_CROP, (128, 128, 128), 32)
    assert plan.window == (96, 96, 96) and plan.counts == (2, 2, 2)
    assert plan.voxels == 8 * 96**3
    roi = monai_plan(BRATS_CROP, (128, 128, 128), 0.5)
    assert roi.counts == (2, 2, 2) and roi.voxels == 8 * 128**3
    assert monai_counts(BRATS_CROP, plan.window, plan.overlap) == plan.counts
    assert plan.describe() == "8 windows (2 x 2 x 2) of 96 x 96 x 96, 7.1 M voxels"


def test_larger_cap_and_memory():
    assert plan_windows(BRATS_CROP, (192,) * 3, 32).window == (160, 192, 160)  # one pass, as auto's window
    one_axis = plan_windows(BRATS_CROP, (160,) * 3, 32)
    assert one_axis.counts == (1, 2, 1) and one_axis.window == (160, 96, 160)
    budget = plan_windows(BRATS_CROP, (128,) * 3, 32, fits=lambda voxels: voxels <= 96 * 96 * 64)
    assert budget.window == (64, 96, 96) and budget.counts == (3, 2, 2)  # one more window along the first longest
    assert monai_counts(BRATS_CROP, budget.window, budget.overlap) == budget.counts
    tiny = plan_windows((40, 40, 40), (128,) * 3, 32, fits=lambda voxels: False)
    assert tiny.window == (32, 32, 32)  # never below the divisor, even when nothing fits
    assert plan_windows((20, 100, 64), (64,) * 3, 32).window == (32, 64, 64)


@pytest.mark.parametrize("divisor,cap", [(32, 128), (32, 64), (8, 16)])
def test_planned_overlaps_place_exactly_the_planned_windows(divisor, cap):
    rng = np.random.default_rng(divisor + cap)
    for shape in rng.integers(10, 5 * cap, size=(40, 3)):
        plan = plan_windows(shape.tolist(), (cap,) * 3, divisor)
        assert all(w % divisor == 0 and w <= cap for w in plan.window)
        assert monai_counts(shape.tolist(), plan.window, plan.overlap) == plan.counts, (shape, plan)
        for s, w, n in zip(shape, plan.window, plan.counts):
            assert n * w >= s and (n == 1 or n * w - s >= (n - 1) * min(16, cap // 4))  # covered, overlapping


def test_scan_count_is_monais():
    for s, w, o in itertools.product((50, 128, 146, 174, 300), (32, 96, 128, 160), (0.0, 0.25, 0.5, 0.7)):
        assert scan_count(s, w, o) == monai_counts((s, 1, 1), (w, 1, 1), (o, 0, 0))[0]


def test_plan_mode_choices():
    from medseg.nets import UNETR

    assert check_window("plan", ContextNet()) == "plan"
    unetr = UNETR(
        in_channels=4, out_channels=3, img_size=(32, 32, 32), feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4
    )
    assert check_window("plan", unetr) == "roi"  # a network of one input size: its roi
    with pytest.raises(MedsegError, match="plan"):
        check_window("plans", ContextNet())


class ContextNet(nn.Module):
    """A 3x3x3 convolution: its output near a window's edge depends on where the window lies, so a
    stitched volume tells window placements apart; any multiple of 8, with a memory estimate."""

    size_divisor = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(4, 3, 3, padding=1)
        self.seen = []

    def inference_bytes(self, voxels: int) -> int:
        return voxels * 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[2:]))
        return self.conv(x)


def test_planned_prediction_is_sliding_window_with_the_planned_window(tmp_path):
    label = blob_label(shape=(40, 30, 20), seed=3)
    case = write_case(tmp_path, "BraTS2021_00005", label)
    net = ContextNet()
    module = SegmentationModule(net=net, roi_size=(16, 16, 16), sw_overlap=0.5)
    predictor = Predictor(module, device="cpu", window="plan", precision="fp32")
    image = predictor.transform(case)["image"]  # [4, X', Y', Z'] cropped
    plan = predictor.window_plan(image.shape[1:])
    assert all(w <= 16 for w in plan.window) and plan.windows > 1
    net.seen.clear()
    probs = predictor.model_probabilities(module, "plan", image)  # [3, X', Y', Z']
    assert len(net.seen) == plan.windows and set(net.seen) == {plan.window}
    with torch.inference_mode():
        logits = sliding_window_inference(image[None], plan.window, 1, net, overlap=plan.overlap)
    torch.testing.assert_close(probs, torch.sigmoid(logits[0]).as_tensor(), rtol=0, atol=1e-6)
    result = predictor.predict_case(case)
    assert result.windows.endswith("(plan), fp32") and plan.describe() in result.windows
    wide = Predictor(module, device="cpu", window="plan", max_window=64)
    assert wide.window_plan(image.shape[1:]).windows == 1


def test_predict_prints_each_cases_windows(tmp_path, monkeypatch, capsys):
    from medseg.commands import predict

    write_case(tmp_path / "cases", "BraTS2021_00011", blob_label(shape=(32, 28, 16), seed=4))
    module = SegmentationModule(net=ContextNet(), roi_size=(16, 16, 16))
    seen = {}

    def from_checkpoints(cls, checkpoints, **kwargs):
        seen.update(kwargs)
        return Predictor(
            module,
            device="cpu",
            window=kwargs["window"],
            max_window=kwargs["max_window"],
            precision=kwargs["precision"],
        )

    monkeypatch.setattr(predict.Predictor, "from_checkpoints", classmethod(from_checkpoints))
    args = [str(tmp_path / "cases"), "--ckpt", "x.ckpt", "--out", str(tmp_path / "out"), "--window", "plan"]
    assert predict.main([*args, "--max-window", "24"]) == 0
    assert seen["window"] == "plan" and seen["max_window"] == [24]
    out = capsys.readouterr().out
    assert seen["precision"] == "auto"  # the default: what the CPU computes fast
    expected = resolve_precision("auto", "cpu")
    assert "BraTS2021_00011: 28 x 24 x 14 cropped: " in out and f"(plan), {expected}" in out
