"""``medseg postprocess``: choose post-processing for a model on labelled cases it did not train on."""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from medseg.commands.common import add_validation_arguments, parse_validation_args, validation_cases
from medseg.inference.postprocess import FILENAME, OBJECTIVES
from medseg.io import write_atomic

DESCRIPTION = f"""\
Choose post-processing for a `medseg fit` checkpoint, or an ensemble of them, on labelled cases the models
did not train on (a validation set; `medseg cv` chooses it on its out-of-fold predictions itself). Each
case is segmented without post-processing; then, per region or class, the smallest connected components
are removed below the volume (0.1, 0.25, 0.5 or 1 ml) that raises the mean score over the cases most, and,
for BraTS regions, an enhancing tumour smaller in total than 0.1-1 ml is relabelled as core; each is kept
only where it raised the score (--objective: voxel-wise Dice, lesion-wise Dice as BraTS 2023+ ranks, or by
default the mean of both). Prints the score per output without and with it, and writes {FILENAME} beside
the (first) checkpoint, where `medseg predict` applies it, or to --out. Scores on the cases chosen on are
optimistic: judge the result on other held-out cases.

DATA is any dataset medseg trains from (BraTS, MSD, nnU-Net, a datalist); every labelled case in it is
used.

example: medseg postprocess demo_run/data/val --ckpt runs/demo/checkpoints/last.ckpt
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg postprocess", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_validation_arguments(parser, FILENAME, "segment with mirrored passes (as predict --tta)")
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="both",
        help="what the post-processing must raise: voxel-wise Dice, lesion-wise Dice, or their mean (default)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from medseg.inference.postprocess import segment_and_choose

    args = parse_validation_args(build_parser(), argv)
    predictor, cases = validation_cases(args, "choose post-processing on")
    progress = tqdm(cases, desc="segment", unit="case", disable=None)
    config, scores = segment_and_choose(predictor, progress, args.objective)
    write_atomic(args.out, json.dumps(config, indent=1))
    print(f"post-processing ({args.objective}): {json.dumps(config) if config else 'none (nothing raised the score)'}")
    for name, (before, after) in scores.items():
        print(f"{name}: {args.objective} score {before:.4f} without, {after:.4f} with")
    print(f"{len(cases)} case(s); wrote {args.out}")
    return 0
