"""``medseg plan``: fingerprint a dataset and write a training config sized for it (:mod:`medseg.planning`)."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from medseg.data.fingerprint import dataset_fingerprint, fingerprint_summary
from medseg.data.layouts import LAYOUTS, read_dataset
from medseg.devices import gpu_memory_gib, resolve_device
from medseg.errors import MedsegError
from medseg.io import check_output_file
from medseg.planning import DEFAULT_GPU_GIB, DEFAULT_STEPS, describe_plan, plan, write_plan
from medseg.tasks import PRESETS

MAX_CASE_ROWS = 40  # longer datasets list their first cases, then the medians

DESCRIPTION = """\
Plan training for a dataset, as nnU-Net plans its experiments: read every labelled case, measure it
(spacing, shape and orientation, foreground intensities per channel, volume and connected components
per label), then write a `medseg fit` config sized for the data and the device.

DATA is a dataset folder (BraTS 2021/2023 case folders, MSD, nnU-Net raw) or a datalist .json.

The plan (all of it in FILE.yaml, which you may edit before training):
  spacing    the median spacing (anisotropic data: the thick axis at its 10th percentile); no
             resampling when every case has it already
  roi_size   the median foreground at that spacing, in multiples of 32 (at least 64), within a
             voxel budget: 64^3 on CPU, up to 128^3 on a GPU of 24 GiB or more
  model      Swin UNETR, feature_size 12 (CPU) or 48 (GPU), channels and outputs from the task
  CT         channels without a window get nnU-Net's: the 0.5-99.5th percentile of the labelled
             foreground, then z-scored with its mean and std
  training   400 steps on CPU, 25,000 on GPU unless --max-steps; wandb offline in runs/<name>/

Then train with:  medseg fit --config FILE.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg plan", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", metavar="DATA", help="dataset folder or datalist .json")
    parser.add_argument("--out", "-o", required=True, metavar="FILE.yaml", help="the config to write")
    parser.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS], help="dataset layout (default: auto)")
    parser.add_argument("--datalist", metavar="JSON", help="a datalist whose paths are relative to DATA")
    parser.add_argument(
        "--task",
        metavar="PRESET",
        help=f"the task, overriding the layout's ({', '.join(PRESETS)}; default: the layout's)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "gpu"],
        help="size the plan for (default: auto, a GPU if seen)",
    )
    parser.add_argument(
        "--gpu-memory", type=float, metavar="GIB", help=f"GPU memory (default: the GPU's, else {DEFAULT_GPU_GIB:g})"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help=f"training steps (default: {DEFAULT_STEPS['cpu']} on CPU, {DEFAULT_STEPS['gpu']} on GPU)",
    )
    parser.add_argument("--name", help="run name: logs and checkpoints go to runs/NAME (default: swin_unetr_TASK)")
    parser.add_argument("--seed", type=int, default=0, help="intensity sampling, split and training seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="replace FILE.yaml if it exists")
    return parser


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows])


def _xyz(values, fmt: str = "{:g}") -> str:
    return " x ".join(fmt.format(v) for v in values)


def format_fingerprint(fingerprint: dict) -> str:
    """The tables ``medseg plan`` prints: cases, channel intensities, labels."""
    cases = fingerprint["cases"]
    rows = [
        [c["case_id"], _xyz(c["shape"]), _xyz(c["cropped_shape"]), _xyz(c["spacing"], "{:.3g}"), c["orientation"]]
        for c in cases[:MAX_CASE_ROWS]
    ]
    if len(cases) > MAX_CASE_ROWS:
        rows.append([f"... {len(cases) - MAX_CASE_ROWS} more", "", "", "", ""])
    rows.append(
        [
            "median",
            _xyz(fingerprint["median_shape"]),
            _xyz(fingerprint["median_cropped_shape"]),
            _xyz(fingerprint["median_spacing"], "{:.3g}"),
            "",
        ]
    )
    parts = [_table(["case", "shape (RAS)", "foreground box", "spacing mm", "stored as"], rows)]
    channel_rows = []
    for c in fingerprint["channels"]:
        stats = [c[k] for k in ("mean", "std", "p0.5", "p99.5")]
        channel_rows.append([c["name"], c["kind"], *("-" if v is None else f"{v:.4g}" for v in stats), c["n_samples"]])
    parts.append(_table(["channel", "kind", "mean", "std", "p0.5", "p99.5", "samples"], channel_rows))
    label_rows = [
        [
            name,
            v["value"],
            f"{v['median_volume_ml']:.3g}",
            f"{v['median_components']:g}",
            f"{v['cases_present']}/{len(cases)}",
        ]
        for name, v in fingerprint["labels"].items()
    ]
    parts.append(_table(["label", "value", "median ml", "median components", "cases"], label_rows))
    return "\n\n".join(parts)


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    return "gpu" if resolve_device("auto").type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise MedsegError(f"{out}: exists; it may hold your edits: pass --force to replace it, or choose another --out")
    check_output_file(out)  # before the dataset is measured
    if args.max_steps is not None and args.max_steps < 1:
        raise MedsegError(f"--max-steps must be at least 1, got {args.max_steps}")
    index = read_dataset(args.data, layout=args.layout, datalist=args.datalist, task=args.task)
    print(f"{index.root}: {index.layout} layout, {len(index.cases)} case(s); task {index.task.describe()}")
    fingerprint = dataset_fingerprint(index.cases, index.task, seed=args.seed)
    print(f"\n{format_fingerprint(fingerprint)}\n")
    device = _device(args.device)
    memory = args.gpu_memory if args.gpu_memory is not None else (gpu_memory_gib() if device == "gpu" else None)
    datalist = args.datalist
    if datalist is not None and Path(datalist).exists():
        datalist = os.path.abspath(datalist)  # else it is relative to DATA, as read_dataset found it
    config = plan(
        fingerprint, index.task, args.data, device, memory, args.max_steps, args.name,
        layout=index.layout, datalist=datalist, seed=args.seed,
    )  # fmt: skip
    notes = [fingerprint_summary(fingerprint), *describe_plan(fingerprint, config)]
    sized = f"{device.upper()}" + (f" ({memory:.0f} GiB)" if device == "gpu" and memory else "")
    print(f"plan for {sized}:\n" + "\n".join(f"  {line}" for line in notes[1:]))
    write_plan(config, out, notes)
    print(f"\nwrote {out}\nnext:  medseg fit --config {shlex.quote(str(out))}")
    return 0
