"""``medseg demo``: the whole pipeline on generated data: demo-data -> (plan ->) fit -> predict -> evaluate.

``--kind mri`` (default): BraTS-style brain-tumour MRI trained with configs/swin_unetr_demo.yaml.
``--kind ct``: abdominal CT (five organs, MSD layout) planned by ``medseg plan`` and trained from the plan.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medseg.commands.common import check_fit_overrides
from medseg.data.demo import DIFFICULTIES, generate_dataset

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "swin_unetr_demo.yaml"
TEST_START = 10_000  # held-out case numbers start here: never a training case


CT_CASES, CT_TEST_CASES, CT_STEPS = 24, 6, 400  # what the CT demo's figures in docs/benchmarks.md used
CT_AUGMENT = "light"  # and its augmentation (the plan says nnunet; -- --data.init_args.augment nnunet trains so)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Run medseg end to end on synthetic data it generates itself (nothing is downloaded).

--kind mri (default): BraTS-style brain-tumour MRI. Writes OUT/data/train and a held-out OUT/data/test,
  trains Swin UNETR (configs/swin_unetr_demo.yaml: feature_size 12, roi 64), segments the held-out cases
  into OUT/predictions and prints Dice and HD95 per region (TC, WT, ET). About 5 minutes on 2 CPU cores.
  --difficulty hard: cases with weak, textured lesions, unlabelled mimics, satellites and label noise.
--kind ct: abdominal CT, five organs (liver, spleen, kidneys, aorta), LPS and anisotropic, MSD layout in
  OUT/data (held-out cases in imagesTs/ + labelsTs/). Runs medseg plan (OUT/plan.yaml), trains from the
  plan, segments the held-out cases and prints Dice and HD95 per organ. About 10 minutes on 2 CPU cores.""",
    )
    parser.add_argument("--kind", choices=["mri", "ct"], default="mri", help="brain-tumour MRI or abdominal CT")
    parser.add_argument(
        "--difficulty",
        choices=DIFFICULTIES,
        help="mri: easy, or hard (realistic contrast and confounders; see medseg demo-data --help) (default: easy)",
    )
    parser.add_argument("--out", default="demo_run", help="working folder (default: demo_run)")
    parser.add_argument("--cases", type=int, help=f"training cases to generate (default: 48 mri, {CT_CASES} ct)")
    parser.add_argument("--test-cases", type=int, help=f"held-out cases (default: 8 mri, {CT_TEST_CASES} ct)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help=f"training steps (default: the config's; ct {CT_STEPS})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training (default: 0)")
    parser.add_argument("--config", default=str(CONFIG), help="mri: fit config (default: configs/swin_unetr_demo.yaml)")
    parser.add_argument("--logger", choices=["wandb", "csv"], default="wandb", help="wandb (offline) or csv")
    parser.add_argument(
        "fit_overrides",
        nargs="*",
        metavar="-- FIT_OPTION",
        help="after --: options passed on to `medseg fit`, e.g. -- --model.init_args.lr 2e-3",
    )
    return parser


def _generate(root: Path, n: int, seed: int, start: int, difficulty: str = "easy") -> None:
    if root.is_dir() and len(list(root.glob("BraTS2021_*"))) >= n:
        truth = root / "demo_truth.json"
        cases = json.loads(truth.read_text(encoding="utf-8")).values() if truth.exists() else []
        found = "hard" if any("hard" in case for case in cases) else "easy"  # hard cases record their knobs
        if found != difficulty:
            raise SystemExit(f"medseg demo: error: {root} holds {found} cases, not {difficulty}; choose another --out")
        print(f"using the {n} cases already in {root}")
        return
    generate_dataset(root, n, seed=seed, start_index=start, difficulty=difficulty)


def _logger_args(args: argparse.Namespace, run_dir: Path) -> list[str]:
    if args.logger == "csv":
        return ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(run_dir)]
    return ["--trainer.logger.init_args.save_dir", str(run_dir)]


def run_ct(args: argparse.Namespace) -> int:
    """generate (MSD layout) -> plan -> fit from the plan -> predict imagesTs -> evaluate against labelsTs."""
    from medseg.cli import MedsegCLI
    from medseg.commands import evaluate, plan, predict
    from medseg.data.demo_ct import generate_ct_dataset

    out = Path(args.out)
    data, run_dir, plan_file, predictions = out / "data", out / "run", out / "plan.yaml", out / "predictions"
    n_train, n_test = args.cases or CT_CASES, args.test_cases or CT_TEST_CASES
    timings = {}

    start = time.perf_counter()
    if (
        len(list((data / "labelsTr").glob("*.nii.gz"))) == n_train
        and len(list((data / "labelsTs").glob("*.nii.gz"))) == n_test
    ):
        print(f"using the cases already in {data}")
    else:
        generate_ct_dataset(data, n_train, seed=args.seed, held_out=n_test)
    timings["demo-data"] = time.perf_counter() - start

    start = time.perf_counter()
    steps = str(args.max_steps or CT_STEPS)
    planned = [str(data), "--out", str(plan_file), "--device", "cpu", "--max-steps", steps, "--force"]
    code = plan.main([*planned, "--seed", str(args.seed)])
    timings["plan"] = time.perf_counter() - start
    if code:
        return code

    start = time.perf_counter()
    fit_args = ["fit", "--config", str(plan_file), "--seed_everything", str(args.seed),
                "--trainer.default_root_dir", str(run_dir), *_logger_args(args, run_dir),
                "--data.init_args.augment", CT_AUGMENT]  # fmt: skip
    fit_args += args.fit_overrides
    MedsegCLI(args=fit_args)
    timings["fit"] = time.perf_counter() - start

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    code = predict.main(
        [str(data / "imagesTs"), "--ckpt", str(ckpt), "--out", str(predictions), "--overwrite", "--report"]
    )
    timings["predict"] = time.perf_counter() - start
    if code:
        return code
    start = time.perf_counter()
    code = evaluate.main(["--pred", str(predictions), "--label", str(data / "labelsTs"), "--report"])
    timings["evaluate"] = time.perf_counter() - start
    _finish(predictions, run_dir, timings, ckpt)
    return code


def _finish(predictions: Path, run_dir: Path, timings: dict, ckpt: Path) -> None:
    """The review page (with the run's training curves), timings and where things are; the page last."""
    from medseg.errors import LayoutError
    from medseg.reporting import html as report
    from medseg.reporting.runs import plot_rows, read_run

    report_dir = predictions / "report"
    try:
        plot_rows(read_run(run_dir)[0], report_dir / "training_curves.png")
    except LayoutError as e:  # a logger that wrote nothing readable: the page goes without curves
        print(f"training curves: none ({e})")
    page = report.write_html(report_dir, metrics_summary=predictions / "metrics_summary.json")
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {sum(timings.values()):.0f} s")
    print(f"checkpoint: {ckpt}\npredictions: {predictions}")
    print(f"review page (open it in a browser; it needs no server or network): {page.resolve()}")


def run(args: argparse.Namespace) -> int:
    from medseg.cli import MedsegCLI
    from medseg.commands import evaluate, predict

    if args.kind == "ct":
        return run_ct(args)
    difficulty = args.difficulty or "easy"
    out = Path(args.out)
    train_dir, test_dir, run_dir = out / "data" / "train", out / "data" / "test", out / "run"
    timings = {}

    start = time.perf_counter()
    _generate(train_dir, args.cases or 48, args.seed, 0, difficulty)
    _generate(test_dir, args.test_cases or 8, args.seed, TEST_START, difficulty)
    timings["demo-data"] = time.perf_counter() - start

    fit_args = [
        "fit",
        "--config", args.config,
        "--seed_everything", str(args.seed),
        "--data.init_args.data_dir", str(train_dir),
        "--trainer.default_root_dir", str(run_dir),
    ]  # fmt: skip
    fit_args += _logger_args(args, run_dir)
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
    code = evaluate.main(["--pred", str(out / "predictions"), "--label", str(test_dir), "--report"])
    timings["evaluate"] = time.perf_counter() - start
    _finish(out / "predictions", run_dir, timings, ckpt)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kind == "ct" and args.difficulty is not None:
        parser.error("--difficulty applies to --kind mri only")
    check_fit_overrides(parser, args.fit_overrides)
    return run(args)
