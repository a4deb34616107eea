"""The HTML review page and its volumes for any task: a column per output, named as the task names it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.reporting.html import region_volumes_ml, write_html
from medseg.tasks import PRESETS, get_task

HEAD_KEYS = {
    "abdomen": ["case_id", "ml liver", "ml spleen", "ml left kidney"],
    "brats": ["case_id", "ml TC", "ml WT", "ml ET"],
}
ABDOMEN = get_task({"name": "abdomen", "channels": ["CT"], "labels": {"liver": 1, "left kidney": 3, "spleen": 2}})


def test_volumes_per_output():
    label = np.zeros((4, 5, 6), np.uint8)
    label[0] = 1  # 30 voxels liver
    label[1, :2] = 3  # 12 voxels left kidney; no spleen
    assert region_volumes_ml(label, ABDOMEN, voxel_ml=0.5) == {"liver": 15.0, "spleen": 0.0, "left kidney": 6.0}
    label[2, 0, 0] = 4  # BraTS 2021: ET in TC and WT; necrosis (1) in both
    volumes = region_volumes_ml(label, PRESETS["brats2021"], voxel_ml=2.0)
    assert volumes == {"TC": 62.0, "WT": 62.0, "ET": 2.0}
    assert region_volumes_ml(label % 4, PRESETS["brats2024-gli-post"], 1.0)["RC"] == 0.0


def test_html_columns_follow_the_task(tmp_path):
    """A column per output as the task names it, in the table of cases and in the summary."""
    names = list(ABDOMEN.outputs)
    rows = [{"case_id": "abd_1", **dict(zip(names, (1.0, 2.0, 3.0))), "overlay": None}]
    summary = {f"{metric}_{key}": {"mean": 0.5, "std": 0.1, "median": 0.5, "n": 1}
               for metric in ("dice", "hd95") for key in ("liver", "spleen", "left_kidney", "mean")}  # fmt: skip
    summary["task"] = ABDOMEN.to_dict()
    (tmp_path / "metrics_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    page = write_html(tmp_path, rows, tmp_path / "metrics_summary.json").read_text(encoding="utf-8")
    heads = ["case", "liver ml", "spleen ml", "left kidney ml"]
    assert "".join(f"<th data-key='{k}'>{h}</th>" for k, h in zip(HEAD_KEYS["abdomen"], heads)) in page
    assert "<td data-sort='1'>1.0</td><td data-sort='2'>2.0</td><td data-sort='3'>3.0</td>" in page
    assert "<th>class</th>" in page and "<tr><td>left kidney</td><td>0.5000 ± 0.1000</td>" in page
    assert "<td>TC</td>" not in page


@pytest.mark.parametrize("with_task", [True, False])
def test_html_brats_columns_unchanged(tmp_path, with_task):
    """A BraTS page looks as it always did, from a summary with or without its task recorded."""
    rows = [{"case_id": "BraTS2021_00001", "TC": 1.25, "WT": 3.5, "ET": 0.5, "overlay": "BraTS2021_00001.png"}]
    summary = {f"{m}_{r}": {"mean": 0.5, "std": 0.1} for m in ("dice", "hd95") for r in ("tc", "wt", "et", "mean")}
    if with_task:
        summary["task"] = PRESETS["brats2021"].to_dict()
    (tmp_path / "s.json").write_text(json.dumps(summary), encoding="utf-8")
    page = write_html(tmp_path, rows, tmp_path / "s.json").read_text(encoding="utf-8")
    heads = ["case", "TC ml", "WT ml", "ET ml"]
    assert "".join(f"<th data-key='{k}'>{h}</th>" for k, h in zip(HEAD_KEYS["brats"], heads)) in page
    assert "<td data-sort='1.25'>1.2</td><td data-sort='3.5'>3.5</td><td data-sort='0.5'>0.5</td>" in page
    assert "<th>region</th>" in page
    metric_rows = [line.split("</td>")[0] for line in page.splitlines() if line.startswith("<tr><td>")][:4]
    assert metric_rows == ["<tr><td>TC", "<tr><td>WT", "<tr><td>ET", "<tr><td>mean"]


def test_legend_names_each_output_in_its_overlay_colour():
    from medseg.reporting.html import legend
    from medseg.reporting.overlays import COLOURS, PALETTE

    assert legend(("TC", "WT", "ET")) == [
        ("whole tumour (edema)", COLOURS["WT"]), ("tumour core", COLOURS["TC"]), ("enhancing tumour", COLOURS["ET"])
    ]  # fmt: skip
    assert legend(("liver", "spleen")) == [("liver", PALETTE[0]), ("spleen", PALETTE[1])]
