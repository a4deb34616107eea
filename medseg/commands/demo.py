"""``medseg demo``: the whole pipeline on generated data: demo-data -> fit -> predict -> evaluate."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medseg.data.demo import generate_dataset

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "swin_unetr_demo.yaml"
TEST_START = 10_000  # held-out case numbers start here: never a training case


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg demo",
        description=(
            "Run medseg end to end on synthetic BraTS-style data it generates itself (nothing is downloaded): "
            "write OUT/data/train and a held-out OUT/data/test, train Swin UNETR (configs/swin_unetr_demo.yaml: "
            "feature_size 12, roi 64), segment the held-out cases into OUT/predictions and print Dice and HD95 "
            "per region. The default budget takes about 8 minutes on 2 CPU cores."
        ),
    )
    parser.add_argument("--out", default="demo_run", help="working folder (default: demo_run)")
    parser.add_argument("--cases", type=int, default=48, help="training cases to generate (default: 48)")
    parser.add_argument("--test-cases", type=int, default=8, help="held-out cases (default: 8)")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training (default: 0)")
    parser.add_argument("--config", default=str(CONFIG), help="fit config (default: configs/swin_unetr_demo.yaml)")
    parser.add_argument("--logger", choices=["wandb", "csv"], default="wandb", help="wandb (offline) or csv")
    parser.add_argument(
        "fit_overrides",
        nargs="*",
        metavar="-- FIT_OPTION",
        help="after --: options passed on to `medseg fit`, e.g. -- --model.init_args.lr 2e-3",
    )
    return parser


def _generate(root: Path, n: int, seed: int, start: int) -> None:
    if root.is_dir() and len(list(root.glob("BraTS2021_*"))) >= n:
        print(f"using the {n} cases already in {root}")
        return
    generate_dataset(root, n, seed=seed, start_index=start)


def run(args: argparse.Namespace) -> int:
    from medseg.cli import MedsegCLI
    from medseg.commands import evaluate, predict
    from medseg.reporting import html as report

    out = Path(args.out)
    train_dir, test_dir, run_dir = out / "data" / "train", out / "data" / "test", out / "run"
    timings = {}

    start = time.perf_counter()
    _generate(train_dir, args.cases, args.seed, 0)
    _generate(test_dir, args.test_cases, args.seed, TEST_START)
    timings["demo-data"] = time.perf_counter() - start

    fit_args = [
        "fit",
        "--config", args.config,
        "--seed_everything", str(args.seed),
        "--data.init_args.data_dir", str(train_dir),
        "--trainer.default_root_dir", str(run_dir),
    ]  # fmt: skip
    if args.logger == "csv":
        fit_args += [
            "--trainer.logger",
            "pytorch_lightning.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            str(run_dir),
        ]
    else:
        fit_args += ["--trainer.logger.init_args.save_dir", str(run_dir)]
    if args.max_steps:
        fit_args += ["--trainer.max_steps", str(args.max_steps)]
    fit_args += args.fit_overrides
    start = time.perf_counter()
    MedsegCLI(args=fit_args)
    timings["fit"] = time.perf_counter() - start

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    code = predict.main(
        [str(test_dir), "--ckpt", str(ckpt), "--out", str(out / "predictions"), "--overwrite", "--report"]
    )
    timings["predict"] = time.perf_counter() - start
    if code:
        return code

    start = time.perf_counter()
    code = evaluate.main(["--pred", str(out / "predictions"), "--label", str(test_dir)])
    timings["evaluate"] = time.perf_counter() - start
    report_dir = out / "predictions" / "report"
    for metrics_csv in sorted(run_dir.glob("lightning_logs/version_*/metrics.csv"))[-1:]:  # CSV logger
        print(f"training curves: {report.plot_curves(metrics_csv, report_dir / 'training_curves.png')}")
    report.write_html(report_dir, metrics_summary=out / "predictions" / "metrics_summary.json")
    print(f"report: {report_dir / 'index.html'}")
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {sum(timings.values()):.0f} s")
    print(f"checkpoint: {ckpt}\npredictions: {out / 'predictions'}")
    return code


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
