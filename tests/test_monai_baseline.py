"""scripts/monai_baseline.py: the plain MONAI loop keeps its weights, and --weights predicts with them alone."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import blob_label, load_script, write_case


def _run(monkeypatch, *args):
    monkeypatch.setattr("sys.argv", ["monai_baseline.py", *map(str, args)])
    load_script("monai_baseline").main()


def test_weights_predict_what_the_trained_run_predicted(tmp_path, monkeypatch):
    write_case(tmp_path / "train", "BraTS2021_00001", blob_label((64, 64, 64)))
    write_case(tmp_path / "test", "BraTS2021_00002", blob_label((64, 64, 64), seed=1))
    common = ["--train", tmp_path / "train", "--test", tmp_path / "test", "--roi", 64, 64, 64]
    _run(monkeypatch, *common, "--out", tmp_path / "trained", "--steps", 2)
    assert (tmp_path / "trained" / "model.pt").is_file()
    _run(monkeypatch, *common, "--out", tmp_path / "again", "--weights", tmp_path / "trained" / "model.pt")
    first, second = (nib.load(tmp_path / run / "pred" / "BraTS2021_00002.nii.gz") for run in ("trained", "again"))
    assert np.array_equal(first.get_fdata(), second.get_fdata()) and np.allclose(first.affine, second.affine)
    assert not (tmp_path / "again" / "model.pt").exists()  # nothing trained, nothing saved


def test_missing_weights_are_named_before_any_work(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _run(
            monkeypatch,
            "--train",
            tmp_path,
            "--test",
            tmp_path,
            "--out",
            tmp_path / "o",
            "--weights",
            tmp_path / "x.pt",
        )
    assert "--weights" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bias_field_option_trains_and_predicts(tmp_path, monkeypatch):
    write_case(tmp_path / "train", "BraTS2021_00001", blob_label((64, 64, 64)))
    write_case(tmp_path / "test", "BraTS2021_00002", blob_label((64, 64, 64), seed=1))
    common = ["--train", tmp_path / "train", "--test", tmp_path / "test", "--roi", 64, 64, 64, "--steps", 1]
    _run(monkeypatch, *common, "--out", tmp_path / "n4", "--bias-field", "n4")
    written = nib.load(tmp_path / "n4" / "pred" / "BraTS2021_00002.nii.gz")
    assert written.shape == nib.load(tmp_path / "test" / "BraTS2021_00002" / "BraTS2021_00002_t1.nii.gz").shape
