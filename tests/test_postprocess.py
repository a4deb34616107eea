"""Post-processing on synthetic masks: specks removed by volume (26-connected), small ET relabelled as core,
thresholds chosen only where they raise the mean Dice; applied by the Predictor."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import blob_label, write_case

from medseg.errors import MedsegError
from medseg.inference.postprocess import (
    check_postprocess,
    choose_and_score,
    choose_postprocessing,
    postprocess_masks,
    remove_small_components,
)

BRATS = ("TC", "WT", "ET")
SPACING = (2.0, 2.0, 2.0)  # 8 mm^3 = 0.008 ml per voxel
VOXEL_ML = 0.008


def _blob(shape=(30, 30, 30), corner=(5, 5, 5), side=8) -> np.ndarray:
    mask = np.zeros(shape, bool)
    x, y, z = corner
    mask[x : x + side, y : y + side, z : z + side] = True
    return mask


def _with_specks(mask: np.ndarray, n: int, shift: int = 0) -> np.ndarray:
    """``mask`` plus ``n`` isolated single voxels (false positives), two voxels apart and away from it."""
    out = mask.copy()
    for k in range(n):
        out[18 + 3 * (k % 4), 20 + 3 * (k // 4), 20 + shift] = True
    return out


def test_specks_below_the_threshold_go_larger_ones_stay():
    mask = _blob(side=4)  # 64 voxels
    mask[20, 20, 20] = True  # 1 voxel
    mask[25:27, 25:27, 25:27] = True  # 8 voxels
    mask[10, 10, 10] = mask[11, 11, 11] = True  # two corner-touching voxels: one 26-connected component of 2
    kept = remove_small_components(mask, min_voxels=8)
    assert kept[5:9, 5:9, 5:9].all() and kept[25:27, 25:27, 25:27].all()
    assert not kept[20, 20, 20] and not kept[10, 10, 10] and kept.sum() == 64 + 8
    assert remove_small_components(mask, min_voxels=2)[10, 10, 10]  # 26-connected: the pair counts as 2
    # by volume, per output: 8 voxels = 0.064 ml, kept at 0.064 ml, gone at 0.065 ml; other outputs untouched
    masks = np.stack([mask, mask, mask])
    out = postprocess_masks(masks, BRATS, VOXEL_ML, {"min_component_ml": {"WT": 0.064, "TC": 0.065}})
    assert out[1].sum() == 64 + 8 and out[0].sum() == 64 and (out[2] == mask).all()


def test_small_enhancing_tumour_becomes_core():
    tc, wt, et = _blob(side=6), _blob(side=8), np.zeros((30, 30, 30), bool)
    et[7:9, 7:9, 7:9] = True  # 8 voxels = 0.064 ml of ET inside the core
    masks = np.stack([tc, wt, et])
    config = {"et_to_tc_below_ml": 0.1}
    out = postprocess_masks(masks, BRATS, VOXEL_ML, config)
    assert not out[2].any() and (out[0] == tc).all() and (out[1] == wt).all()  # ET gone, kept in TC and WT
    big = postprocess_masks(masks, BRATS, VOXEL_ML, {"et_to_tc_below_ml": 0.05})
    assert (big == masks).all()  # 0.064 ml is not below 0.05 ml
    from medseg.tasks import get_task

    label = get_task("brats2021").from_masks(out).numpy()
    assert set(np.unique(label[et]).tolist()) == {1}  # written as necrotic core, not 4


def test_configuration_errors_name_the_problem():
    assert check_postprocess({"min_component_ml": {"WT": "0.5"}}, BRATS) == {"min_component_ml": {"WT": 0.5}}
    with pytest.raises(MedsegError, match=r"names \['liver'\]; the model's outputs are TC, WT, ET"):
        check_postprocess({"min_component_ml": {"liver": 1}}, BRATS)
    with pytest.raises(MedsegError, match="unknown keys"):
        check_postprocess({"min_size": 1}, BRATS)
    with pytest.raises(MedsegError, match="needs outputs ET and TC; the model has liver"):
        check_postprocess({"et_to_tc_below_ml": 0.3}, ("liver",))
    with pytest.raises(MedsegError, match="min_component_ml.WT: expected a volume in ml >= 0"):
        check_postprocess({"min_component_ml": {"WT": -1}}, BRATS)


def test_choose_postprocessing_keeps_only_what_helps():
    truths = [np.stack([_blob(corner=(4 + i, 5, 5)), _blob(corner=(5, 4 + i, 5))]) for i in range(3)]
    preds = [np.stack([_with_specks(t[0], 6, shift=i), t[1]]) for i, t in enumerate(truths)]  # A: specks, B: exact
    candidates = ["none", 0.004, 0.01, 0.1, 5.0]
    chosen = choose_postprocessing(preds, truths, ("A", "B"), SPACING, candidates)
    # 0.004 ml is half a voxel (removes nothing); 0.01 and 0.1 both remove the 1-voxel specks (the
    # smallest that helps wins ties); 5 ml would remove the 4.1 ml blob too
    assert chosen == {"min_component_ml": {"A": 0.01}}
    clean = [np.stack([t[0], t[1]]) for t in truths]
    assert choose_postprocessing(clean, truths, ("A", "B"), SPACING, candidates) == {}  # nothing helps: none

    # ET: a speck of ET where the truth has none costs the case's whole ET Dice; relabelling it as core helps
    tc_wt_et = [np.stack([t[0], t[0], np.zeros_like(t[0])]) for t in truths]
    pred_et = [m.copy() for m in tc_wt_et]
    pred_et[0][2, 6, 6, 6] = True
    chosen = choose_postprocessing(pred_et, tc_wt_et, BRATS, SPACING, ["none"], et_to_tc_candidates=[0.05])
    assert chosen == {"et_to_tc_below_ml": 0.05}


def test_predictor_applies_a_postprocess_file(tmp_path):
    """Through the Predictor on the input grid: a lone false-positive voxel in WT is removed."""
    from test_inference import _predictor

    label = blob_label(shape=(32, 28, 16), seed=4)
    label[5, 6, 4] = 2  # a lone edema voxel: the oracle network predicts it, post-processing removes it
    case = write_case(tmp_path / "cases", "BraTS2021_00031", label)
    assert _predictor().predict_case(case).label[5, 6, 4] == 2
    config = tmp_path / "postprocess.json"
    config.write_text(json.dumps({"min_component_ml": {"WT": 0.01}}))  # voxels here are 2.7 mm^3
    cleaned = _predictor(postprocess=config).predict_case(case).label
    assert cleaned[5, 6, 4] == 0
    np.testing.assert_array_equal(np.delete(cleaned.ravel(), np.ravel_multi_index((5, 6, 4), label.shape)),
                                  np.delete(label.ravel(), np.ravel_multi_index((5, 6, 4), label.shape)))  # fmt: skip
    config.write_text(json.dumps({"min_component_ml": {"NET": 1}}))
    with pytest.raises(MedsegError, match="postprocess.json: min_component_ml names"):
        _predictor(postprocess=config)


def test_the_objective_decides_what_a_threshold_is_worth():
    # truth: a 512-voxel lesion and a 27-voxel satellite; prediction: both, plus three 1-voxel specks. Removing
    # components below 0.3 ml (37 voxels) loses the satellite (voxel-wise Dice falls) but also the three
    # false-positive lesions (lesion-wise Dice rises from 2/5 to 1/2): each objective chooses its own way
    truth = _blob()
    truth[22:25, 5:8, 5:8] = True
    pred = _with_specks(truth, 3)
    preds, truths, candidates = [pred[None]], [truth[None]], ["none", 0.3]
    assert choose_postprocessing(preds, truths, ("A",), SPACING, candidates, objective="dice") == {}
    for objective in ("lesion", "both"):
        chosen = choose_postprocessing(preds, truths, ("A",), SPACING, candidates, objective=objective)
        assert chosen == {"min_component_ml": {"A": 0.3}}, objective
    with pytest.raises(ValueError, match="objective must be one of dice, lesion, both"):
        choose_postprocessing(preds, truths, ("A",), SPACING, candidates, objective="hd95")


def test_choose_and_score_reports_the_gain_of_what_it_chose():
    truth = _blob(side=10)  # 1000 voxels = 8 ml at 2 mm
    preds = [np.stack([_with_specks(truth, 6, shift=k)] * 3) for k in range(3)]
    truths = [np.stack([truth] * 3) for _ in range(3)]
    config, scores = choose_and_score(preds, truths, BRATS, [SPACING, SPACING, (2.0, 2.0, 2.1)], "lesion")
    assert config["min_component_ml"] == {"TC": 0.1, "WT": 0.1, "ET": 0.1}  # the smallest that removes the specks
    for before, after in scores.values():
        assert before == pytest.approx(1 / 7) and after == pytest.approx(1.0)  # 1 lesion and 6 false positives


def test_postprocess_command_chooses_on_validation_cases_and_predict_applies_it(tmp_path, capsys):
    from test_ensemble import validation_run

    from medseg.cli import main as cli

    ckpt = validation_run(tmp_path)
    ckpt_dir = ckpt.parent
    assert cli(["postprocess", str(tmp_path / "val"), "--ckpt", str(ckpt), "--objective", "dice"]) == 0
    printed = capsys.readouterr().out
    stored = json.loads((ckpt_dir / "postprocess.json").read_text(encoding="utf-8"))
    assert f"wrote {ckpt_dir / 'postprocess.json'}" in printed and "2 case(s)" in printed
    for name in BRATS:
        found = re.search(rf"{name}: dice score ([\d.]+) without, ([\d.]+) with", printed)
        before, after = float(found[1]), float(found[2])
        assert after >= before
    check_postprocess(stored, BRATS)  # what predict will load
    write_case(tmp_path / "test", "BraTS2021_00009", blob_label(seed=9), seed=9)
    assert cli(["predict", str(tmp_path / "test"), "--ckpt", str(ckpt), "--out", str(tmp_path / "pred")]) == 0
    assert "post-processing: " in capsys.readouterr().out


def test_postprocess_command_without_labelled_cases_is_one_clear_error(tmp_path):
    from test_ensemble import tiny_net, write_ckpt

    from medseg.commands.postprocess import main

    ckpt = write_ckpt(tmp_path / "last.ckpt", tiny_net(0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsegError, match="empty"):
        main([str(tmp_path / "empty"), "--ckpt", str(ckpt)])


def test_data_may_follow_the_checkpoints(tmp_path, capsys):
    from test_ensemble import validation_run

    from medseg.commands.postprocess import main

    ckpt = validation_run(tmp_path, n_cases=1)
    out = tmp_path / "chosen.json"
    assert main(["--ckpt", str(ckpt), str(tmp_path / "val"), "--objective", "dice", "--out", str(out)]) == 0
    assert out.is_file() and "1 case(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a checkpoint alone: DATA is missing, said by argparse
        main(["--ckpt", str(ckpt)])
    assert "required: DATA" in capsys.readouterr().err
