"""What several commands share: how they print failures, and the arguments and cases of those that fit
something for a model on labelled validation cases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def report_failures(failures: list[str]) -> int:
    """List the cases that failed on stderr; the exit status: 1 if any failed, else 0."""
    if failures:
        print(f"{len(failures)} case(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0


def check_fit_overrides(parser: argparse.ArgumentParser, overrides: list[str]) -> None:
    """Stop with a usage error when the options meant for ``medseg fit`` (after ``--``) start with a stray
    value: argparse hands every positional to them, and fit would reject it in a page of its usage."""
    if overrides and not overrides[0].startswith("-"):
        parser.error(
            f"unexpected argument {overrides[0]!r}: this command takes no positional argument; options for "
            "`medseg fit` go after --, e.g. -- --model.init_args.lr 2e-3"
        )


def add_validation_arguments(parser: argparse.ArgumentParser, filename: str, tta_help: str) -> None:
    """DATA, ``--ckpt``, ``--out``, ``--tta`` and ``--device`` (what :func:`validation_cases` reads) of the
    commands that fit something for a model on labelled cases it did not train on (``medseg calibrate``,
    ``medseg postprocess``) and store it as ``filename`` beside the checkpoint."""
    parser.add_argument("data", type=Path, nargs="?", metavar="DATA", help="labelled cases the model did not train on")
    parser.add_argument("--ckpt", nargs="+", required=True, help="checkpoint(s); several: an ensemble, as predict")
    parser.add_argument(
        "--out", type=Path, metavar="FILE.json", help=f"where to write (default: {filename} beside --ckpt)"
    )
    parser.add_argument("--tta", action="store_true", help=tta_help)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.set_defaults(out_name=filename)


def parse_validation_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser``'s arguments (see :func:`add_validation_arguments`); DATA may also come last, after the
    checkpoints (``--ckpt a.ckpt b.ckpt DATA``), where ``--ckpt`` would otherwise take it for one of them.
    ``out`` becomes the file to write (the default beside the first checkpoint), checked before any work."""
    from medseg.io import check_output_file

    args = parser.parse_args(argv)
    if args.data is None and len(args.ckpt) > 1 and Path(args.ckpt[-1]).is_dir():
        args.data = Path(args.ckpt.pop())
    if args.data is None:
        parser.error("the following arguments are required: DATA")
    args.out = args.out or Path(args.ckpt[0]).parent / args.out_name
    check_output_file(args.out)
    return args


def validation_cases(args: argparse.Namespace, what: str):
    """The predictor of ``args.ckpt`` (an ensemble when several; no post-processing or calibration) and the
    labelled cases of ``args.data``; a MedsegError when there are none, saying for ``what``."""
    from medseg.data.layouts import read_dataset
    from medseg.errors import MedsegError
    from medseg.inference import Predictor

    predictor = Predictor.from_checkpoints(args.ckpt, device=args.device, tta=args.tta)
    cases = [case for case in read_dataset(args.data, task=predictor.task).cases if case.get("label")]
    if not cases:
        raise MedsegError(f"{args.data}: no labelled case to {what}")
    return predictor, cases
