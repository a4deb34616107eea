"""evaluate_folder and its CLI on tiny NIfTI folders with hand-computed metrics."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main as medseg_main
from medseg.errors import CaseError, LayoutError
from medseg.evaluation import evaluate_folder, format_table
from medseg.metrics.segmentation import HD95_PENALTY_MM


def save(path, data, spacing=(1.0, 1.0, 1.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.uint8), np.diag([*spacing, 1.0])), path)


def brats2021_label() -> np.ndarray:
    """[6, 6, 6]: ET (4) block x 1-2, necrosis (1) slab x 3, edema (2) slab x 4, all over y, z in 1-2.

    TC = 12 voxels (x 1-3), WT = 16 (x 1-4), ET = 8 (x 1-2); every voxel is on its region's surface.
    """
    label = np.zeros((6, 6, 6), np.uint8)
    label[1:3, 1:3, 1:3] = 4
    label[3, 1:3, 1:3] = 1
    label[4, 1:3, 1:3] = 2
    return label


@pytest.fixture
def flat(tmp_path):
    """Two unnamed cases in flat folders, BraTS 2021 values.

    case_a at spacing (2, 2, 3) mm: edema missed, one ET corner voxel predicted as necrosis
        TC: same 12 voxels -> Dice 1, HD95 0
        WT: 12 of 16 -> Dice 24/28; the 4 missed voxels are 1 voxel (2 mm along x) away, 4 of 16
            label-to-prediction distances are 2 mm -> P95 = 2 mm
        ET: 7 of 8 -> Dice 14/15; label-to-prediction distances: seven 0, one 2 mm (the corner's nearest
            neighbours: 2 mm along x or y, 3 along z) -> P95 at rank 0.95 * 7 = 6.65 -> 0.65 * 2 = 1.3 mm
    case_b at 1 mm: ET predicted as necrosis -> TC, WT perfect; ET missed: Dice 0, HD95 the penalty
    """
    label = brats2021_label()
    pred_a = label.copy()
    pred_a[4] = 0
    pred_a[1, 1, 1] = 1
    pred_b = np.where(label == 4, 1, label)
    save(tmp_path / "labels" / "case_a.nii.gz", label, spacing=(2.0, 2.0, 3.0))
    save(tmp_path / "labels" / "case_b.nii.gz", label)
    save(tmp_path / "preds" / "case_a.nii.gz", pred_a, spacing=(2.0, 2.0, 3.0))
    save(tmp_path / "preds" / "case_b.nii.gz", pred_b)
    return tmp_path


EXPECTED = {  # see the fixture `flat`
    "case_a": {
        "dice_tc": 1.0,
        "dice_wt": 24 / 28,
        "dice_et": 14 / 15,
        "hd95_tc": 0.0,
        "hd95_wt": 2.0,
        "hd95_et": 1.3,
    },
    "case_b": {
        "dice_tc": 1.0,
        "dice_wt": 1.0,
        "dice_et": 0.0,
        "hd95_tc": 0.0,
        "hd95_wt": 0.0,
        "hd95_et": HD95_PENALTY_MM,
    },
}


def test_csv_matches_hand_computed_values(flat):
    rows, summary = evaluate_folder(flat / "preds", flat / "labels")
    with open(flat / "preds" / "metrics_per_case.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["case_id", "dice_tc", "dice_wt", "dice_et", "dice_mean",
                                "hd95_tc", "hd95_wt", "hd95_et", "hd95_mean"]  # fmt: skip
    assert [row["case_id"] for row in written] == ["case_a", "case_b"]
    for row, returned in zip(written, rows):
        expected = EXPECTED[row["case_id"]]
        for key, value in expected.items():
            assert float(row[key]) == pytest.approx(value, rel=1e-5), (row["case_id"], key)  # 6 digits written
            assert returned[key] == pytest.approx(value, rel=1e-5)
        assert float(row["dice_mean"]) == pytest.approx(np.mean([expected[f"dice_{r}"] for r in ("tc", "wt", "et")]))

    assert summary["convention"] == "brats2021"  # 4 present in an unnamed folder
    assert summary["dice_et"] == pytest.approx({"mean": 7 / 15, "std": 7 / 15, "median": 7 / 15, "n": 2})
    assert summary["hd95_et"]["mean"] == pytest.approx((1.3 + HD95_PENALTY_MM) / 2)
    assert (summary["n_cases"], summary["n_missing"], summary["missing"]) == (2, 0, [])
    written = (flat / "preds" / "metrics_summary.json").read_text(encoding="utf-8")
    assert json.loads(written) == summary  # floats round-trip exactly
    assert not [p for p in (flat / "preds").iterdir() if p.name.endswith(".tmp")]


def test_no_hd95_and_out_dir(flat):
    rows, summary = evaluate_folder(flat / "preds", flat / "labels", hd95=False, out_dir=flat / "out")
    assert list(rows[0]) == ["case_id", "dice_tc", "dice_wt", "dice_et", "dice_mean"]
    assert (flat / "out" / "metrics_per_case.csv").is_file()
    assert not (flat / "preds" / "metrics_per_case.csv").exists()
    assert "HD95" not in format_table(summary)


@pytest.mark.parametrize(
    ("case", "seg_name", "et", "convention"),
    [
        ("BraTS2021_00001", "BraTS2021_00001_seg.nii.gz", 4, "brats2021"),
        ("BraTS-GLI-00001-000", "BraTS-GLI-00001-000-seg.nii.gz", 3, "brats2023"),
    ],
)
def test_brats_folder_layout_and_convention_from_case_ids(tmp_path, case, seg_name, et, convention):
    label = np.where(brats2021_label() == 4, et, brats2021_label())
    save(tmp_path / "data" / case / seg_name, label)
    save(tmp_path / "data" / case / f"{case}_t1.nii.gz", label)  # images beside the label are not labels
    save(tmp_path / "preds" / f"{case}.nii.gz", label)
    rows, summary = evaluate_folder(tmp_path / "preds", tmp_path / "data")
    assert summary["convention"] == convention
    assert [row["case_id"] for row in rows] == [case]
    assert rows[0]["dice_mean"] == 1.0 and rows[0]["hd95_mean"] == 0.0


@pytest.mark.parametrize("subdir", ["", "labelsTr"])
def test_nnunet_labelstr_layout(tmp_path, subdir):
    msd = np.zeros((5, 5, 5), np.uint8)
    msd[1:4, 1:4, 1:4] = 1  # edema
    msd[2, 2, 1:3] = 3  # enhancing
    save(tmp_path / "Task01" / "labelsTr" / "BRATS_001.nii.gz", msd)
    (tmp_path / "Task01" / "labelsTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS junk shipped with MSD")
    save(tmp_path / "preds" / "BRATS_001.nii.gz", msd)
    rows, summary = evaluate_folder(tmp_path / "preds", tmp_path / "Task01" / subdir, convention="msd")
    assert rows[0]["dice_tc"] == rows[0]["dice_et"] == 1.0
    assert summary["pred_convention"] == "msd"


def test_pred_convention_differs_from_labels(tmp_path):
    label = brats2021_label()
    save(tmp_path / "labels" / "x.nii.gz", label)
    save(tmp_path / "preds" / "x.nii.gz", np.where(label == 4, 3, label))  # written as BraTS 2023
    rows, _ = evaluate_folder(tmp_path / "preds", tmp_path / "labels", pred_convention="brats2023")
    assert rows[0]["dice_mean"] == 1.0
    with pytest.raises(CaseError, match=r"prediction holds values \[3\].*brats2021"):
        evaluate_folder(tmp_path / "preds", tmp_path / "labels")


def test_missing_prediction_is_listed_and_exits_1(flat, capsys):
    (flat / "preds" / "case_b.nii.gz").unlink()
    save(flat / "preds" / "stray.nii.gz", brats2021_label())
    assert medseg_main(["evaluate", "--pred", str(flat / "preds"), "--label", str(flat / "labels")]) == 1
    out, err = capsys.readouterr()
    assert "1 MISSING" in out and "case_b" in out
    assert "ignored 1 prediction(s) without a label: stray" in out
    assert "1 labelled case(s) have no prediction: case_b" in err
    summary = json.loads((flat / "preds" / "metrics_summary.json").read_text(encoding="utf-8"))
    assert (summary["n_cases"], summary["n_missing"], summary["missing"]) == (1, 1, ["case_b"])


def test_shape_mismatch_names_both_files(flat, capsys):
    save(flat / "preds" / "case_b.nii.gz", np.zeros((6, 6, 5)))
    with pytest.raises(CaseError, match=r"case case_b: prediction .*preds/case_b.nii.gz.*label .*labels/case_b.nii.gz"):
        evaluate_folder(flat / "preds", flat / "labels")
    assert medseg_main(["evaluate", "--pred", str(flat / "preds"), "--label", str(flat / "labels")]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("medseg: error: case case_b: prediction")
    assert "shape (6, 6, 5)" in errors[0] and "Traceback" not in err


def test_affine_mismatch_is_refused(flat):
    save(flat / "preds" / "case_b.nii.gz", brats2021_label(), spacing=(1.0, 1.0, 1.5))
    with pytest.raises(CaseError, match="different affines"):
        evaluate_folder(flat / "preds", flat / "labels")


def test_values_only_3_ask_for_convention(tmp_path):
    label = np.where(brats2021_label() == 4, 3, brats2021_label())
    save(tmp_path / "labels" / "case_x.nii.gz", label)
    save(tmp_path / "preds" / "case_x.nii.gz", label)
    with pytest.raises(LayoutError, match=r"case_x.nii.gz holds labels \[0, 1, 2, 3\].*--convention"):
        evaluate_folder(tmp_path / "preds", tmp_path / "labels")
    rows, _ = evaluate_folder(tmp_path / "preds", tmp_path / "labels", convention="brats2023")
    assert rows[0]["dice_mean"] == 1.0


def test_value_outside_forced_convention_names_file_and_values(flat):
    with pytest.raises(CaseError, match=r"labels/case_a.nii.gz: label holds values \[4\].*brats2023"):
        evaluate_folder(flat / "preds", flat / "labels", convention="brats2023")


def test_refuses_to_write_into_label_folder(flat):
    with pytest.raises(LayoutError, match="label folder"):
        evaluate_folder(flat / "preds", flat / "labels", out_dir=flat / "labels")


def test_cli_prints_table_and_paths(flat, capsys):
    assert (
        medseg_main(
            ["evaluate", "--pred", str(flat / "preds"), "--label", str(flat / "labels"), "--out", str(flat / "o")]
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["region", "Dice", "mean", "±", "std", "HD95", "(mm)", "mean", "±", "std"]
    assert [line.split()[0] for line in lines[1:5]] == ["TC", "WT", "ET", "mean"]
    assert lines[3].split()[1:4] == [f"{7 / 15:.4f}", "±", f"{7 / 15:.4f}"]  # ET Dice
    assert lines[5] == "2 cases"
    assert str(flat / "o" / "metrics_per_case.csv") in out and str(flat / "o" / "metrics_summary.json") in out


def test_cli_bad_folder_and_help(tmp_path, capsys):
    assert medseg_main(["evaluate", "--pred", str(tmp_path / "nope"), "--label", str(tmp_path)]) == 1
    assert "prediction folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        medseg_main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for needle in ("labelsTr", "_seg.nii.gz", "-seg.nii.gz", "brats2021", "brats2023", "msd", "--no-hd95"):
        assert needle in help_text
