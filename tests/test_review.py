"""The review page's pieces without a browser: label colours, case bundles holding the files' exact bytes,
where the viewer opens, the table worst first, the PNG colours, and the page of a fit run."""

from __future__ import annotations

import base64
import json
import re
import struct

import numpy as np
import pytest
from conftest import LPS_AFFINE, blob_label, save, write_case
from PIL import Image

from medseg.reporting.html import legend, save_overlay, write_html
from medseg.reporting.overlays import COLOURS, PALETTE, overlay
from medseg.reporting.review import focus_mm, label_table, write_bundle
from medseg.reporting.runs import read_wandb_log, validation_rows, write_run_report
from medseg.tasks import PRESETS, get_task

MODALITIES = ("t1", "t1ce", "t2", "flair")


def _rgb255(colour):
    return [round(255 * c) for c in colour]


def test_label_colours_are_the_overlays():
    """A label value takes its innermost region's colour (BraTS), or its class's."""
    table = {e["value"]: (e["name"], e["colour"]) for e in label_table(PRESETS["brats2021"])}
    assert table == {1: ("necrotic", _rgb255(COLOURS["TC"])), 2: ("edema", _rgb255(COLOURS["WT"])),
                     4: ("enhancing", _rgb255(COLOURS["ET"]))}  # fmt: skip
    organs = get_task({"name": "o", "channels": ["CT"], "labels": {"liver": 1, "spleen": 2}})
    assert [e["colour"] for e in label_table(organs)] == [_rgb255(PALETTE[0]), _rgb255(PALETTE[1])]


def _bundle_items(path):
    text = path.read_text(encoding="utf-8")
    match = re.search(r"medsegCase\((.*?), (\[.*\])\);", text, re.S)
    return json.loads(match.group(1)), {item["key"]: item for item in json.loads(match.group(2))}


def test_bundle_holds_the_exact_bytes_and_is_rewritten_only_when_files_change(tmp_path):
    case = write_case(tmp_path, "BraTS2021_00002", blob_label())
    files = {"images": [[m, p, None] for m, p in zip(MODALITIES, case["image"])], "prediction": case["label"]}
    target = tmp_path / "report" / write_bundle(tmp_path / "report", "BraTS2021_00002", files)
    case_id, items = _bundle_items(target)
    assert case_id == "BraTS2021_00002" and sorted(items) == ["image0", "image1", "image2", "image3", "prediction"]
    for key, path in [*((f"image{i}", p) for i, p in enumerate(case["image"])), ("prediction", case["label"])]:
        assert base64.b64decode(items[key]["base64"]) == open(path, "rb").read()  # what was written, byte for byte
    stamp = target.stat().st_mtime_ns
    write_bundle(tmp_path / "report", "BraTS2021_00002", files)
    assert target.stat().st_mtime_ns == stamp  # unchanged files: not rewritten
    write_bundle(tmp_path / "report", "BraTS2021_00002", {**files, "truth": case["label"]})
    assert "truth" in _bundle_items(target)[1]  # a file added (evaluate's truth): rewritten


def test_viewer_opens_at_the_centre_of_the_truth_in_world_mm(tmp_path):
    label = np.zeros((20, 16, 10), np.uint8)
    label[4:7, 10:13, 2:5] = 2  # centre voxel (5, 11, 3)
    path = save(tmp_path / "t.nii.gz", label)
    expected = LPS_AFFINE @ np.array([5.0, 11.0, 3.0, 1.0])
    np.testing.assert_allclose(focus_mm({"truth": str(path)}), expected[:3], atol=0.01)
    assert focus_mm({"truth": str(save(tmp_path / "e.nii.gz", label * 0))}) is None


def test_scored_page_lists_worst_first_and_carries_each_case(tmp_path):
    case = write_case(tmp_path, "BraTS2021_00003", blob_label())
    files = {"images": [[m, p, None] for m, p in zip(MODALITIES, case["image"])], "prediction": case["label"],
             "truth": case["label"]}  # fmt: skip
    scores = [
        {"dice_tc": d, "dice_mean": d, "lesions_tp_tc": 1, "lesions_fn_tc": 2, "lesions_fp_tc": 0} for d in (0.9, 0.2)
    ]
    rows = [
        {"case_id": f"c{i}", "TC": 1.0, "WT": 2.0, "ET": 0.5, "files": files, "metrics": m}
        for i, m in enumerate(scores)
    ]
    page = write_html(tmp_path / "report", rows, task=PRESETS["brats2021"]).read_text(encoding="utf-8")
    assert page.index("data-case='c1'") < page.index("data-case='c0'")  # Dice 0.2 first
    assert "<th data-key='dice_tc'>Dice TC</th>" in page and "<td data-sort='2'>1/2/0</td>" in page
    data = json.loads(re.search(r'id="medseg-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert sorted(data["cases"]) == ["c0", "c1"] and data["cases"]["c0"]["truth"] == "truth"
    assert [c["name"] for c in data["cases"]["c0"]["channels"]] == list(MODALITIES)
    for asset in ("niivue.umd.js", "review.js", "review.css", "NIIVUE_LICENSE.txt", "cases/c0.js"):
        assert (tmp_path / "report" / asset).is_file(), asset


def test_overlay_edges_are_exactly_the_legend_colours_and_insides_blend_once():
    grey = np.linspace(0, 1, 20 * 20).reshape(20, 20)
    masks = np.zeros((3, 20, 20))  # TC, WT, ET nested
    masks[1, 3:17, 3:17] = 1
    masks[0, 6:14, 6:14] = 1
    masks[2, 8:12, 8:12] = 1
    rgb = overlay(grey, masks, alpha=0.4)
    colours = {tuple(c) for _, c in legend(("TC", "WT", "ET"))}
    assert tuple(rgb[8, 10]) == COLOURS["ET"] and tuple(rgb[3, 10]) == COLOURS["WT"]  # edges, unblended
    assert tuple(rgb[6, 10]) in colours
    base = np.clip((grey - np.percentile(grey, 1)) / (np.percentile(grey, 99) - np.percentile(grey, 1)), 0, 1)
    np.testing.assert_allclose(rgb[10, 10], 0.6 * base[10, 10] + 0.4 * np.array(COLOURS["ET"]))  # one blend


def test_png_gains_a_truth_row_when_labels_exist(tmp_path):
    image = np.random.default_rng(0).random((1, 24, 20, 12))
    masks = np.zeros((3, 24, 20, 12), bool)
    masks[:, 8:16, 6:14, 3:9] = True
    alone = Image.open(save_overlay(image, masks, tmp_path / "p.png", "case"))
    both = Image.open(save_overlay(image, masks, tmp_path / "b.png", "case", label=masks))
    assert both.height > alone.height * 1.5


def test_predict_then_evaluate_report_has_truth_scores_and_scans(tmp_path, monkeypatch):
    from test_inference import _predictor

    from medseg.commands import evaluate, predict

    write_case(tmp_path / "cases", "BraTS2021_00021", blob_label(shape=(32, 28, 16), seed=2))
    monkeypatch.setattr(predict.Predictor, "from_checkpoints", classmethod(lambda cls, *a, **k: _predictor()))
    out = tmp_path / "pred"
    assert predict.main([str(tmp_path / "cases"), "--ckpt", "x.ckpt", "--out", str(out), "--report"]) == 0
    assert evaluate.main(["--pred", str(out), "--label", str(tmp_path / "cases"), "--report", "--no-hd95"]) == 0
    (row,) = json.loads((out / "report" / "cases.json").read_text(encoding="utf-8"))
    assert row["metrics"]["dice_mean"] == 1.0 and row["files"]["truth"].endswith("BraTS2021_00021_seg.nii.gz")
    assert [c[0] for c in row["files"]["images"]] == list(MODALITIES)
    assert set(_bundle_items(out / "report" / "cases" / "BraTS2021_00021.js")[1]) >= {"image3", "prediction", "truth"}
    assert "Dice WT" in (out / "report" / "index.html").read_text(encoding="utf-8")


def _wandb_file(path, histories):
    """A .wandb run file as wandb writes it: the header, then one full chunk per record in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    chunks = b""
    for history in histories:
        record = wandb_internal_pb2.Record()
        for key, value in history.items():
            record.history.item.add(key=key, value_json=json.dumps(value))
        data = record.SerializeToString()
        chunks += struct.pack("<IHB", 0, len(data), 1) + data
    path.write_bytes(b":W&B" + struct.pack("<HB", 0xBEE1, 0) + chunks)
    return path


def test_run_page_from_csv_and_wandb_logs(tmp_path):
    histories = [{"trainer/global_step": s, "epoch": 0, "train/loss": 1 - s / 10} for s in range(5)]
    histories.append({"trainer/global_step": 4, "epoch": 0, "val/dice_wt": 0.5, "val/dice_mean": 0.4})
    (tmp_path / "w" / "wandb" / "offline-run-1").mkdir(parents=True)
    rows = read_wandb_log(_wandb_file(tmp_path / "w" / "wandb" / "offline-run-1" / "run-1.wandb", histories))
    assert rows[0] == {"step": 0.0, "epoch": 0.0, "train/loss": 1.0}
    assert validation_rows(rows) == [{"step": 4.0, "epoch": 0.0, "val/dice_wt": 0.5, "val/dice_mean": 0.4}]
    log = tmp_path / "c" / "lightning_logs" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,step,train/loss,val/dice_mean\n0,9,0.5,\n0,9,,0.7\n1,19,0.4,\n1,19,,0.8\n", encoding="utf-8")
    for run in ("w", "c"):
        page = write_run_report(tmp_path / run).read_text(encoding="utf-8")
        assert "training_curves.png" in page and "<th data-key='val/dice_mean'>" in page
        assert (tmp_path / run / "report" / "training_curves.png").is_file()
    assert "<td data-sort='0.8'>0.8000</td>" in page


def test_run_page_of_a_wrong_folder_is_one_error_and_creates_nothing(tmp_path):
    from medseg.errors import LayoutError

    (tmp_path / "empty").mkdir()
    for run, message in ((tmp_path / "nope", "does not exist"), (tmp_path / "empty", "no training log")):
        with pytest.raises(LayoutError, match=message):
            write_run_report(run)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty"]
