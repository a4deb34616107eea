"""The review page in a real browser: headless Chromium opens it from file://, the viewer draws the case's own
files, and the label colours show where the label is (and only there)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blob_label, save, write_case
from PIL import Image

from medseg.reporting.browser import find_browser, page_url, screenshot
from medseg.reporting.html import write_html
from medseg.reporting.review import label_table
from medseg.tasks import PRESETS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_browser() is None, reason="no Chromium to test in (apt-get install chromium)"),
]
BACK = (15, 15, 20)  # the viewer's background, backColor [0.06, 0.06, 0.08] in review.js


def _report(tmp_path):
    """One case: its truth a nested tumour, its prediction empty (so a colour can only come from the truth)."""
    label = blob_label(shape=(40, 36, 20), seed=1)
    case = write_case(tmp_path / "cases", "BraTS2021_00001", label)
    empty = save(tmp_path / "pred" / "BraTS2021_00001.nii.gz", np.zeros_like(label))
    files = {"images": [[m, p, None] for m, p in zip(("t1", "t1ce", "t2", "flair"), case["image"])],
             "prediction": str(empty), "truth": case["label"]}  # fmt: skip
    row = {"case_id": "BraTS2021_00001", "TC": 1.0, "WT": 2.0, "ET": 0.5, "files": files, "metrics": {"dice_mean": 0}}
    return write_html(tmp_path / "report", [row], task=PRESETS["brats2021"])


def _panes(shot: np.ndarray) -> list[tuple[slice, slice]]:
    """(rows, columns) of each viewer canvas, left to right: the rows holding its background colour, and in
    them the runs of columns that are not the page's near-white."""
    rows = np.flatnonzero(np.all(shot == BACK, axis=-1).sum(1) > 20)
    band = shot[rows.min() : rows.max() + 1]
    columns = np.flatnonzero(np.all(band >= 240, axis=-1).mean(0) < 0.5)
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    return [(slice(rows.min(), rows.max() + 1), slice(run.min(), run.max() + 1)) for run in runs if len(run) > 100]


def _near(pixels: np.ndarray, colour) -> np.ndarray:
    return np.all(np.abs(pixels.astype(int) - np.array(colour)) <= 12, axis=-1)


def test_viewer_shows_the_truth_in_its_colours_where_it_is(tmp_path):
    page = _report(tmp_path)
    url = page_url(page, "case=BraTS2021_00001&mode=side&opacity=1&planes=axial")
    shot = np.asarray(Image.open(screenshot(url, tmp_path / "shot.png")).convert("RGB"))
    panes = _panes(shot)
    assert len(panes) == 2, f"expected the truth and prediction canvases side by side, found {len(panes)}"
    truth, prediction = (shot[rows, cols] for rows, cols in panes)
    assert truth.std() > 10 and prediction.std() > 10, "a canvas is blank: the viewer drew no scan"
    colours = {entry["name"]: entry["colour"] for entry in label_table(PRESETS["brats2021"])}
    for name in ("edema", "enhancing"):
        found = _near(truth, colours[name])
        assert found.sum() > 30, f"no {name} colour {colours[name]} in the truth pane"
        ys, xs = np.nonzero(found)
        centre = np.array([ys.mean() / truth.shape[0], xs.mean() / truth.shape[1]])
        assert np.all(np.abs(centre - 0.5) < 0.2), f"{name} is drawn off the tumour (at {centre} of the pane)"
        assert _near(prediction, colours[name]).sum() == 0, f"{name} colour in the empty prediction's pane"
