"""Predictions land on the input grid voxel for voxel, whatever the input's orientation and spacing."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import LPS_AFFINE, blob_label, write_case
from torch import nn

from medseg.inference import Predictor
from medseg.modules.segmentation import SegmentationModule


class OracleNet(nn.Module):
    """Reads the regions off the first three channels (1 + 9 x indicator, normalised: positive inside).

    Purely voxel-wise, so any misalignment introduced by orientation, cropping, padding or window
    stitching shows up as a wrong voxel in the output."""

    size_divisor = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3] * 100.0  # [B, 3, *roi]


def _predictor(**kwargs) -> Predictor:
    module = SegmentationModule(net=OracleNet(), roi_size=(16, 16, 16), sw_overlap=0.5)
    return Predictor(module, label_convention="brats2021", device="cpu", **kwargs)


def test_lps_anisotropic_scan_predicted_on_its_own_grid(tmp_path):
    label = blob_label(shape=(40, 30, 20), seed=3)
    case = write_case(tmp_path, "BraTS2021_00005", label)
    result = _predictor().predict_case(case, probabilities=True)
    assert result.label.shape == label.shape
    np.testing.assert_allclose(result.affine, LPS_AFFINE, atol=1e-6)
    np.testing.assert_array_equal(result.label, label)  # voxel for voxel, values 0/1/2/4
    assert result.probabilities.shape == (3, *label.shape)


def test_predict_cli_writes_aligned_label_maps(tmp_path, monkeypatch):
    """Through `medseg predict` with a checkpoint-free predictor: file geometry equals the input's."""
    from medseg.commands import predict

    label = blob_label(shape=(32, 28, 16), seed=4)
    write_case(tmp_path / "cases", "BraTS2021_00011", label)
    monkeypatch.setattr(predict.Predictor, "from_checkpoints", classmethod(lambda cls, *a, **k: _predictor()))
    out = tmp_path / "pred"
    assert predict.main([str(tmp_path / "cases"), "--ckpt", "unused.ckpt", "--out", str(out)]) == 0
    written = nib.load(str(out / "BraTS2021_00011.nii.gz"))
    np.testing.assert_allclose(written.affine, LPS_AFFINE, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)
    assert [p.name for p in out.iterdir()] == ["BraTS2021_00011.nii.gz"]  # no temporary file left


def test_predict_report_writes_overlays_and_html(tmp_path, monkeypatch):
    from medseg.commands import predict
    from medseg.reporting import html as report

    label = blob_label(shape=(32, 28, 16), seed=5)
    write_case(tmp_path / "cases", "BraTS2021_00012", label)
    monkeypatch.setattr(predict.Predictor, "from_checkpoints", classmethod(lambda cls, *a, **k: _predictor()))
    out = tmp_path / "pred"
    assert predict.main([str(tmp_path / "cases"), "--ckpt", "x.ckpt", "--out", str(out), "--report"]) == 0
    png = out / "report" / "BraTS2021_00012.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "BraTS2021_00012.png" in page and "<th data-key='ml WT'>WT ml</th>" in page
    (row,) = json.loads((out / "report" / "cases.json").read_text(encoding="utf-8"))
    voxel_ml = abs(np.linalg.det(LPS_AFFINE[:3, :3])) / 1000
    assert row["WT"] == pytest.approx((label > 0).sum() * voxel_ml, rel=1e-5)  # ml
    assert row["ET"] == pytest.approx((label == 4).sum() * voxel_ml, rel=1e-5)
    report.write_html(out / "report", metrics_summary=None)  # rebuilt from cases.json


def test_python_api_returns_arrays_and_writes_when_asked(tmp_path):
    from medseg import Predictor as PublicPredictor

    assert PublicPredictor is Predictor
    label = blob_label(shape=(24, 20, 12), seed=6)
    write_case(tmp_path / "cases", "BraTS2021_00013", label)
    [result] = _predictor().predict(tmp_path / "cases")
    np.testing.assert_array_equal(result.label, label)
    np.testing.assert_allclose(result.affine, LPS_AFFINE, atol=1e-6)
    assert not (tmp_path / "out").exists()
    _predictor().predict([tmp_path / "cases" / "BraTS2021_00013"], out_dir=tmp_path / "out", probabilities=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "BraTS2021_00013.nii.gz",
        "BraTS2021_00013_prob.nii.gz",
    ]
    assert nib.load(str(tmp_path / "out" / "BraTS2021_00013_prob.nii.gz")).shape == (*label.shape, 3)


def _write_dicom_series(volume_path: str, folder) -> None:
    """One modality as a DICOM series (one .dcm per slice), geometry from the NIfTI file."""
    import SimpleITK as sitk

    image = sitk.Cast(sitk.ReadImage(volume_path), sitk.sitkInt16)
    folder.mkdir(parents=True)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        plane = image[:, :, z]
        tags = {
            "0008|0060": "MR",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1." + str(abs(hash(str(folder))) % 10**8),
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(plane)


def test_dicom_series_case_predicted_on_its_grid(tmp_path):
    label = blob_label(shape=(32, 28, 16), seed=8)
    case = write_case(tmp_path / "nifti", "BraTS2021_00014", label)
    for name, path in zip(("t1", "t1ce", "t2", "flair"), case["image"]):
        _write_dicom_series(path, tmp_path / "dicom" / "patient7" / name)
    [result] = _predictor().predict(tmp_path / "dicom", out_dir=tmp_path / "out")
    assert result.case_id == "patient7"
    np.testing.assert_array_equal(result.label, label)
    written = nib.load(str(tmp_path / "out" / "patient7.nii.gz"))
    np.testing.assert_allclose(written.affine, LPS_AFFINE, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)


def test_dicom_series_with_a_missing_slice_or_a_damaged_file_is_refused_naming_it(tmp_path):
    """ITK would stack the slices it has evenly: every slice past a gap would land on the wrong position."""
    from medseg.io import read_header

    case = write_case(tmp_path / "nifti", "BraTS2021_00016", blob_label(shape=(32, 28, 16), seed=8))
    _write_dicom_series(case["image"][0], tmp_path / "gap")
    (tmp_path / "gap" / "007.dcm").unlink()
    with pytest.raises(ValueError, match=r"not evenly spaced: 5\.00 mm between 006\.dcm and 008\.dcm, 2\.50 mm"):
        read_header(tmp_path / "gap")
    _write_dicom_series(case["image"][0], tmp_path / "damaged")
    (tmp_path / "damaged" / "003.dcm").write_bytes(b"not a slice")
    with pytest.raises(ValueError, match=r"1 of its 16 \.dcm files are not slices of its series.*003\.dcm"):
        read_header(tmp_path / "damaged")


def test_training_curves_picture(tmp_path):
    from medseg.reporting.runs import plot_curves

    metrics = tmp_path / "metrics.csv"
    rows = ["epoch,step,train/loss,train/dice,val/dice_wt"] + [
        f"0,{s},{1 - s / 20},{0.9 - s / 30},{'' if s % 5 else s / 20}" for s in range(20)
    ]
    metrics.write_text("\n".join(rows) + "\n")
    png = plot_curves(metrics, tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resampled_prediction_comes_back_on_the_input_grid(tmp_path):
    """With training-time resampling (pixdim), Invertd brings the prediction back to the input's grid."""
    label = blob_label(shape=(40, 30, 20), seed=9)
    case = write_case(tmp_path, "BraTS2021_00015", label)
    result = _predictor(pixdim=(1.5, 1.5, 1.5)).predict_case(case)
    assert result.label.shape == label.shape
    np.testing.assert_allclose(result.affine, LPS_AFFINE, atol=1e-6)
    wt_pred, wt_true = result.label > 0, label > 0
    assert 2 * (wt_pred & wt_true).sum() / (wt_pred.sum() + wt_true.sum()) > 0.85


class AnySizeOracle(OracleNet):
    """The oracle as a network that takes any multiple of 8 and states its memory need."""

    size_divisor = 8

    def __init__(self, bytes_per_voxel: int = 10) -> None:
        super().__init__()
        self.bytes_per_voxel = bytes_per_voxel
        self.seen = []

    def inference_bytes(self, voxels: int) -> int:
        return voxels * self.bytes_per_voxel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[2:]))
        return super().forward(x)


def test_auto_window_is_one_pass_over_the_cropped_volume(tmp_path):
    label = blob_label(shape=(40, 30, 20), seed=3)
    case = write_case(tmp_path, "BraTS2021_00005", label)
    net = AnySizeOracle()
    predictor = Predictor(SegmentationModule(net=net, roi_size=(16, 16, 16)), device="cpu", window="auto")
    result = predictor.predict_case(case)
    np.testing.assert_array_equal(result.label, label)
    assert len(net.seen) == 1 and all(s % 8 == 0 for s in net.seen[0])  # one window, padded to the divisor
    assert predictor.window_for((40, 30, 20)) == (40, 32, 24)


def test_auto_window_shrinks_to_fit_memory(tmp_path, monkeypatch):
    from medseg.inference import segment as inference

    label = blob_label(shape=(40, 30, 20), seed=3)
    case = write_case(tmp_path, "BraTS2021_00005", label)
    net = AnySizeOracle(bytes_per_voxel=1)
    monkeypatch.setattr(inference, "available_memory", lambda device: 24 * 24 * 24 * 4 // 3)
    predictor = Predictor(
        SegmentationModule(net=net, roi_size=(16, 16, 16), sw_overlap=0.25), device="cpu", window="auto"
    )
    window = predictor.window_for(label.shape)
    assert np.prod(window) <= 24**3 and all(w % 8 == 0 for w in window)
    np.testing.assert_array_equal(predictor.predict_case(case).label, label)  # several windows, stitched
    assert len(net.seen) > 1


def test_window_choices_and_errors():
    from medseg.errors import MedsegError
    from medseg.inference.segment import check_window, largest_window
    from medseg.nets import UNETR

    net = AnySizeOracle()
    assert check_window("auto", net) == "auto"
    assert check_window(["64", "64", "32"], net) == (64, 64, 32)
    assert check_window("auto", OracleNet()) == "roi"  # no memory estimate: the training roi
    unetr = UNETR(
        in_channels=4, out_channels=3, img_size=(32, 32, 32), feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4
    )
    assert check_window("auto", unetr) == "roi"
    for bad, net_ in (("huge", net), ([60, 64, 64], net), ([64, 64], net), ([32, 32, 32], unetr)):
        with pytest.raises(MedsegError, match="window"):
            check_window(bad, net_)
    assert largest_window((100, 90, 50), 32, lambda v: True) == (128, 96, 64)
    assert largest_window((100, 90, 50), 32, lambda v: v <= 96 * 96 * 64) == (96, 96, 64)


def test_bf16_runs_the_network_under_autocast(tmp_path):
    class AutocastProbe(OracleNet):
        def forward(self, x):
            self.autocast = torch.is_autocast_enabled("cpu")
            return super().forward(x)

    label = blob_label(shape=(40, 30, 20), seed=3)
    case = write_case(tmp_path, "BraTS2021_00005", label)
    for bf16 in (False, True):
        net = AutocastProbe()
        module = SegmentationModule(net=net, roi_size=(16, 16, 16))
        predictor = Predictor(module, device="cpu", precision="bf16" if bf16 else "fp32")
        np.testing.assert_array_equal(predictor.predict_case(case).label, label)
        assert net.autocast is bf16


def test_python_api_raises_the_case_error_naming_the_file(tmp_path):
    """Predictor.predict on a damaged scan: medseg's CaseError, not MONAI's wrapping RuntimeError."""
    from medseg.errors import CaseError

    case = write_case(tmp_path, "BraTS2021_00017", blob_label(shape=(32, 28, 16), seed=8))
    damaged = Path(case["image"][2])
    damaged.write_bytes(damaged.read_bytes()[:200])
    with pytest.raises(CaseError, match=r"BraTS2021_00017.*_t2\.nii\.gz: cannot be read"):
        _predictor().predict(tmp_path / "BraTS2021_00017")
