"""evaluate_folder for any task: organ classes named by a dataset.json, --task as a preset, a JSON or a
checkpoint, the BraTS 2024 post-treatment regions, and the errors that name the file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import save as save_nifti

from medseg.cli import main as medseg_main
from medseg.errors import CaseError, LayoutError
from medseg.evaluation import evaluate_folder
from medseg.metrics.segmentation import HD95_PENALTY_MM
from medseg.nets.pretrained import WeightsError
from medseg.tasks import PRESETS, get_task

ORGANS = {"1": "liver", "2": "spleen", "3": "left kidney", "5": "pancreas", "6": "aorta"}  # MSD form, 4 unused
KEYS = ["liver", "spleen", "left_kidney", "pancreas", "aorta"]


def save(path, data, spacing=(1.0, 1.0, 1.0)):
    save_nifti(path, np.asarray(data, np.uint8), np.diag([*spacing, 1.0]))


def organ_label() -> np.ndarray:
    """[8, 6, 5]: a slab per organ along x (liver 1-2, spleen 3, left kidney 4, pancreas 5, aorta 6)."""
    label = np.zeros((8, 6, 5), np.uint8)
    for x, value in ((1, 1), (2, 1), (3, 2), (4, 3), (5, 5), (6, 6)):
        label[x, 1:5, 1:4] = value
    return label


def organ_pred() -> np.ndarray:
    """Liver slab x 2 predicted as spleen, the aorta missed: two classes off, three right."""
    pred = organ_label()
    pred[2][pred[2] == 1] = 2
    pred[pred == 6] = 0
    return pred


@pytest.fixture
def organs(tmp_path):
    """DATA/dataset.json (MSD form, one CT channel) beside DATA/labelsTs/ (flat), two cases."""
    data = tmp_path / "DATA"
    meta = {"name": "Abdomen", "modality": {"0": "CT"}, "labels": {"0": "background", **ORGANS}}
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps(meta))
    for case in ("abd_001", "abd_002"):
        save(data / "labelsTs" / f"{case}.nii.gz", organ_label(), spacing=(1.5, 1.0, 2.0))
        save(tmp_path / "preds" / f"{case}.nii.gz", organ_pred(), spacing=(1.5, 1.0, 2.0))
    return tmp_path


def brute_force_dice(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    out = {}
    for value, key in zip((1, 2, 3, 5, 6), KEYS):
        p, lab = pred == value, label == value
        total = np.count_nonzero(p) + np.count_nonzero(lab)
        out[key] = 2 * np.count_nonzero(p & lab) / total if total else 1.0
    return out


def test_organ_classes_from_dataset_json_beside_labels_ts(organs, capsys):
    rows, summary = evaluate_folder(organs / "preds", organs / "DATA" / "labelsTs", out_dir=organs / "out")
    with open(organs / "out" / "metrics_per_case.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["case_id", *(f"dice_{k}" for k in KEYS), "dice_mean",
                                *(f"hd95_{k}" for k in KEYS), "hd95_mean"]  # fmt: skip
    expected = brute_force_dice(organ_pred(), organ_label())
    assert expected == pytest.approx({"liver": 2 / 3, "spleen": 2 / 3, "left_kidney": 1.0, "pancreas": 1.0, "aorta": 0})
    for row in rows:
        for key, value in expected.items():
            assert row[f"dice_{key}"] == pytest.approx(value, rel=1e-6)
        assert row["dice_mean"] == pytest.approx(np.mean(list(expected.values())))  # 5 foreground classes
        assert (row["hd95_left_kidney"], row["hd95_aorta"]) == (0.0, pytest.approx(HD95_PENALTY_MM))
        assert row["hd95_liver"] == pytest.approx(1.5)  # the missed slab is one voxel (1.5 mm along x) away
    assert summary["task"] == get_task(summary["task"]).to_dict()
    assert summary["task"]["classes"] == list(ORGANS.values()) and summary["task"]["channels"][0]["kind"] == "CT"
    assert summary["convention"] == summary["task"]["name"] == "Abdomen"
    assert str((organs / "DATA" / "dataset.json").resolve()) in summary["task_source"]
    assert json.loads((organs / "out" / "metrics_summary.json").read_text(encoding="utf-8")) == summary

    assert medseg_main(["evaluate", "--pred", str(organs / "preds"), "--label", str(organs / "DATA" / "labelsTs"),
                        "--out", str(organs / "o2"), "--no-hd95"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["class", "Dice"]
    assert [line[:12].strip() for line in lines[1:7]] == [*ORGANS.values(), "mean"]
    assert lines[2].split()[1] == f"{2 / 3:.4f}"  # spleen
    assert lines[8].startswith("task: Abdomen: 1 CT channel(s) (CT); classes liver, spleen")


def test_unknown_value_names_the_file(organs):
    pred = organ_pred()
    pred[0, 0, 0] = 9
    save(organs / "preds" / "abd_002.nii.gz", pred, spacing=(1.5, 1.0, 2.0))
    with pytest.raises(CaseError, match=r"case abd_002: .*preds/abd_002.nii.gz: prediction holds values \[9\]"):
        evaluate_folder(organs / "preds", organs / "DATA" / "labelsTs", hd95=False, out_dir=organs / "out")
    label = organ_label()
    label[0, 0, 0] = 4  # not among the dataset.json labels
    save(organs / "DATA" / "labelsTs" / "abd_001.nii.gz", label, spacing=(1.5, 1.0, 2.0))
    with pytest.raises(CaseError, match=r"labelsTs/abd_001.nii.gz: label holds values \[4\].*Abdomen.*dataset.json"):
        evaluate_folder(organs / "preds", organs / "DATA" / "labelsTs", hd95=False, out_dir=organs / "out")


def test_task_from_a_json_path_and_a_datalist_beside_the_labels(tmp_path):
    """--task FILE.json anywhere (nnU-Net v2 form); auto finds the one datalist with labels in the parent."""
    save(tmp_path / "d" / "labels" / "c1.nii.gz", organ_label())
    save(tmp_path / "preds" / "c1.nii.gz", organ_label())
    spec = tmp_path / "elsewhere" / "task.json"
    spec.parent.mkdir()
    named = {"background": 0, **{name: int(value) for value, name in ORGANS.items()}}
    spec.write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": named}))
    rows, summary = evaluate_folder(tmp_path / "preds", tmp_path / "d" / "labels", hd95=False, task=str(spec))
    assert rows[0] == {"case_id": "c1", **{f"dice_{k}": 1.0 for k in KEYS}, "dice_mean": 1.0}
    assert summary["convention"] == "elsewhere"  # no "name": the JSON's folder

    datalist = {"labels": {"0": "background", **ORGANS}, "training": [{"image": "x.nii.gz", "label": "y.nii.gz"}]}
    (tmp_path / "d" / "folds.json").write_text(json.dumps(datalist))
    (tmp_path / "d" / "notes.json").write_text(json.dumps({"labels": {"1": "not a datalist"}}))
    rows, summary = evaluate_folder(tmp_path / "preds", tmp_path / "d" / "labels", hd95=False)
    assert summary["task"]["classes"] == list(ORGANS.values()) and "folds.json" in summary["task_source"]
    (tmp_path / "d" / "folds2.json").write_text(json.dumps(datalist))
    with pytest.raises(LayoutError, match=r"several datalists name labels \(folds.json, folds2.json\).*--task"):
        evaluate_folder(tmp_path / "preds", tmp_path / "d" / "labels", hd95=False)


def test_task_from_a_checkpoint(tmp_path):
    task = get_task({"name": "abdomen", "channels": [{"name": "CT", "kind": "CT", "window": [-175, 250]}],
                     "labels": {n: int(v) for v, n in ORGANS.items()}})  # fmt: skip
    save(tmp_path / "labels" / "c1.nii.gz", organ_label())
    save(tmp_path / "preds" / "c1.nii.gz", organ_pred())
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "datamodule_hyper_parameters": {"task": task.to_dict()}}, ckpt)
    rows, summary = evaluate_folder(tmp_path / "preds", tmp_path / "labels", hd95=False, task=str(ckpt))
    assert summary["task"] == task.to_dict() and summary["task_source"] == f"checkpoint {ckpt}"
    assert rows[0]["dice_aorta"] == 0.0 and rows[0]["dice_left_kidney"] == 1.0

    legacy = tmp_path / "legacy.ckpt"  # written before tasks: the label convention only
    torch.save({"datamodule_hyper_parameters": {"label_convention": "brats2023"}}, legacy)
    brats = np.where(organ_label() > 3, 0, organ_label())
    save(tmp_path / "labels" / "c1.nii.gz", brats)
    save(tmp_path / "preds" / "c1.nii.gz", brats)
    _, summary = evaluate_folder(tmp_path / "preds", tmp_path / "labels", hd95=False, task=str(legacy))
    assert summary["convention"] == "brats2023" and summary["dice_mean"]["mean"] == 1.0

    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(WeightsError, match="bare.ckpt: holds no datamodule settings"):
        evaluate_folder(tmp_path / "preds", tmp_path / "labels", task=str(tmp_path / "bare.ckpt"))


def post_treatment_label() -> np.ndarray:
    """[6, 6, 6]: ET (3) x 1, NETC (1) x 2, SNFH (2) x 3, resection cavity (4) x 4, over y, z in 1-2."""
    label = np.zeros((6, 6, 6), np.uint8)
    for x, value in ((1, 3), (2, 1), (3, 2), (4, 4)):
        label[x, 1:3, 1:3] = value
    return label


def test_brats2024_post_treatment_preset_scores_the_cavity(tmp_path):
    case = "BraTS-GLI-00001-100"
    label = post_treatment_label()
    pred = label.copy()
    pred[4, 1, 1:3] = 0  # half the cavity missed
    save(tmp_path / "labels" / f"{case}.nii.gz", label)
    save(tmp_path / "preds" / f"{case}.nii.gz", pred)
    with pytest.raises(CaseError, match=rf"labels/{case}.nii.gz: label holds values \[4\].*brats2023.*case ids"):
        evaluate_folder(tmp_path / "preds", tmp_path / "labels")  # case ids alone say BraTS 2023: no cavity
    rows, summary = evaluate_folder(tmp_path / "preds", tmp_path / "labels", task="brats2024-gli-post")
    (row,) = rows
    assert list(row)[1:6] == ["dice_wt", "dice_tc", "dice_et", "dice_rc", "dice_mean"]
    assert (row["dice_wt"], row["dice_tc"], row["dice_et"]) == (1.0, 1.0, 1.0)
    assert row["dice_rc"] == pytest.approx(2 * 2 / (2 + 4))
    assert row["dice_mean"] == pytest.approx((3 + 2 / 3) / 4)
    assert row["hd95_rc"] == pytest.approx(1.0) and row["hd95_wt"] == 0.0
    assert summary["task"] == PRESETS["brats2024-gli-post"].to_dict()
    assert summary["task_source"] == "preset brats2024-gli-post"


def test_task_mistakes_are_refused(tmp_path):
    save(tmp_path / "labels" / "x.nii.gz", post_treatment_label())
    save(tmp_path / "preds" / "x.nii.gz", post_treatment_label())
    with pytest.raises(LayoutError, match="not both"):
        evaluate_folder(tmp_path / "preds", tmp_path / "labels", convention="msd", task="brats2021")
    with pytest.raises(LayoutError, match=r"unknown task 'liver'.*dataset.json"):
        evaluate_folder(tmp_path / "preds", tmp_path / "labels", task="liver")
    with pytest.raises(LayoutError, match=r"ET, RC\) cannot be scored against labels in brats2021"):
        evaluate_folder(tmp_path / "preds", tmp_path / "labels", pred_convention="brats2024-gli-post")


def test_dataset_json_without_labels_leaves_the_brats_guess(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "no labels here"}))
    label = np.where(post_treatment_label() == 3, 4, post_treatment_label() % 4)  # BraTS 2021 values
    save(tmp_path / "labels" / "x.nii.gz", label)
    save(tmp_path / "preds" / "x.nii.gz", label)
    _, summary = evaluate_folder(tmp_path / "preds", tmp_path / "labels", hd95=False)
    assert summary["convention"] == "brats2021" and summary["task_source"] == "x.nii.gz holds label 4"
