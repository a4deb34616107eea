"""scripts/hard_ceiling.py: its oracles read the generator's hidden draws without changing the case."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import load_script

from medseg.data.demo import generate_case


def test_draw_sees_the_hidden_label_and_taper():
    case = load_script("hard_ceiling").draw(3, seed=5)
    clean_wt = case["clean"] > 0
    # the label ends where the edema's weight falls below the case's threshold (demo_hard_render.edema_taper)
    assert np.array_equal((case["taper"] >= case["threshold"]) & case["brain"] | case["core"], clean_wt)
    assert 0 < (case["label"] != case["clean"]).mean() < 0.05  # about a voxel of annotation noise
    assert case["edema_flair"][0] == 0 and (case["edema_flair"][1:] > 0).all()


def test_main_prints_each_oracle_and_a_prediction(tmp_path, monkeypatch, capsys):
    written = generate_case("BraTS2021_00003", seed=(5, 3), difficulty="hard")
    nib.save(nib.Nifti1Image(written.label, written.affine), tmp_path / "BraTS2021_00003.nii.gz")
    argv = ["hard_ceiling.py", "--cases", "1", "--start-index", "3", "--seed", "5", "--pred", str(tmp_path)]
    monkeypatch.setattr("sys.argv", [*argv, "--lesion-wise"])
    load_script("hard_ceiling").main()
    out = capsys.readouterr().out
    assert "WT precision 1.00, recall 1.00" in out  # the hooks change nothing: the written label is the truth
    for name in ("clean:", "fixed:", "local:"):
        assert name in out
    clean = float(out.split("clean: ")[1].split("mean ")[1].split()[0])
    assert 0.5 < clean < 1.0
    assert "clean, lesions found/missed/false positive: TC " in out
    lesion = float(out.split("clean, lesion-wise: ")[1].split("mean ")[1].split()[0])
    assert 0.0 < lesion <= 1.0


def test_a_missing_prediction_is_named_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["hard_ceiling.py", "--cases", "2", "--pred", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        load_script("hard_ceiling").main()
    assert exit_info.value.code == 2
    assert "no BraTS2021_10000.nii.gz (2 of 2 cases missing)" in capsys.readouterr().err
