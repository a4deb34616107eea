"""Calibration (medseg.inference.calibration): temperatures recovered from probabilities made over-confident
by a known factor, ECE against a hand computation, labels unchanged, and the commands end to end
(calibrate -> predict --probabilities --uncertainty -> evaluate's ECE column)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import blob_label, write_case
from test_ensemble import tiny_net, validation_run

from medseg.cli import main as cli
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.calibration import (
    Samples,
    calibrate,
    calibration_error,
    check_calibration,
    fit_temperature,
    uncertainty,
)

REGIONS = ("TC", "WT", "ET")


def overconfident(n: int, factor: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True probabilities q, outcomes y ~ Bernoulli(q), and reported p = sigmoid(factor * logit(q))."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.02, 0.98, n)
    y = rng.random(n) < q
    p = 1 / (1 + np.exp(-factor * np.log(q / (1 - q))))
    return p, y


def test_ece_by_hand():
    probs = np.array([[[0.05, 0.15, 0.95, 0.9, 0.0]]]).reshape(1, 5, 1, 1)  # the 0.0: outside the crop
    truth = np.array([[0, 1, 1, 0, 1]], bool).reshape(1, 5, 1, 1)
    # bins (15): 0.05 -> 0, 0.15 -> 2, 0.95 and 0.9 -> 14 and 13; |0.05-0| + |0.15-1| + |0.95-1| + |0.9-0|
    expected = (0.05 + 0.85 + 0.05 + 0.9) / 4
    assert calibration_error(probs, truth, ["tc"], "regions") == {"ece_tc": pytest.approx(expected)}


def test_temperature_recovers_the_overconfidence_and_lowers_ece():
    samples = Samples()
    factors = (3.0, 1.0, 0.5)  # over-confident, calibrated, under-confident
    draws = [overconfident(60_000, f, seed=i) for i, f in enumerate(factors)]
    samples.add(
        np.stack([p for p, _ in draws]).reshape(3, 60_000, 1, 1), np.stack([y for _, y in draws]).reshape(3, -1, 1, 1)
    )
    config = fit_temperature(samples, REGIONS, "regions")
    for name, factor in zip(REGIONS, factors):
        assert config["temperature"][name] == pytest.approx(factor, rel=0.05)
    assert config["ece"]["after"]["TC"] < config["ece"]["before"]["TC"] / 3
    assert config["ece"]["after"]["ET"] < config["ece"]["before"]["ET"] / 3


def test_classes_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (3, 40_000))
    true = torch.softmax(torch.from_numpy(logits), 0).numpy()
    cls = np.array([rng.choice(3, p=true[:, i]) for i in range(true.shape[1])])
    truth = np.stack([cls == 1, cls == 2]).reshape(2, -1, 1, 1)
    reported = torch.softmax(torch.from_numpy(logits) * 2.0, 0).numpy().reshape(3, -1, 1, 1)  # over-confident
    samples = Samples()
    samples.add(reported, truth)
    config = fit_temperature(samples, ("liver", "spleen"), "classes")
    assert config["temperature"]["classes"] == pytest.approx(2.0, rel=0.05)
    assert config["ece"]["after"]["liver"] < config["ece"]["before"]["liver"]


def test_calibration_never_changes_a_label_and_keeps_zeros():
    rng = np.random.default_rng(1)
    probs = torch.from_numpy(rng.uniform(0, 1, (3, 6, 5, 4)).astype(np.float32))
    probs[:, 0] = 0  # outside the segmented crop
    out = calibrate(probs, {"temperature": {"TC": 2.5, "WT": 0.4, "ET": 1.0}}, REGIONS, "regions")
    assert torch.equal(out > 0.5, probs > 0.5)
    assert torch.all(out[:, 0] == 0)
    torch.testing.assert_close(out[2], probs[2].clamp(1e-6, 1 - 1e-6))  # T = 1: unchanged
    softmax = torch.softmax(torch.from_numpy(rng.normal(size=(4, 6, 5, 4))).float(), 0)
    classes = calibrate(softmax, {"temperature": {"classes": 3.0}}, ("a", "b", "c"), "classes")
    assert torch.equal(classes.argmax(0), softmax.argmax(0))
    torch.testing.assert_close(classes.sum(0), torch.ones(6, 5, 4))


def test_uncertainty_is_entropy_in_bits():
    probs = np.array([0.5, 0.0, 1.0, 0.11]).reshape(1, 4, 1, 1)
    u = uncertainty(probs, "regions")[0, :, 0, 0]
    np.testing.assert_allclose(u, [1.0, 0.0, 0.0, -(0.11 * np.log2(0.11) + 0.89 * np.log2(0.89))], atol=1e-6)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"temperature": {"TC": 1.0, "WT": 1.0}}, "needs TC, WT, ET"),
        ({"temperature": {"TC": 1.0, "WT": -1.0, "ET": 1.0}}, "temperature.WT must be a number > 0"),
        ({"scale": 2}, "expected a JSON object"),
    ],
)
def test_bad_calibration_is_one_clear_error(config, message):
    with pytest.raises(MedsegError, match=message):
        check_calibration(config, REGIONS, "regions", "cal.json")


def test_calibrate_predict_evaluate_end_to_end(tmp_path, capsys):
    ckpt = validation_run(tmp_path)
    ckpt_dir = ckpt.parent
    case = write_case(tmp_path / "test", "BraTS2021_00009", blob_label(seed=9), seed=9)

    assert cli(["calibrate", str(tmp_path / "val"), "--ckpt", str(ckpt), "--voxels", "5000"]) == 0
    stored = json.loads((ckpt_dir / "calibration.json").read_text(encoding="utf-8"))
    assert set(stored["temperature"]) == set(REGIONS) and stored["cases"] == 2
    assert "ECE before" in capsys.readouterr().out

    out = tmp_path / "pred"
    assert cli(["predict", str(tmp_path / "test"), "--ckpt", str(ckpt), "--out", str(out), "--probabilities",
                "--uncertainty"]) == 0  # fmt: skip
    assert "calibrated probabilities" in capsys.readouterr().out
    plain = Predictor.from_checkpoint(ckpt, device="cpu").predict_case(case, probabilities=True)
    label = np.asarray(nib.load(out / "BraTS2021_00009.nii.gz").dataobj)
    np.testing.assert_array_equal(label, plain.label)  # calibration leaves the labels alone
    probs = np.asarray(nib.load(out / "BraTS2021_00009_prob.nii.gz").dataobj)
    assert np.abs(np.moveaxis(probs, -1, 0) - plain.probabilities).max() > 1e-3  # but rescales probabilities
    u = nib.load(out / "BraTS2021_00009_uncertainty.nii.gz")
    assert u.shape == (*label.shape, 3) and 0 <= u.get_fdata().min() and u.get_fdata().max() <= 1

    assert cli(["evaluate", "--pred", str(out), "--label", str(tmp_path / "test"), "--no-hd95"]) == 0
    printed = capsys.readouterr().out
    assert "ECE" in printed and "ignored" not in printed
    summary = json.loads((out / "metrics_summary.json").read_text(encoding="utf-8"))
    assert 0 <= summary["ece_wt"]["mean"] <= 1 and "ece_mean" in summary


def test_validation_logs_the_ece_of_each_region():
    from medseg.metrics.calibration import ece
    from medseg.modules.segmentation import SegmentationModule

    net = tiny_net(3)
    module = SegmentationModule(net=net, roi_size=(32, 32, 32))
    image = torch.randn(1, 4, 12, 10, 8)
    with torch.no_grad():
        probs = torch.sigmoid(net(image))[0].numpy()  # one window covers the volume: the network's output
    label = torch.from_numpy(np.random.default_rng(0).random(probs.shape) < probs).float()[None]
    logged = {}
    module.log_dict = lambda metrics, **kw: logged.update(metrics)
    with torch.no_grad():
        module._evaluate({"image": image, "label": label}, "val", with_hd95=False)
    for i, region in enumerate(("tc", "wt", "et")):
        expected = ece(probs[i].ravel().astype(np.float64), label[0, i].numpy().ravel())
        assert logged[f"val/ece_{region}"] == pytest.approx(expected, abs=1e-6)
