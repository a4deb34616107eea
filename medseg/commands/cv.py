"""``medseg cv``: k-fold cross-validation from a fit config, with out-of-fold predictions and scores."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from medseg.commands.common import check_fit_overrides
from medseg.crossval import (
    fit_fold,
    learn_calibration,
    learn_postprocessing,
    out_of_fold,
    summarize_folds,
    write_splits,
)
from medseg.evaluation import format_table
from medseg.inference.calibration import Samples
from medseg.io import check_output_target

DESCRIPTION = """\
Cross-validate a training recipe: split the labelled cases of the config's dataset into K folds
(deterministic from the case ids and data.init_args.seed; written to OUT/splits.json), train one model
per fold with `medseg fit` (fold k validates on fold k: OUT/fold_k/checkpoints/last.ckpt), segment each
fold's held-out cases with its own model into OUT/oof/, and score them: Dice and HD95 per region or
class, per fold and pooled over every case (OUT/metrics_per_case.csv with a fold column,
OUT/metrics_summary.json). Then it chooses post-processing on the out-of-fold predictions (removing
connected components below a volume per region or class, relabelling a small enhancing tumour as core),
keeping each only where it raised their mean score (--postprocess-objective: voxel-wise Dice,
lesion-wise Dice as BraTS 2023+ ranks, or by default the mean of both), and stores it as postprocess.json beside every
fold's checkpoint, where `medseg predict --ckpt OUT/fold_*/checkpoints/last.ckpt` applies it. It also
fits temperatures on the out-of-fold probabilities (calibration.json there: calibrated
`predict --probabilities` and `--uncertainty`; the labels do not change) and prints the expected
calibration error before and after.

Every fold trains with the same task (CT statistics, where the config has none, measured once on fold
0's training cases), so the fold models can be averaged: medseg predict --ckpt OUT/fold_*/checkpoints/
last.ckpt --tta.

Rerun the same command after an interruption: finished folds are skipped, an interrupted fold resumes
from its last.ckpt. Options after -- go to every `medseg fit`.

example: medseg cv --config configs/swin_unetr_demo.yaml --folds 3 --out runs/cv \\
             -- --data.init_args.data_dir demo_run/data/train --trainer.max_steps 150
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg cv", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="fit config (as for medseg fit --config)")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default: 5)")
    parser.add_argument("--out", required=True, help="output folder: splits, one run per fold, oof/, metrics")
    parser.add_argument("--no-hd95", action="store_true", help="Dice only (faster scoring)")
    parser.add_argument(
        "--postprocess-objective",
        choices=["dice", "lesion", "both"],
        default="both",
        help="what the post-processing chosen on the out-of-fold predictions must raise: voxel-wise Dice, "
        "lesion-wise Dice (BraTS 2023+ ranking) or the mean of the two (default: both)",
    )
    parser.add_argument("fit_overrides", nargs="*", metavar="-- FIT_OPTION", help="options passed on to every fit")
    return parser


def run(args: argparse.Namespace) -> int:
    from medseg.cli import MedsegCLI
    from medseg.inference import Predictor

    os.environ.setdefault("WANDB_MODE", "offline")
    out = Path(args.out)
    check_output_target(out)  # before the first fit
    base = ["--config", args.config, *args.fit_overrides]
    folds = ["--data.init_args.n_folds", str(args.folds), "--data.init_args.fold", "0"]
    datamodule = MedsegCLI(args=[*base, *folds], run=False).datamodule  # the cases, as fit reads them
    datamodule.setup("fit")
    cases = datamodule.splits["train"] + datamodule.splits["val"]
    assigned = write_splits(cases, args.folds, datamodule.hparams.seed, out / "splits.json")
    # one task for every fold (CT statistics measured once), so that the fold models form an ensemble
    base += ["--data.init_args.task", json.dumps(datamodule.task.to_dict())]
    print(f"{len(cases)} labelled cases in {args.folds} folds: {out / 'splits.json'}")

    rows, samples = [], Samples(per_case=100_000, seed=0)
    for fold in range(args.folds):
        status = fit_fold(lambda a: MedsegCLI(args=["fit", *a]), base, fold, args.folds, out)
        print(f"fold {fold}: fit {status}")
        predictor = Predictor.from_checkpoint(out / f"fold_{fold}" / "checkpoints" / "last.ckpt")
        held_out = [c for c in cases if assigned[c["case_id"]] == fold]
        rows += out_of_fold(predictor, held_out, fold, out / "oof", hd95=not args.no_hd95, samples=samples)
    summary = summarize_folds(rows, out, predictor.task)
    for fold, stats in summary["folds"].items():
        print(f"fold {fold}: mean Dice {stats['dice_mean']['mean']:.4f} over {stats['dice_mean']['n']} case(s)")
    print("pooled over all folds:\n" + format_table(summary))
    print(f"out-of-fold predictions: {out / 'oof'}\nmetrics: {out / 'metrics_per_case.csv'}")
    fold_dirs = [out / f"fold_{k}" for k in range(args.folds)]
    objective = args.postprocess_objective
    config = learn_postprocessing(cases, out / "oof", predictor.task, fold_dirs, objective)
    chosen = json.dumps(config) if config else f"none (nothing raised the out-of-fold score, {objective})"
    print(
        f"post-processing chosen on the out-of-fold predictions ({objective}): {chosen}; stored beside each "
        "fold's checkpoint"
    )
    calibration = learn_calibration(samples, predictor.task, fold_dirs)
    temps = ", ".join(f"{k} {v:.3f}" for k, v in calibration["temperature"].items())
    ece = {when: ", ".join(f"{k} {v:.4f}" for k, v in calibration["ece"][when].items()) for when in ("before", "after")}
    print(
        f"calibration fitted on the out-of-fold probabilities: temperature {temps}; stored beside each fold's "
        f"checkpoint\nout-of-fold ECE before: {ece['before']}\nout-of-fold ECE after:  {ece['after']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_fit_overrides(parser, args.fit_overrides)
    return run(args)
