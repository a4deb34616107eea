"""The review page: ``report/index.html``, a sortable table of cases and, per case, an interactive NiiVue viewer
of the case's own files, opened from the file system with no server and no network.

Browsers refuse ``fetch`` of ``file://`` URLs from a ``file://`` page, so a viewer cannot read the NIfTI files
by URL. Each case therefore gets ``report/cases/<case>.js``, a script that hands the exact bytes of its files
(base64) to the page: ``medsegCase(case_id, [{"key", "name", "base64"}, ...])``. The page injects that
script when the case is opened (a ``<script src>`` works on ``file://``), so a page of many cases opens at
once and each case costs only when looked at. What is seen is what was written: the bytes are the files'.

Files beside ``index.html``: ``niivue.umd.js`` (NiiVue, BSD-2, see ``NIIVUE_LICENSE.txt``), ``review.js``,
``review.css`` (copied from ``medseg/reporting/static``), ``cases/*.js`` and the static PNGs.

A row of the page (``cases.json``, see :func:`medseg.reporting.html.merge_rows`)::

    {"case_id", <output>: volume in ml for each output of the task, "overlay": PNG name or None,
     "files": {"images": [[channel, path, frame or None], ...], "prediction": path, "truth": path or None},
     "metrics": {"dice_tc": ..., "hd95_tc": ..., "lesions_tp_tc": ..., ...} (after medseg evaluate)}
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.io import write_atomic
from medseg.reporting.overlays import colours
from medseg.tasks import Task

STATIC = Path(__file__).parent / "static"
ASSETS = ("niivue.umd.js", "review.js", "review.css", "NIIVUE_LICENSE.txt", "THIRD_PARTY_LICENSES.txt")
VIEWABLE = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats NiiVue reads from bytes
ROW_KEYS = ("case_id", "overlay", "files", "metrics")  # every other key of a row is an output's volume (ml)
# the viewer's frame; review.js fills it. NiiVue sizes a canvas to its parent: a box whose size is its own
VIEWER = """<section id="viewer" hidden>
<div id="viewer-head"><h2 id="viewer-title"></h2><span id="viewer-links"></span></div>
<div id="controls"></div>
<div id="panes">
<figure id="pane-truth"><figcaption>truth</figcaption><div class="canvas-box"><canvas id="canvas-truth"></canvas></div>
</figure>
<figure id="pane-prediction"><figcaption id="caption-prediction">prediction</figcaption>
<div class="canvas-box"><canvas id="canvas-prediction"></canvas></div></figure>
</div>
<div id="readout">hover over a slice: voxel value and labels</div><div id="legend"></div>
</section>"""


def label_table(task: Task) -> list[dict]:
    """``[{"value", "name", "colour": [r, g, b] 0-255}]`` per label value of ``task``, in the colours of the PNG
    overlays: a value takes the colour of the innermost region that holds it (BraTS 2021: edema 2 -> WT green,
    necrosis 1 -> TC yellow, enhancing 4 -> ET red), or its class's colour."""
    palette = colours(task.outputs)
    table = []
    for name, value in sorted(task.labels.items(), key=lambda item: item[1]):
        if task.regions is not None:
            holding = [r for r in task.regions if value in task.regions[r]]
            output = min(holding, key=lambda r: len(task.regions[r])) if holding else None
        else:
            output = name if name in task.classes else None
        if output is not None:
            table.append({"value": value, "name": name, "colour": [round(255 * c) for c in palette[output]]})
    return table


def scan_files(case: dict, channels: Sequence[str]) -> list[list]:
    """``[[channel, absolute path, frame or None], ...]`` of a case dict (``image``: a file per channel, or one
    4-D file with the channels on its last axis at ``channel_order``)."""
    image = case["image"]
    if isinstance(image, (str, Path)):
        order = case.get("channel_order") or list(range(len(channels)))
        frames = order if len(channels) > 1 or nib_frames(image) > 1 else [None]
        return [[name, str(Path(image).resolve()), frame] for name, frame in zip(channels, frames)]
    return [[name, str(Path(path).resolve()), None] for name, path in zip(channels, image)]


def nib_frames(path: str | Path) -> int:
    """Frames on the fourth axis of a NIfTI file (1 for a 3-D one or another format)."""
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        return 1
    shape = nib.load(str(path)).shape
    return shape[3] if len(shape) > 3 else 1


def _viewable(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_file() and str(path).lower().endswith(VIEWABLE)


def case_volumes(files: dict) -> list[tuple[str, Path]]:
    """(key, path) of each file of a case the viewer can show: ``image0``.. (each file of the scan once),
    ``prediction`` and ``truth``."""
    volumes, seen = [], {}
    for _, path, _ in files.get("images") or []:
        if _viewable(path) and path not in seen:
            seen[path] = f"image{len(seen)}"
            volumes.append((seen[path], Path(path)))
    volumes += [(key, Path(files[key])) for key in ("prediction", "truth") if _viewable(files.get(key))]
    return volumes


def write_bundle(report_dir: Path, case_id: str, files: dict) -> str | None:
    """``report_dir/cases/<case>.js`` holding the exact bytes of the case's files; returns its relative path
    (None when nothing is viewable). Rewritten only when the files changed: others, or newer than the bundle."""
    volumes = case_volumes(files)
    if not volumes:
        return None
    target = report_dir / "cases" / f"{case_id}.js"
    manifest = "// files: " + json.dumps([[key, str(path.resolve())] for key, path in volumes])
    if target.exists() and all(path.stat().st_mtime <= target.stat().st_mtime for _, path in volumes):
        with open(target, encoding="utf-8") as f:
            if f.readline().rstrip("\n") == manifest:
                return f"cases/{case_id}.js"
    items = [
        {"key": key, "name": path.name, "base64": base64.b64encode(path.read_bytes()).decode("ascii")}
        for key, path in volumes
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, f"{manifest}\nmedsegCase({json.dumps(case_id)}, {json.dumps(items)});\n")
    return f"cases/{case_id}.js"


def focus_mm(files: dict) -> list[float] | None:
    """World position (mm, the NIfTI's RAS) of the centre of the labelled voxels of the truth, else of the
    prediction: where the viewer opens. None when neither is a readable NIfTI or both are empty."""
    for key in ("truth", "prediction"):
        path = files.get(key)
        if path is None or not str(path).lower().endswith((".nii", ".nii.gz")) or not Path(path).is_file():
            continue
        image = nib.load(str(path))
        voxels = np.argwhere(np.asanyarray(image.dataobj).reshape(image.shape[:3]) > 0)  # [V, 3]
        if len(voxels):
            centre = voxels.mean(0)  # voxel index
            return [round(float(v), 2) for v in image.affine[:3, :3] @ centre + image.affine[:3, 3]]
    return None


def viewer_case(report_dir: Path, row: dict) -> dict | None:
    """What the page needs to show one case (written bundle, channels, focus), or None without files."""
    files = row.get("files") or {}
    bundle = write_bundle(report_dir, row["case_id"], files)
    if bundle is None:
        return None
    keys = {str(path): key for key, path in case_volumes(files)}
    channels = [
        {"name": name, "volume": keys[str(Path(path))], "frame": frame}
        for name, path, frame in files.get("images") or []
        if str(Path(path)) in keys
    ]
    return {
        "bundle": bundle,
        "channels": channels,
        "prediction": "prediction" if _viewable(files.get("prediction")) else None,
        "truth": "truth" if _viewable(files.get("truth")) else None,
        "focus": focus_mm(files),
        "overlay": row.get("overlay"),
    }


def copy_assets(report_dir: Path, viewer: bool = True) -> None:
    """The script and style (and with ``viewer`` NiiVue and its licences) beside ``index.html``, copied again
    only when they differ in size."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in ASSETS if viewer else ("review.js", "review.css"):
        target = report_dir / name
        if not target.exists() or target.stat().st_size != (STATIC / name).stat().st_size:
            shutil.copyfile(STATIC / name, target)


def _cell(value, digits: int) -> str:
    """A table cell: a number (``digits`` decimals), a string, or (text, number to sort by)."""
    if isinstance(value, tuple):
        return f"<td data-sort='{value[1]:.6g}'>{html.escape(value[0])}</td>"
    if isinstance(value, str):
        return f"<td data-sort='{html.escape(value)}'>{html.escape(value)}</td>"
    if value is None or not np.isfinite(value):
        return "<td data-sort=''></td>"
    return f"<td data-sort='{value:.6g}'>{value:.{digits}f}</td>"


def table_html(columns: Sequence[tuple[str, str, int]], rows: Sequence[dict], table_id: str, sort: str = "") -> str:
    """A sortable table: ``columns`` (key, header, digits), ``rows`` {"id", key: value (see :func:`_cell`)};
    ``sort`` the key it is sorted by, ascending (the page's script re-sorts on a click on a header)."""
    heads = "".join(f"<th data-key='{html.escape(k)}'>{html.escape(h)}</th>" for k, h, _ in columns)
    body = []
    for row in rows:
        cells = "".join(_cell(row.get(k), d) for k, _, d in columns)
        body.append(f"<tr data-case='{html.escape(str(row['id']))}'>{cells}</tr>")
    return (
        f"<table id='{table_id}' class='sortable' data-sort='{html.escape(sort)}'><thead><tr>{heads}</tr></thead>"
        f"<tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def write_page(
    report_dir: str | Path,
    title: str,
    sections: Sequence[str],
    viewer: dict | None = None,
    note: str = "",
) -> Path:
    """``report_dir/index.html``: ``sections`` (HTML, in order) and, with ``viewer`` {"labels": label_table,
    "cases": {case_id: viewer_case}}, the case viewer beside them; copies the assets beside it."""
    report_dir = Path(report_dir)
    has_viewer = bool(viewer and viewer.get("cases"))
    copy_assets(report_dir, has_viewer)
    data = json.dumps(viewer or {"labels": [], "cases": {}}).replace("</", "<\\/")
    viewer_html = VIEWER if has_viewer else ""
    footer = (
        "Viewer: <a href='NIIVUE_LICENSE.txt'>NiiVue</a> (BSD-2). Opens offline from the file system; each case's "
        "files load when it is opened."
        if has_viewer
        else "Opens offline from the file system."
    )
    niivue = "<script src='niivue.umd.js' defer></script>" if has_viewer else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="review.css"></head>
<body><header><h1>{html.escape(title)}</h1><p class="note">{note}</p></header>
<main><div id="tables">
{chr(10).join(sections)}
</div>{viewer_html}</main>
<footer>Made by medseg. {footer}</footer>
<script id="medseg-data" type="application/json">{data}</script>
{niivue}
<script src="review.js" defer></script>
</body></html>
"""
    return write_atomic(report_dir / "index.html", page)
