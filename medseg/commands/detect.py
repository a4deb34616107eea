"""``medseg detect``: lesion boxes in world mm from scans with a DETR checkpoint (:mod:`medseg.inference.detect`)."""

from __future__ import annotations

import argparse

from medseg.commands.common import report_failures
from medseg.data.predict_inputs import find_predict_cases
from medseg.inference.detect import BoxDetector, predict_boxes

DESCRIPTION = """\
Detect lesions in brain MRI scans with a checkpoint written by `medseg fit` with a DETR config
(configs/detr_demo.yaml). INPUT: as for `medseg predict` (case files, case folders, dataset folders).

For each case it writes OUT/<case>.json:

  {"case_id": ..., "reference": <input file>, "space": "RAS", "unit": "mm",
   "boxes": [{"box_mm": [x0, y0, z0, x1, y1, z1], "label": 0, "score": 0.93}, ...]}

boxes axis-aligned in world RAS mm, highest score first, those scoring at least --min-score. With
--mask also OUT/<case>_boxes.nii.gz on the input's grid: voxel value k inside the k-th box (by score)
of those scoring at least --mask-score, 0 elsewhere. Files are written under a temporary name and
renamed; cases whose JSON exists are skipped unless --overwrite; a bad case is reported and skipped.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg detect", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="case files or folders")
    parser.add_argument(
        "--ckpt", required=True, help="checkpoint written by `medseg fit --config configs/detr_demo.yaml`"
    )
    parser.add_argument("--out", "-o", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--min-score", type=float, default=0.05, help="leave out boxes scoring below this (default: 0.05)"
    )
    parser.add_argument("--mask", action="store_true", help="also write <case>_boxes.nii.gz on the input grid")
    parser.add_argument(
        "--mask-score", type=float, default=0.5, help="boxes drawn in the mask score at least this (default: 0.5)"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo cases whose output already exists")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``medseg detect``: returns the exit status (1 if any case failed)."""
    args = build_parser().parse_args(argv)
    cases = find_predict_cases(args.inputs)
    detector = BoxDetector.from_checkpoint(args.ckpt, device=args.device)
    written, failures = predict_boxes(
        detector, cases, args.out, args.min_score, args.mask_score if args.mask else None, args.overwrite
    )
    skipped = len(cases) - len(written) - len(failures)
    print(
        f"wrote {len(written)} box file(s) to {args.out}"
        + (f"; {skipped} already there (use --overwrite to redo)" if skipped else "")
    )
    return report_failures(failures)
