"""A ``medseg fit`` run in the review page's kind of page: training curves and the validation table, read from
the run's own logs (``medseg report RUN_DIR``).

Logs read, the newest of each kind:

- the CSV logger's ``RUN_DIR/**/metrics.csv`` (``lightning_logs/version_N/``): one row per logging step;
- wandb's offline ``RUN_DIR/wandb/offline-run-*/run-*.wandb``: its ``history`` records, decoded with the
  protobuf classes the wandb package ships (the file is wandb's LevelDB-style record log).
"""

from __future__ import annotations

import csv
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from medseg.errors import LayoutError
from medseg.io import atomic_path
from medseg.reporting.review import table_html, write_page


def read_csv_log(path: str | Path) -> list[dict]:
    """A CSVLogger ``metrics.csv``: ``[{"step", "epoch"?, "train/loss", ...}]``, empty cells left out."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]


def _wandb_records(data: bytes) -> list[bytes]:
    """The records of a ``.wandb`` file: a 7-byte header, then 32 KiB blocks of chunks (crc32, length, type:
    1 full, 2 first, 3 middle, 4 last), as wandb's own ``datastore`` wrote and read them."""
    if data[:4] != b":W&B":
        raise ValueError("not a wandb run file")
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


def read_wandb_log(path: str | Path) -> list[dict]:
    """The logged history of an offline wandb run: ``[{"step": trainer/global_step, "epoch", "train/...": ...}]``."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in _wandb_records(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            value = json.loads(item.value_json)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[item.key or "/".join(item.nested_key)] = float(value)
        if "trainer/global_step" in row:
            row["step"] = row.pop("trainer/global_step")
        rows.append(row)
    return rows


def read_run(run_dir: str | Path) -> tuple[list[dict], Path]:
    """The logged rows of a run folder and the log they came from (a CSV log before a wandb one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LayoutError(f"run folder {run_dir} does not exist")
    logs = sorted(run_dir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if logs:
        return read_csv_log(logs[-1]), logs[-1]
    logs = sorted(run_dir.rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if logs:
        return read_wandb_log(logs[-1]), logs[-1]
    raise LayoutError(
        f"no training log in {run_dir}: expected a CSV logger's lightning_logs/version_*/metrics.csv or wandb's "
        "wandb/offline-run-*/run-*.wandb (the folder `medseg fit --trainer.default_root_dir` wrote)"
    )


def validation_rows(rows: Sequence[dict]) -> list[dict]:
    """One row per validation: the ``val/*`` values logged at one step, with that step and epoch."""
    merged: dict[float, dict] = {}
    for row in rows:
        values = {k: v for k, v in row.items() if k.startswith("val/")}
        if values:
            merged.setdefault(row.get("step", math.nan), {"step": row.get("step"), "epoch": row.get("epoch")})
            merged[row.get("step", math.nan)].update(values)
    return list(merged.values())


def plot_rows(rows: Sequence[dict], out_png: str | Path) -> Path:
    """Training curves: every ``train/*`` and ``val/*`` value against step, a panel per stage."""
    columns = list(dict.fromkeys(k for row in rows for k in row if k.startswith(("train/", "val/"))))
    stages = [stage for stage in ("train/", "val/") if any(c.startswith(stage) for c in columns)] or ["train/"]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), dpi=100, squeeze=False)
    for ax, stage in zip(axes[0], stages):
        for column in (c for c in columns if c.startswith(stage)):
            points = [(r["step"], r[column]) for r in rows if column in r and "step" in r]
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


def plot_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Training curves of a CSVLogger file (:func:`plot_rows`)."""
    return plot_rows(read_csv_log(metrics_csv), out_png)


def write_run_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """``out_dir/index.html`` (default ``RUN_DIR/report``): curves, the validation table (sortable; best mean
    validation Dice marked by sorting on it) and the run's checkpoints and config."""
    run_dir = Path(run_dir).resolve()
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    rows, log = read_run(run_dir)  # before anything is created: a wrong RUN_DIR leaves no folder behind
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_rows(rows, out_dir / "training_curves.png")
    sections = ["<h2>Training curves</h2><img src='training_curves.png' alt='training curves' class='figure'>"]
    validations = validation_rows(rows)
    if validations:
        keys = list(dict.fromkeys(k for row in validations for k in row if k.startswith("val/")))
        columns = [("epoch", "epoch", 0), ("step", "step", 0)] + [(k, k, 4) for k in keys]
        table = table_html(columns, [{"id": i, **row} for i, row in enumerate(validations)], "validation", "step")
        sections.append(f"<h2>Validation</h2>{table}")
    else:
        sections.append("<h2>Validation</h2><p>no validation was logged in this run</p>")
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    if checkpoints:
        items = "".join(f"<li>{c.name} ({c.stat().st_size / 2**20:.1f} MiB)</li>" for c in checkpoints)
        sections.append(f"<h2>Checkpoints</h2><ul>{items}</ul>")
    if (run_dir / "config.yaml").exists():
        sections.append(f"<p>config: <a href='{(run_dir / 'config.yaml').as_uri()}'>{run_dir / 'config.yaml'}</a></p>")
    steps = max((row.get("step", 0) for row in rows), default=0)
    note = f"{run_dir}: {len(rows)} logged rows up to step {steps:.0f}, {len(validations)} validation(s); from {log}"
    return write_page(out_dir, "medseg training run", sections, note=note)
