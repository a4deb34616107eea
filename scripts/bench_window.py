"""Is a faster inference path safe? Training-roi fp32 windows against window plans and bf16, per case.

    # a trained checkpoint on held-out generated cases of real BraTS extent (hard), feature_size 48
    medseg demo-data --out data/real_test --cases 4 --start-index 10000 --extent real --difficulty hard
    python scripts/bench_window.py --ckpt runs/x/checkpoints/last.ckpt data/real_test --json window.json
    # other paths: WINDOW[:PRECISION], WINDOW one of roi, plan, auto or sides like 160x192x160
    python scripts/bench_window.py --ckpt CKPT data/real_test --variants roi plan auto roi:bf16 auto:bf16

Every variant is a ``medseg.inference.Predictor`` over the same cases in this process, one after the other
per case (the first variant first), so the wall times (``predict_case``: preprocessing, windows,
inversion) compare within one run; load the machine with nothing else. Per case and variant it prints the
windows used, the seconds, Dice per region (TC, WT, ET for BraTS) between its label map and the first
variant's (agreement; the target is >= 0.99 per region) and against the truth. The summary gives per
variant the median seconds, the speed-up over the first variant, the lowest agreement per region, the mean
Dice against the truth and its difference from the first variant's (the target: no lower than -0.005).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medseg.data.layouts import read_dataset  # noqa: E402
from medseg.devices import bf16_native, cpu_flags  # noqa: E402
from medseg.evaluation import read_label_map  # noqa: E402
from medseg.inference import Predictor  # noqa: E402
from medseg.metrics.segmentation import dice  # noqa: E402

AGREEMENT, TRUTH_MARGIN = 0.99, 0.005  # the targets of issue 14
AGREE_KEYS = ("agreement", "vs_truth")


def parse_variant(spec: str) -> dict:
    """``plan:bf16`` -> ``{"name": "plan:bf16", "window": "plan", "precision": "bf16"}``; sides as 160x192x160."""
    window, _, precision = spec.partition(":")
    if window not in ("roi", "plan", "auto"):
        try:
            window = [int(s) for s in window.split("x")]
        except ValueError:
            message = f"variant {spec!r}: WINDOW[:PRECISION], WINDOW roi, plan, auto or sides like 160x192x160"
            raise SystemExit(message) from None
    if precision not in ("", "fp32", "bf16", "auto"):
        raise SystemExit(f"variant {spec!r}: precision fp32, bf16 or auto")
    return {"name": spec, "window": window, "precision": precision or "fp32"}


def region_dice(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Dice per output between two stacks of bool masks [N, X, Y, Z]."""
    return dice(a[None], b[None])[0].tolist()


def run(args: argparse.Namespace) -> dict:
    variants = [parse_variant(v) for v in args.variants]
    predictors = [
        Predictor.from_checkpoints(
            args.ckpt,
            device=args.device,
            window=v["window"],
            precision=v["precision"],
            overlap=args.overlap,
            max_window=args.max_window,
        )
        for v in variants
    ]
    task = predictors[0].task  # the values the label maps are written in
    cases = []  # each with the task of its own folder: the truth's values (BraTS 2023 writes ET as 3)
    for root in args.cases:
        index = read_dataset(root, "auto")
        cases += [{**c, "task": index.task} for c in index.cases if c.get("label")]
    if args.limit:
        cases = cases[: args.limit]
    if not cases:
        raise SystemExit(f"no labelled case in {', '.join(args.cases)}")
    names = list(task.outputs)
    rows = []
    for case in cases:
        truth = case["task"].to_masks(read_label_map(Path(case["label"]), case["case_id"])[0])  # [N, X, Y, Z]
        first = None
        for variant, predictor in zip(variants, predictors):
            start = time.perf_counter()
            result = predictor.predict_case({"case_id": case["case_id"], "image": case["image"]})
            seconds = time.perf_counter() - start
            masks = task.to_masks(result.label)  # [N, X, Y, Z]
            first = masks if first is None else first
            row = {
                "case": case["case_id"],
                "variant": variant["name"],
                "seconds": seconds,
                "windows": result.windows,
                "agreement": region_dice(masks, first),
                "vs_truth": region_dice(masks, truth),
            }
            rows.append(row)
            agreement, vs_truth = (
                " ".join(f"{n} {s:.4f}" for n, s in zip(names, row[k])) for k in ("agreement", "vs_truth")
            )
            print(f"{row['case']} {row['variant']}: {seconds:.1f} s; {result.windows}", flush=True)
            print(f"    agreement with {variants[0]['name']}: {agreement}; vs truth: {vs_truth}")
    return {"rows": rows, "summary": summarise(rows, [v["name"] for v in variants], names)}


def summarise(rows: list[dict], variants: list[str], names: list[str]) -> list[dict]:
    """Per variant: median seconds, speed-up over the first, lowest agreement and mean Dice vs truth per region."""
    out = []
    base = [r for r in rows if r["variant"] == variants[0]]
    base_time = statistics.median(r["seconds"] for r in base)
    base_truth = np.mean([r["vs_truth"] for r in base], axis=0)
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        seconds = statistics.median(r["seconds"] for r in mine)
        agreement = np.min([r["agreement"] for r in mine], axis=0)
        truth = np.mean([r["vs_truth"] for r in mine], axis=0)
        out.append(
            {
                "variant": name,
                "median_s": seconds,
                "speedup": base_time / seconds,
                "min_agreement": dict(zip(names, agreement.round(4).tolist())),
                "mean_vs_truth": dict(zip(names, truth.round(4).tolist())),
                "truth_change": dict(zip(names, (truth - base_truth).round(4).tolist())),
                "agrees": bool((agreement >= AGREEMENT).all()),
                "no_lower": bool((truth - base_truth >= -TRUTH_MARGIN).all()),
            }
        )
    return out


def print_summary(summary: list[dict], n_cases: int) -> None:
    print(f"\n{n_cases} case(s); agreement = Dice with {summary[0]['variant']} (target >= {AGREEMENT} per region)")
    print("| variant | median s | speed-up | min agreement | mean Dice vs truth | change vs first | targets met |")
    print("|---|---|---|---|---|---|---|")
    for s in summary:
        cells = [" / ".join(f"{v:.4f}" for v in s[k].values()) for k in ("min_agreement", "mean_vs_truth")]
        change = " / ".join(f"{v:+.4f}" for v in s["truth_change"].values())
        met = "yes" if s["agrees"] and s["no_lower"] else "no"
        timing = f"{s['median_s']:.1f} | {s['speedup']:.2f}x"
        print(f"| {s['variant']} | {timing} | {cells[0]} | {cells[1]} | {change} | {met} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", help="held-out dataset folders (any layout medseg reads), with labels")
    parser.add_argument("--ckpt", required=True, nargs="+", help="checkpoint(s) written by medseg fit (an ensemble)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["roi", "plan", "auto", "auto:bf16"],
        help="WINDOW[:PRECISION] each; the first is the reference (default: roi plan auto auto:bf16)",
    )
    parser.add_argument("--overlap", type=float, help="sliding-window overlap (default: the checkpoint's)")
    parser.add_argument("--max-window", type=int, nargs="+", help="largest side for plan (default: the training roi)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--limit", type=int, help="at most this many cases")
    parser.add_argument("--json", help="write rows, summary and provenance here")
    args = parser.parse_args(argv)
    if args.max_window is not None and len(args.max_window) == 1:
        args.max_window = args.max_window[0]

    result = run(args)
    print_summary(result["summary"], len({r["case"] for r in result["rows"]}))
    if args.json:
        result["provenance"] = {
            "args": vars(args),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_bf16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"}),
            "bf16_native": bf16_native(args.device),
        }
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
