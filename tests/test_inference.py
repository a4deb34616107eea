"""Predictions land on the input grid voxel for voxel, whatever the input's orientation and spacing."""

import json

import nibabel as nib
import pytest
import numpy as np
import torch
from torch import nn

from medseg.inference import Predictor
from medseg.modules.segmentation import SegmentationModule

from conftest import LPS_AFFINE, blob_label, write_case


class OracleNet(nn.Module):
    """Reads the regions off the first three channels (1 + indicator, normalised: positive inside).

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
    from medseg import predict

    label = blob_label(shape=(32, 28, 16), seed=4)
    write_case(tmp_path / "cases", "BraTS2021_00011", label)
    monkeypatch.setattr(predict.Predictor, "from_checkpoint", classmethod(lambda cls, *a, **k: _predictor()))
    out = tmp_path / "pred"
    assert predict.main([str(tmp_path / "cases"), "--ckpt", "unused.ckpt", "--out", str(out)]) == 0
    written = nib.load(str(out / "BraTS2021_00011.nii.gz"))
    np.testing.assert_allclose(written.affine, LPS_AFFINE, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)
    assert [p.name for p in out.iterdir()] == ["BraTS2021_00011.nii.gz"]  # no temporary file left


def test_predict_report_writes_overlays_and_html(tmp_path, monkeypatch):
    from medseg import predict, report

    label = blob_label(shape=(32, 28, 16), seed=5)
    write_case(tmp_path / "cases", "BraTS2021_00012", label)
    monkeypatch.setattr(predict.Predictor, "from_checkpoint", classmethod(lambda cls, *a, **k: _predictor()))
    out = tmp_path / "pred"
    assert predict.main([str(tmp_path / "cases"), "--ckpt", "x.ckpt", "--out", str(out), "--report"]) == 0
    png = out / "report" / "BraTS2021_00012.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report" / "index.html").read_text()
    assert "BraTS2021_00012.png" in page and "Region volumes" in page
    (row,) = json.loads((out / "report" / "cases.json").read_text())
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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["BraTS2021_00013.nii.gz", "BraTS2021_00013_prob.nii.gz"]
    assert nib.load(str(tmp_path / "out" / "BraTS2021_00013_prob.nii.gz")).shape == (*label.shape, 3)
