"""Pictures and an HTML page of a prediction run: what a person looks at before trusting the numbers.

- ``save_overlay``: a PNG per case, axial / coronal / sagittal slices through the tumour with one colour
  per region and a legend (truth on top when a label is given, prediction below);
- ``write_html``: ``index.html`` with the volume of each output (region or class) in ml per case, the
  metrics table when ``medseg evaluate`` has run, and the overlays;
- ``plot_curves``: training curves from a CSV logger's ``metrics.csv``.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from medseg.evaluation import summary_outputs
from medseg.io import atomic_path, write_atomic
from medseg.reporting.overlays import REGIONS, colours, overlay_grid
from medseg.tasks import Task

LEGEND = {"WT": "whole tumour (edema)", "TC": "tumour core", "ET": "enhancing tumour"}


def legend(names) -> list[tuple[str, tuple[float, float, float]]]:
    """(text, colour) per output as the overlays paint it: the BraTS regions outermost first, else in order."""
    palette = colours(names)
    shown = ("WT", "TC", "ET") if tuple(names) == REGIONS else tuple(names)
    return [(LEGEND.get(n, n), palette[n]) for n in shown]


def save_overlay(image, pred, path: str | Path, title: str = "", label=None, names=REGIONS) -> Path:
    """image [C, X, Y, Z] (RAS), pred / label [N, X, Y, Z] masks named ``names`` (default TC, WT, ET) -> PNG."""
    grid = overlay_grid(image, label, pred, names=names)  # [rows*H, 3*W, 3] uint8
    rows = 1 if label is None else 2
    fig, ax = plt.subplots(figsize=(9, 3.2 * rows), dpi=100)
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    width = grid.shape[1] / 3
    for i, name in enumerate(("axial", "coronal", "sagittal")):
        ax.text((i + 0.5) * width, -4, name, ha="center", va="bottom", fontsize=9)
    for r, name in enumerate(["truth", "prediction"][-rows:]):
        ax.text(-6, (r + 0.5) * grid.shape[0] / rows, name, ha="right", va="center", rotation=90, fontsize=9)
    handles = [Patch(color=colour, label=text) for text, colour in legend(names)]
    ncol = min(len(handles), 6)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10, pad=16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def region_volumes_ml(label: np.ndarray, task: Task, voxel_ml: float) -> dict[str, float]:
    """Volume in ml of each output of ``task`` (TC, WT, ET; liver, ...) in a label map in its values."""
    masks = task.to_masks(label)  # [N, X, Y, Z] bool
    return {name: float(mask.sum()) * voxel_ml for name, mask in zip(task.outputs, masks)}


def merge_rows(out_dir: str | Path, rows: Sequence[dict]) -> list[dict]:
    """Merge ``rows`` into ``out_dir/cases.json`` (a rerun that skips finished cases keeps theirs)."""
    store = Path(out_dir) / "cases.json"
    merged = {r["case_id"]: r for r in (json.loads(store.read_text(encoding="utf-8")) if store.exists() else [])}
    merged.update({r["case_id"]: r for r in rows})
    ordered = [merged[k] for k in sorted(merged)]
    write_atomic(store, json.dumps(ordered, indent=1))
    return ordered


def write_html(
    out_dir: str | Path, rows: Sequence[dict] | None = None, metrics_summary: str | Path | None = None
) -> Path:
    """``out_dir/index.html``: one row per case (volumes in ml, overlay), plus the evaluate summary.

    rows: ``{"case_id", <output>: ml for each output of the task ("TC", "WT", "ET"; "liver", ...),
    "overlay" (path relative to out_dir)}``; default: the rows stored in ``out_dir/cases.json`` by
    :func:`merge_rows`. The volume columns are the outputs in the order the rows first name them.
    """
    out_dir = Path(out_dir)
    if rows is None:
        rows = json.loads((out_dir / "cases.json").read_text(encoding="utf-8"))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>medseg predictions</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
        "td{text-align:right}td:first-child{text-align:left}img{max-width:900px}</style></head><body>",
        f"<h1>medseg predictions</h1><p>{len(rows)} case(s)</p>",
    ]
    if metrics_summary and Path(metrics_summary).exists():
        summary = json.loads(Path(metrics_summary).read_text(encoding="utf-8"))
        kind, outputs = summary_outputs(summary)
        parts.append(
            f"<h2>Metrics</h2><table><tr><th>{kind}</th><th>Dice mean ± std</th><th>HD95 mm mean ± std</th></tr>"
        )
        for name, key in (*outputs, ("mean", "mean")):
            dice, hd = summary.get(f"dice_{key}", {}), summary.get(f"hd95_{key}", {})
            parts.append(
                f"<tr><td>{html.escape(name)}</td>"
                f"<td>{dice.get('mean', float('nan')):.4f} ± {dice.get('std', float('nan')):.4f}</td>"
                f"<td>{hd.get('mean', float('nan')):.2f} ± {hd.get('std', float('nan')):.2f}</td></tr>"
            )
        parts.append("</table>")
    if (out_dir / "training_curves.png").exists():
        parts.append("<h2>Training</h2><img src='training_curves.png' alt='training curves'>")
    outputs = list(dict.fromkeys(k for row in rows for k in row if k not in ("case_id", "overlay")))
    heads = "".join(f"<th>{html.escape(name)}</th>" for name in outputs)
    parts.append(f"<h2>Region volumes (ml)</h2><table><tr><th>case</th>{heads}</tr>")
    for row in rows:
        cells = "".join(f"<td>{row[r]:.1f}</td>" if r in row else "<td></td>" for r in outputs)
        parts.append(
            f"<tr><td><a href='#{html.escape(row['case_id'])}'>{html.escape(row['case_id'])}</a></td>{cells}</tr>"
        )
    parts.append("</table><h2>Overlays</h2>")
    for row in rows:
        if row.get("overlay"):
            case = html.escape(row["case_id"])
            parts.append(f"<h3 id='{case}'>{case}</h3><img src='{html.escape(str(row['overlay']))}' alt='{case}'>")
    parts.append("</body></html>")
    target = out_dir / "index.html"
    return write_atomic(target, "\n".join(parts))


def plot_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Training curves (every ``train/*`` and ``val/*`` column of a CSVLogger file) against step."""
    with open(metrics_csv, newline="") as f:
        records = list(csv.DictReader(f))
    columns = [c for c in (records[0].keys() if records else []) if c.startswith(("train/", "val/"))]
    stages = [stage for stage in ("train/", "val/") if any(c.startswith(stage) for c in columns)] or ["train/"]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), dpi=100, squeeze=False)
    for ax, stage in zip(axes[0], stages):
        for column in (c for c in columns if c.startswith(stage)):
            points = [(int(r["step"]), float(r[column])) for r in records if r.get(column) not in (None, "")]
            if points:
                ax.plot(*zip(*points), label=column, marker="." if len(points) < 20 else None)
        ax.set_title("training" if stage == "train/" else "validation")
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(out_png)
