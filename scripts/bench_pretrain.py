#!/usr/bin/env python
"""Issue 16: does pre-training the Swin encoder help when labels are few? Hard demo data, a few labelled cases
and many unlabelled ones; the same fine-tuning budget (steps, recipe, seeds) from scratch, from
``medseg pretrain`` on the unlabelled scans, and from a CLIP model trained on the same scans' reports; held-out
Dice per region and mean by ``medseg evaluate``. Every stage is a ``medseg`` command run as a user would.

    python scripts/bench_pretrain.py --out runs/bench_pretrain             # full size (see docs/benchmarks.md)
    python scripts/bench_pretrain.py --out /tmp/bp --labelled 2 --unlabelled 4 --test 2 --shape 64 64 64 \\
        --pretrain-steps 2 --clip-steps 2 --finetune-steps 2             # a check that every stage runs

1. ``medseg demo-data --difficulty hard``: ``--labelled`` training cases, ``--unlabelled`` cases whose label
   files are deleted (demo_truth.json stays, for the reports), ``--test`` held-out cases (other case numbers);
2. variants (``--variants``): ``scratch``; ``ssl``, ``medseg pretrain`` (configs/pretrain_demo.yaml: inpainting,
   rotation, contrastive) for ``--pretrain-steps``; ``mim``, the same with the inpainting part alone; ``clip``,
   ``medseg fit --config configs/clip_demo.yaml`` with the Swin image encoder on the unlabelled scans' demo
   reports for ``--clip-steps``;
3. per variant and ``--seeds`` seed: ``medseg fit --config configs/swin_unetr_demo.yaml`` on the labelled cases
   for ``--finetune-steps`` (``augment: nnunet``), started from the variant's checkpoint through
   ``model.init_args.pretrained`` (with ``--freeze-steps`` / ``--layer-decay``), then ``medseg predict`` and
   ``medseg evaluate`` on the held-out cases.

Finished stages are kept (a rerun with the same ``--out`` goes on where it stopped). Results, the settings and
the commit go to ``OUT/results.json``; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIP_ENCODER = {"class_path": "medseg.nets.SwinImageEncoder", "init_args": {"in_channels": 4, "embed_dim": 128}}
REGIONS = ("tc", "wt", "et")


def medseg(*args: str) -> None:
    """Run ``medseg ARGS`` with this checkout's code; stop the benchmark when it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "medseg.cli", *args]
    print("+ medseg " + " ".join(args), flush=True)
    subprocess.run(command, check=True, env=env, cwd=ROOT)


def finished(run: Path, steps: int) -> bool:
    """``run`` holds a checkpoint of ``steps`` optimizer steps."""
    ckpt = run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return False
    import torch

    return torch.load(ckpt, map_location="cpu", weights_only=True).get("global_step") == steps


def logged(run: Path, steps: int) -> list[str]:
    return ["--trainer.default_root_dir", str(run), "--trainer.max_steps", str(steps),
            "--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(run),
            "--trainer.enable_progress_bar", "false"]  # fmt: skip


def make_data(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    shape = [str(s) for s in args.shape]
    sets = {"labelled": (args.labelled, 0), "unlabelled": (args.unlabelled, 1000), "test": (args.test, 10000)}
    folders = {}
    for name, (cases, start) in sets.items():
        folder = folders[name] = out / "data" / name
        if not (folder / "demo_truth.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            medseg("demo-data", "--difficulty", "hard", "--out", str(folder), "--cases", str(cases),
                   "--start-index", str(start), "--seed", "0", "--shape", *shape)  # fmt: skip
    for seg in folders["unlabelled"].glob("*/*_seg.nii.gz"):
        seg.unlink()  # unlabelled for real: no label file is there to read
    reports = folders["unlabelled"] / "reports.jsonl"
    if not reports.is_file():
        from medseg.data.demo_reports import write_demo_reports

        write_demo_reports(folders["unlabelled"], seed=0)
    return folders


def pretrain(variant: str, out: Path, data: dict[str, Path], args: argparse.Namespace) -> Path | None:
    """The checkpoint ``variant`` fine-tunes from (None: from scratch), trained here unless already there."""
    run = out / variant
    if variant == "scratch":
        return None
    roi = json.dumps([args.roi] * 3)
    if variant in ("ssl", "mim"):
        mim = ["--model.init_args.rotation_weight", "0", "--model.init_args.contrastive_weight", "0"]
        steps = args.pretrain_steps
        command = ["pretrain", "--config", "configs/pretrain_demo.yaml", "--data.init_args.roi_size", roi,
                   "--data.init_args.data_dir", str(data["unlabelled"])]  # fmt: skip
        command += mim if variant == "mim" else []
    else:
        steps = args.clip_steps
        encoder = {**CLIP_ENCODER, "init_args": {**CLIP_ENCODER["init_args"], "feature_size": args.feature_size}}
        command = ["fit", "--config", "configs/clip_demo.yaml", "--model.init_args.image_encoder", json.dumps(encoder),
                   "--data.init_args.reports", str(data["unlabelled"] / "reports.jsonl"),
                   "--data.init_args.val_reports", "null", "--data.init_args.val_fraction", "0",
                   "--data.init_args.roi_size", roi, "--data.init_args.batch_size", str(args.clip_batch)]  # fmt: skip
    if variant != "clip":
        command += ["--model.init_args.net.init_args.feature_size", str(args.feature_size)]
    if not finished(run, steps):
        start = time.time()
        medseg(*command, "--seed_everything", "0", *logged(run, steps))
        (run / "seconds.txt").write_text(f"{time.time() - start:.0f}\n", encoding="utf-8")
    return run / "checkpoints" / "last.ckpt"


def finetune(variant: str, start: Path | None, seed: int, out: Path, data: dict, args: argparse.Namespace) -> dict:
    """Fine-tune, predict and evaluate one variant at one seed; the held-out summary of ``medseg evaluate``."""
    run = out / f"{variant}_finetune_seed{seed}"
    summary = run / "pred" / "metrics_summary.json"
    if not summary.is_file():
        roi = json.dumps([args.roi] * 3)
        options = ["--seed_everything", str(seed), "--data.init_args.seed", str(seed),
                   "--data.init_args.data_dir", str(data["labelled"]), "--data.init_args.augment", "nnunet",
                   "--data.init_args.roi_size", roi, "--model.init_args.roi_size", roi,
                   "--model.init_args.net.init_args.feature_size", str(args.feature_size)]  # fmt: skip
        if start is not None:
            options += ["--model.init_args.pretrained", str(start),
                        "--model.init_args.freeze_encoder_steps", str(args.freeze_steps),
                        "--model.init_args.layer_decay", str(args.layer_decay)]  # fmt: skip
        begin = time.time()
        if not finished(run, args.finetune_steps):
            medseg("fit", "--config", "configs/swin_unetr_demo.yaml", *options, *logged(run, args.finetune_steps))
        ckpt = str(run / "checkpoints" / "last.ckpt")
        medseg("predict", str(data["test"]), "--ckpt", ckpt, "--out", str(run / "pred"), "--overwrite")
        medseg("evaluate", "--pred", str(run / "pred"), "--label", str(data["test"]))
        (run / "seconds.txt").write_text(f"{time.time() - begin:.0f}\n", encoding="utf-8")
    return json.loads(summary.read_text(encoding="utf-8"))


def dice(summary: dict) -> dict[str, float]:
    scores = {region: summary[f"dice_{region}"]["mean"] for region in REGIONS}
    return {**scores, "mean": sum(scores.values()) / len(scores)}


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        f"{'variant':10}{'seeds':>6}" + "".join(f"{r.upper():>9}" for r in REGIONS) + f"{'mean':>9}{'vs scratch':>12}"
    ]
    means = {v: {k: sum(r[k] for r in rows) / len(rows) for k in (*REGIONS, "mean")} for v, rows in results.items()}
    base = means.get("scratch", {}).get("mean")
    for variant, row in means.items():
        gain = f"{row['mean'] - base:+12.3f}" if base is not None and variant != "scratch" else f"{'':12}"
        cells = "".join(f"{row[k]:9.3f}" for k in (*REGIONS, "mean"))
        lines.append(f"{variant:10}{len(results[variant]):6d}{cells}{gain}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_pretrain"))
    parser.add_argument("--labelled", type=int, default=4, help="labelled training cases (default 4)")
    parser.add_argument("--unlabelled", type=int, default=40, help="unlabelled cases to pre-train on (default 40)")
    parser.add_argument("--test", type=int, default=8, help="held-out cases (default 8)")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64], help="demo case shape (default 96 96 64)")
    parser.add_argument("--variants", nargs="+", default=["scratch", "ssl", "clip"],
                        choices=["scratch", "ssl", "mim", "clip"])  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds (default 0)")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="medseg pretrain steps (default 300)")
    parser.add_argument("--clip-steps", type=int, default=150, help="CLIP steps (default 150)")
    parser.add_argument("--clip-batch", type=int, default=8, help="CLIP pairs per step (default 8)")
    parser.add_argument("--finetune-steps", type=int, default=300, help="fine-tuning steps (default 300)")
    parser.add_argument("--freeze-steps", type=int, default=0, help="pre-trained variants: encoder frozen this long")
    parser.add_argument("--layer-decay", type=float, default=1.0, help="pre-trained variants: layer-wise lr decay")
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--roi", type=int, default=64, help="crop side for every stage (default 64)")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    began = time.time()
    data = make_data(out, args)
    results: dict[str, list[dict]] = {}
    for variant in args.variants:
        start = pretrain(variant, out, data, args)
        results[variant] = [dice(finetune(variant, start, seed, out, data, args)) for seed in args.seeds]
    print(f"\nheld-out Dice, {args.test} hard cases, {args.finetune_steps} fine-tuning steps on {args.labelled} "
          f"labelled cases (mean over seeds {args.seeds}):\n{table(results)}")  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    record = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "commit": commit,
              "results": results, "seconds": round(time.time() - began)}  # fmt: skip
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out / 'results.json'} ({record['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
