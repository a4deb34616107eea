"""``medseg calibrate``: fit temperatures for a model's probabilities on labelled cases it did not train on."""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from medseg.commands.common import add_validation_arguments, parse_validation_args, validation_cases
from medseg.inference.calibration import FILENAME, fit_on_cases
from medseg.io import write_atomic

DESCRIPTION = f"""\
Fit temperature scaling (one temperature per region, or one for the softmax over classes) for the
probabilities of a `medseg fit` checkpoint, or of an ensemble of them, on labelled cases the models did
not train on (a validation set; `medseg cv` fits them on its out-of-fold predictions itself). Labels
never change: only `medseg predict --probabilities` and `--uncertainty` use the temperatures.

DATA is any dataset medseg trains from (BraTS, MSD, nnU-Net, a datalist); every labelled case in it is
used. Prints the expected calibration error (ECE: 15 bins, each output's probability of being positive,
over the voxels the network segmented) before and after, on the voxels fitted on, and writes
{FILENAME} beside the (first) checkpoint, where `medseg predict` finds it, or to --out.

example: medseg calibrate demo_run/data/val --ckpt runs/demo/checkpoints/last.ckpt
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg calibrate", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_validation_arguments(parser, FILENAME, "calibrate the mirrored-average probabilities (as predict --tta)")
    parser.add_argument("--voxels", type=int, default=200_000, help="voxels sampled per case (default: 200000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the voxel sample (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_validation_args(build_parser(), argv)
    predictor, cases = validation_cases(args, "calibrate on")
    progress = lambda c: tqdm(c, desc="calibrate", unit="case", disable=None)  # noqa: E731
    config = fit_on_cases(predictor, cases, args.voxels, args.seed, progress)
    write_atomic(args.out, json.dumps(config, indent=1))
    for name, t in config["temperature"].items():
        print(f"{name}: temperature {t:.3f}")
    for when in ("before", "after"):
        print(f"ECE {when}: " + ", ".join(f"{k} {v:.4f}" for k, v in config["ece"][when].items()))
    print(f"{len(cases)} case(s); wrote {args.out}")
    return 0
