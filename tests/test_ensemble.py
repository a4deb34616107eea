"""Ensembles and test-time augmentation against references computed by hand: the mean of each model's
probabilities, the mean over the 8 mirrored passes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import blob_label, write_case
from torch import nn

from medseg.data.bias_field import n4_correct
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.modules.segmentation import SegmentationModule
from medseg.modules.tta import mirror_axes, mirror_sets
from medseg.tasks import get_task

ROI = (32, 32, 32)  # larger than the cropped test volume: one window, so a symmetric kernel is flip-equivariant


def tiny_net(seed: int, symmetric: bool = False, out_channels: int = 3) -> nn.Conv3d:
    """The Conv3d stand-in of tests/conftest.py TINY_NET; ``symmetric``: its kernel is mirror-symmetric
    along every axis, so the network commutes with flips."""
    torch.manual_seed(seed)
    net = nn.Conv3d(4, out_channels, 3, padding="same")
    if symmetric:
        with torch.no_grad():
            w = net.weight
            net.weight.copy_(sum(w.flip(d) for n in range(4) for d in itertools.combinations((2, 3, 4), n)) / 8)
    return net


def write_ckpt(
    path: Path, net: nn.Conv3d, task="brats2021", pixdim=None, threshold: float = 0.5, bias_field: str | None = None
) -> Path:
    """A checkpoint as `medseg fit` writes it (hyperparameters with the net's config, the task), without fitting."""
    args = {"in_channels": 4, "out_channels": net.out_channels, "kernel_size": 3, "padding": "same"}
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {
                "net": {"class_path": "torch.nn.Conv3d", "init_args": args},
                "roi_size": list(ROI),
                "threshold": threshold,
            },  # fmt: skip
            "datamodule_hyper_parameters": {
                "task": get_task(task).to_dict(),
                "pixdim": pixdim,
                "bias_field": bias_field,
            },
        },
        path,
    )
    return path


@pytest.fixture
def case(tmp_path) -> dict:
    return write_case(tmp_path / "cases", "BraTS2021_00001", blob_label(seed=1))


@pytest.fixture
def ckpts(tmp_path) -> list[Path]:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    return [write_ckpt(tmp_path / "a" / "a.ckpt", tiny_net(0)), write_ckpt(tmp_path / "b" / "b.ckpt", tiny_net(1))]


def validation_run(tmp_path: Path, n_cases: int = 2) -> Path:
    """A tiny model's checkpoint in ``tmp_path/run`` and ``n_cases`` labelled cases in ``tmp_path/val``
    (what `medseg calibrate` and `medseg postprocess` take); returns the checkpoint."""
    from conftest import blob_label, write_case

    (tmp_path / "run").mkdir()
    for i in range(n_cases):
        write_case(tmp_path / "val", f"BraTS2021_0000{i}", blob_label(seed=i), seed=i)
    return write_ckpt(tmp_path / "run" / "last.ckpt", tiny_net(0))


def test_two_identical_checkpoints_equal_one(ckpts, case):
    one = Predictor.from_checkpoint(ckpts[0], device="cpu").predict_case(case, probabilities=True)
    two = Predictor.from_checkpoints([ckpts[0], ckpts[0]], device="cpu").predict_case(case, probabilities=True)
    np.testing.assert_allclose(two.probabilities, one.probabilities, atol=1e-7)
    np.testing.assert_array_equal(two.label, one.label)


def test_two_checkpoints_average_their_probabilities(ckpts, case):
    a, b = (Predictor.from_checkpoint(c, device="cpu").predict_case(case, probabilities=True) for c in ckpts)
    ensemble = Predictor.from_checkpoints(ckpts, device="cpu")
    both = ensemble.predict_case(case, probabilities=True)
    mean = (a.probabilities + b.probabilities) / 2  # [3, X, Y, Z]
    assert np.abs(a.probabilities - b.probabilities).max() > 0.1  # the models do differ
    np.testing.assert_allclose(both.probabilities, mean, atol=1e-6)
    np.testing.assert_array_equal(both.label, get_task("brats2021").from_masks(torch.from_numpy(mean > 0.5)).numpy())
    assert ensemble.describe_passes() == "2 passes per case (2 models)"


def _module(net: nn.Module) -> SegmentationModule:
    return SegmentationModule(net=net, roi_size=ROI)


def _manual_mirrored(net: nn.Module, x: torch.Tensor, axes=(0, 1, 2)) -> torch.Tensor:
    """Mean over every flip combination of sigmoid(net(flipped x)) flipped back: x [1, C, *] -> [1, N, *]."""
    flips = [f for n in range(len(axes) + 1) for f in itertools.combinations([2 + a for a in axes], n)]
    with torch.no_grad():
        return sum(torch.sigmoid(net(x.flip(f))).flip(f) if f else torch.sigmoid(net(x)) for f in flips) / len(flips)


def test_tta_with_a_flip_equivariant_net_equals_no_tta(case):
    net = tiny_net(2, symmetric=True)
    plain = Predictor(_module(net), task="brats2021", device="cpu").predict_case(case, probabilities=True)
    tta = Predictor(_module(net), task="brats2021", device="cpu", tta=True)
    mirrored = tta.predict_case(case, probabilities=True)
    np.testing.assert_allclose(mirrored.probabilities, plain.probabilities, atol=1e-5)
    np.testing.assert_array_equal(mirrored.label, plain.label)
    assert tta.describe_passes() == "8 passes per case (tta x 8 on axes 0 1 2, 1 model)"


def test_tta_equals_the_mean_over_mirrored_passes(case):
    net = tiny_net(3)
    predictor = Predictor(_module(net), task="brats2021", device="cpu", tta=True, precision="fp32")
    image = predictor.transform(case)["image"].as_tensor()  # [4, X', Y', Z'] the network's grid
    got = predictor.model_probabilities(predictor.module, predictor.window, image)  # [3, X', Y', Z']
    plain = Predictor(_module(net), task="brats2021", device="cpu", precision="fp32")
    unmirrored = plain.model_probabilities(plain.module, plain.window, image)
    expected = _manual_mirrored(net, image[None])[0]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)
    assert (got - unmirrored).abs().max() > 1e-3  # this net is not flip-equivariant: TTA changed something


def test_tta_axes_default_by_task_kind_and_are_checked():
    assert mirror_axes("regions") == (0, 1, 2) and mirror_axes("classes") == (1, 2)
    assert len(mirror_sets(mirror_axes("classes"))) == 4 and mirror_sets(()) == [()]
    assert mirror_axes("classes", [2, 0]) == (0, 2)
    with pytest.raises(ValueError, match="among 0, 1, 2"):
        mirror_axes("regions", [3])
    with pytest.raises(MedsegError, match="0 is left-right"):
        Predictor(_module(tiny_net(0)), task="brats2021", device="cpu", tta=True, tta_axes=[1, 1])
    organs = {"name": "organs", "channels": ["a", "b", "c", "d"], "labels": {"left": 1, "right": 2}}
    predictor = Predictor(_module(tiny_net(0)), task=organs, device="cpu", tta=True)
    assert predictor.describe_passes() == "4 passes per case (tta x 4 on axes 1 2, 1 model)"


def test_segmentation_module_validates_with_tta():
    """``tta`` is a hyperparameter (default off); with it, validation scores the mirrored mean."""
    assert SegmentationModule(net=tiny_net(0), roi_size=ROI).hparams.tta is False
    net = tiny_net(4)
    module = SegmentationModule(net=net, roi_size=ROI, tta=True)
    image = torch.randn(1, 4, 12, 10, 8)
    expected = _manual_mirrored(net, image)  # [1, 3, 12, 10, 8]
    label = (expected > 0.5).float()
    logged = {}
    module.log_dict = lambda metrics, **kw: logged.update(metrics)
    with torch.no_grad():
        pred = module._evaluate({"image": image, "label": label}, "val", with_hd95=False)
    np.testing.assert_array_equal(pred.numpy(), (expected > 0.5).numpy())
    assert float(logged["val/dice_mean"]) == 1.0
    with pytest.raises(ValueError, match="mirror axes"):
        SegmentationModule(net=net, roi_size=ROI, tta_axes=(0, 5))


def test_an_exported_model_joins_an_ensemble(tmp_path, ckpts, case):
    from medseg.inference.export import export

    exported = tmp_path / "b.pt"
    assert export(ckpts[1], exported, "torchscript") < 1e-5
    mixed = Predictor.from_checkpoints([ckpts[0], exported], device="cpu")
    assert mixed.precision == "fp32"  # auto: an exported model runs as it was exported
    mixed = mixed.predict_case(case, probabilities=True)
    native = Predictor.from_checkpoints(ckpts, device="cpu", precision="fp32").predict_case(case, probabilities=True)
    np.testing.assert_allclose(mixed.probabilities, native.probabilities, atol=1e-5)


def test_a_checkpoint_trained_on_corrected_images_corrects_what_it_predicts(tmp_path, ckpts):
    """bias_field n4 in the checkpoint's data settings: predicting a case equals predicting, without
    correction, the case whose channels were N4-corrected beforehand (a RAS case: the same arrays either way)."""
    case = write_case(tmp_path / "ras", "BraTS2021_00001", blob_label(seed=1), affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    corrected_case = dict(case, image=[])
    for path in map(Path, case["image"]):
        img = nib.load(path)
        fixed = n4_correct(np.asarray(img.dataobj, dtype=np.float32), img.header.get_zooms()[:3])
        corrected_case["image"].append(str(tmp_path / path.name))
        nib.save(nib.Nifti1Image(fixed, img.affine), corrected_case["image"][-1])
    n4 = write_ckpt(tmp_path / "n4.ckpt", tiny_net(0), bias_field="n4")
    got = Predictor.from_checkpoint(n4, device="cpu").predict_case(case, probabilities=True)
    expected = Predictor.from_checkpoint(ckpts[0], device="cpu").predict_case(corrected_case, probabilities=True)
    plain = Predictor.from_checkpoint(ckpts[0], device="cpu").predict_case(case, probabilities=True)
    assert np.abs(plain.probabilities - expected.probabilities).max() > 1e-3  # the correction changes something
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5)


def test_incompatible_checkpoints_one_clear_error(tmp_path, ckpts):
    organs = {"name": "organs", "channels": ["a", "b", "c", "d"], "labels": {"left": 1, "right": 2}}
    other = write_ckpt(tmp_path / "organs.ckpt", tiny_net(0, out_channels=3), task=organs)
    with pytest.raises(MedsegError, match=r"cannot ensemble a\.ckpt and organs\.ckpt: .*different tasks.*brats2021"):
        Predictor.from_checkpoints([ckpts[0], other], device="cpu")
    resampled = write_ckpt(tmp_path / "iso.ckpt", tiny_net(0), pixdim=[1.0, 1.0, 1.0])
    with pytest.raises(MedsegError, match=r"cannot ensemble a\.ckpt and iso\.ckpt: .*resampling \(pixdim None"):
        Predictor.from_checkpoints([ckpts[0], resampled], device="cpu")
    corrected = write_ckpt(tmp_path / "n4.ckpt", tiny_net(0), bias_field="n4")
    with pytest.raises(MedsegError, match=r"n4\.ckpt: they were trained on differently corrected .*None and n4"):
        Predictor.from_checkpoints([ckpts[0], corrected], device="cpu")
    strict = write_ckpt(tmp_path / "strict.ckpt", tiny_net(0), threshold=0.7)
    with pytest.raises(MedsegError, match=r"strict\.ckpt: their thresholds differ \(0\.5 and 0\.7\)"):
        Predictor.from_checkpoints([ckpts[0], strict], device="cpu")


def test_cli_two_checkpoints_with_tta_end_to_end(tmp_path, ckpts, case, capsys):
    from medseg.cli import main

    out = tmp_path / "pred"
    args = ["predict", str(Path(case["image"][0]).parent), "--ckpt", *map(str, ckpts), "--out", str(out)]
    assert main([*args, "--tta"]) == 0
    printed = capsys.readouterr().out
    assert "16 passes per case (tta x 8 on axes 0 1 2, 2 models): " in printed and " s per case" in printed
    assert "post-processing" not in printed
    written = nib.load(out / "BraTS2021_00001.nii.gz")
    expected = Predictor.from_checkpoints(ckpts, device="cpu", tta=True).predict_case(case).label
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)

    # a postprocess.json beside the first checkpoint is applied by default, and said so; --no-postprocess skips it
    (ckpts[0].parent / "postprocess.json").write_text(json.dumps({"min_component_ml": {"WT": 1000.0}}))
    assert main([*args, "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "2 passes per case (2 models)" in printed
    assert f"post-processing: {ckpts[0].parent / 'postprocess.json'} (stored beside the checkpoint" in printed
    label = np.asarray(nib.load(out / "BraTS2021_00001.nii.gz").dataobj)
    assert (label > 0).any() and not (label == 2).any()  # WT removed: what is left is core (1) or ET (4)
    assert main([*args, "--overwrite", "--no-postprocess"]) == 0
    assert "post-processing" not in capsys.readouterr().out
    assert (np.asarray(nib.load(out / "BraTS2021_00001.nii.gz").dataobj) == 2).any()
