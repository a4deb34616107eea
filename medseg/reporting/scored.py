"""Rows of the review page for scored cases (``medseg evaluate --report``): the truth beside the prediction.

Each case keeps what ``medseg predict --report`` stored for it (its scan files, volumes) and gains its truth
file, its metrics and a PNG with a truth row above the prediction row, drawn from the files on disk (both on
the scan's grid), turned to the closest RAS orientation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.evaluation import find_label_files
from medseg.io import case_output_name
from medseg.reporting.html import region_volumes_ml, save_overlay
from medseg.tasks import Task


def _canonical(path: str | Path) -> tuple[np.ndarray, float]:
    """A NIfTI file's data turned to the closest RAS orientation, and its voxel volume in ml."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.asanyarray(image.dataobj), float(np.prod(image.header.get_zooms()[:3])) / 1000.0


def _shown_scan(files: dict, shape: tuple[int, ...]) -> np.ndarray:
    """The scan channel the PNG shows (flair of four, else the first) as [X, Y, Z] RAS; zeros without one."""
    images = files.get("images") or []
    if images:
        _, path, frame = images[3] if len(images) == 4 else images[0]
        if str(path).lower().endswith((".nii", ".nii.gz")) and Path(path).is_file():
            data = _canonical(path)[0]
            data = data[..., frame] if frame is not None else data
            if data.shape[:3] == shape:
                return data.astype(np.float32)
    return np.zeros(shape, np.float32)


def scored_rows(
    report_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    metric_rows: list[dict],
    task: Task,
    pred_task: Task | None = None,
) -> list[dict]:
    """A review-page row per scored case (``metric_rows``: :func:`medseg.evaluation.evaluate_folder`'s), with
    ``files.truth``, ``metrics`` and ``overlay`` (truth and prediction rows), on top of the row stored in
    ``report_dir/cases.json`` by ``medseg predict --report`` when there is one."""
    report_dir, pred_dir = Path(report_dir), Path(pred_dir).resolve()
    store = report_dir / "cases.json"
    stored = {r["case_id"]: r for r in json.loads(store.read_text(encoding="utf-8"))} if store.exists() else {}
    labels = find_label_files(label_dir)
    rows = []
    for metrics in metric_rows:
        case = metrics["case_id"]
        row = dict(stored.get(case, {"case_id": case}))
        prediction, truth = pred_dir / case_output_name(case), labels[case].resolve()
        row["files"] = {**(row.get("files") or {}), "prediction": str(prediction), "truth": str(truth)}
        row["metrics"] = {k: v for k, v in metrics.items() if k != "case_id"}
        pred, voxel_ml = _canonical(prediction)
        label = _canonical(truth)[0]
        if not any(name in row for name in task.outputs):
            row.update(region_volumes_ml(pred, pred_task or task, voxel_ml))
        scan = _shown_scan(row["files"], pred.shape[:3])
        pred_masks = (pred_task or task).to_masks(pred.astype(np.int64)).numpy()  # [N, X, Y, Z]
        truth_masks = task.to_masks(label.astype(np.int64)).numpy()  # [N, X, Y, Z]
        png = save_overlay(scan[None], pred_masks, report_dir / f"{case}.png", case, truth_masks, task.outputs)
        row["overlay"] = png.name
        rows.append(row)
    return rows
