"""Pictures and an HTML page of a prediction run: what a person looks at before trusting the numbers.

- ``save_overlay``: a PNG per case, axial / coronal / sagittal slices through the tumour with one colour
  per region and a legend (truth on top when a label is given, prediction below);
- ``write_html``: ``index.html``, the review page (:mod:`medseg.reporting.review`): the volume of each
  output (region or class) in ml per case, the metrics when ``medseg evaluate`` has run, a viewer per case.

Training curves: :mod:`medseg.reporting.runs`.
"""

from __future__ import annotations

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
from medseg.metrics.segmentation import metric_keys
from medseg.reporting.overlays import REGIONS, colours, overlay_panels
from medseg.reporting.review import ROW_KEYS, label_table, table_html, viewer_case, write_page
from medseg.tasks import Task, get_task

LEGEND = {"WT": "whole tumour (edema)", "TC": "tumour core", "ET": "enhancing tumour"}


def legend(names) -> list[tuple[str, tuple[float, float, float]]]:
    """(text, colour) per output as the overlays paint it: the BraTS regions outermost first, else in order."""
    palette = colours(names)
    shown = ("WT", "TC", "ET") if tuple(names) == REGIONS else tuple(names)
    return [(LEGEND.get(n, n), palette[n]) for n in shown]


def save_overlay(image, pred, path: str | Path, title: str = "", label=None, names=REGIONS) -> Path:
    """image [C, X, Y, Z] (RAS), pred / label [N, X, Y, Z] masks named ``names`` (default TC, WT, ET) -> PNG:
    a row per truth (when given) and prediction, a column per plane, the legend below."""
    panels = overlay_panels(image, label, pred, names=names)  # rows x [axial, coronal, sagittal] [H, W, 3]
    rows = len(panels)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 2.9 * rows + 0.9), dpi=100, squeeze=False, layout="constrained")
    for r, row_name in enumerate(["truth", "prediction"][-rows:]):
        for c, plane in enumerate(("axial", "coronal", "sagittal")):
            ax = axes[r, c]
            ax.imshow(panels[r][c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if r == 0:
                ax.set_title(plane, fontsize=9)
            if c == 0:
                ax.set_ylabel(row_name, fontsize=9)
    handles = [Patch(color=colour, label=text) for text, colour in legend(names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
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


def _summary_table(summary: dict) -> str:
    """The evaluate summary: a row per output and the mean, Dice and HD95 as mean ± std."""
    kind, outputs = summary_outputs(summary)
    parts = [f"<h2>Metrics</h2><table><tr><th>{kind}</th><th>Dice mean ± std</th><th>HD95 mm mean ± std</th></tr>"]
    for name, key in (*outputs, ("mean", "mean")):
        dice, hd = summary.get(f"dice_{key}", {}), summary.get(f"hd95_{key}", {})
        parts.append(
            f"<tr><td>{html.escape(name)}</td>"
            f"<td>{dice.get('mean', float('nan')):.4f} ± {dice.get('std', float('nan')):.4f}</td>"
            f"<td>{hd.get('mean', float('nan')):.2f} ± {hd.get('std', float('nan')):.2f}</td></tr>"
        )
    return "\n".join([*parts, "</table>"])


def case_columns(outputs: Sequence[str], rows: Sequence[dict]) -> list[tuple[str, str, int]]:
    """(key, header, digits) of the case table: volumes (ml) per output, then, where the rows are scored,
    Dice and HD95 per output and their means, and lesions found/missed/false positive per output."""
    columns = [("case_id", "case", 0)] + [(f"ml {name}", f"{name} ml", 1) for name in outputs]
    scored = {key for row in rows for key in (row.get("metrics") or {})}
    named = [*zip(outputs, metric_keys(list(outputs))), ("mean", "mean")]
    for metric, header, digits in (("dice", "Dice", 3), ("hd95", "HD95", 1)):
        columns += [(f"{metric}_{k}", f"{header} {n}", digits) for n, k in named if f"{metric}_{k}" in scored]
    columns += [(f"lesions_{k}", f"{n} lesions found/missed/FP", 0) for n, k in named if f"lesions_tp_{k}" in scored]
    return columns


def _table_row(row: dict, outputs: Sequence[str]) -> dict:
    values = {"id": row["case_id"], "case_id": row["case_id"], **{f"ml {n}": row.get(n) for n in outputs}}
    metrics = row.get("metrics") or {}
    values.update(metrics)
    for key in metric_keys(list(outputs)):
        if f"lesions_tp_{key}" in metrics:
            tp, fn, fp = (int(metrics[f"lesions_{c}_{key}"]) for c in ("tp", "fn", "fp"))
            values[f"lesions_{key}"] = (f"{tp}/{fn}/{fp}", fn + fp)  # sorted by the lesions got wrong
    return values


def _find_task(out_dir: Path, task: Task | None, summary: dict) -> Task | None:
    """The task the page colours labels by: given (stored in ``task.json``), the summary's, or the stored one."""
    store = out_dir / "task.json"
    if task is not None:
        write_atomic(store, json.dumps(task.to_dict(), indent=1))
        return task
    if summary.get("task"):
        return get_task(summary["task"])
    return get_task(json.loads(store.read_text(encoding="utf-8"))) if store.exists() else None


def write_html(
    out_dir: str | Path,
    rows: Sequence[dict] | None = None,
    metrics_summary: str | Path | None = None,
    task: Task | None = None,
) -> Path:
    """``out_dir/index.html``, the review page (:mod:`medseg.reporting.review`): the evaluate summary, a row
    per case (volumes in ml; Dice, HD95 and lesion counts when scored; worst Dice first then) and the viewer
    of each case's files.

    rows: see :mod:`medseg.reporting.review` (``files`` and ``metrics`` optional); default: the rows stored
    in ``out_dir/cases.json`` by :func:`merge_rows`. The volume columns are the outputs in the order the rows
    first name them. task: what the label values mean (for the viewer's colours); default: the summary's, or
    the one stored by an earlier call.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = json.loads((out_dir / "cases.json").read_text(encoding="utf-8"))
    summary = {}
    if metrics_summary and Path(metrics_summary).exists():
        summary = json.loads(Path(metrics_summary).read_text(encoding="utf-8"))
    task = _find_task(out_dir, task, summary)
    outputs = list(dict.fromkeys(k for row in rows for k in row if k not in ROW_KEYS))
    scored = any(row.get("metrics") for row in rows)
    ordered = sorted(rows, key=lambda r: (r.get("metrics") or {}).get("dice_mean", 2.0)) if scored else rows
    sections = [_summary_table(summary)] if summary else []
    sort = "dice_mean" if scored else ""
    table = table_html(case_columns(outputs, rows), [_table_row(r, outputs) for r in ordered], "cases", sort)
    sections.append(f"<h2>Cases</h2>{table}")
    if (out_dir / "training_curves.png").exists():
        sections.append("<h2>Training</h2><img src='training_curves.png' alt='training curves' class='figure'>")
    pictures = [f"<figure id='png-{html.escape(r['case_id'])}'><img loading='lazy' src='{html.escape(r['overlay'])}' "
                f"alt='{html.escape(r['case_id'])}'></figure>" for r in ordered if r.get("overlay")]  # fmt: skip
    if pictures:
        sections.append("<details><summary>Static pictures (PNG)</summary>" + "".join(pictures) + "</details>")
    cases = {r["case_id"]: viewer_case(out_dir, r) for r in ordered}
    viewer = {"labels": label_table(task) if task else [], "cases": {k: v for k, v in cases.items() if v}}
    how = "worst Dice first; " if scored else ""
    note = f"{len(rows)} case(s); {how}click a row to view the case, a header to sort"
    if task is not None:
        note += f"; task {html.escape(task.describe())}"
    title = "medseg predictions, scored" if scored else "medseg predictions"
    return write_page(out_dir, title, sections, viewer, note)
