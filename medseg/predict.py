"""``medseg predict``: segment scans from files with a trained checkpoint; no labels needed."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from medseg import report
from medseg.data.layouts import find_predict_cases
from medseg.errors import MedsegError, find_medseg_error
from medseg.inference import Predictor
from medseg.io import case_output_name

DESCRIPTION = """\
Segment brain-tumour MRI scans with a checkpoint written by `medseg fit`.

INPUT can be: the four modality files of one case (t1, t1ce, t2, flair in BraTS 2021 or 2023 naming,
or nnU-Net <case>_0000..0003), a case folder, a folder of case folders (BraTS layouts), a flat
nnU-Net-style folder, or a single 4-D file; several inputs may be mixed. NIfTI, NRRD and MetaImage.

For each case it writes OUT/<case>.nii.gz: a label map in the training dataset's label convention
(BraTS 2021: 1 necrotic, 2 edema, 4 enhancing; BraTS 2023: ET = 3; MSD), with the input's exact shape
and affine, so it overlays the scan in ITK-SNAP or 3D Slicer. With --probabilities also
OUT/<case>_prob.nii.gz: float32 [X, Y, Z, 3] probabilities of TC, WT, ET.

Files are written under a temporary name and renamed when complete; cases whose output exists are
skipped unless --overwrite. A bad case is reported and skipped; the run exits 1 if any case failed.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg predict", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="case files or folders (see above)")
    parser.add_argument(
        "--ckpt", required=True, help="checkpoint written by `medseg fit` (.ckpt), or a model written by `medseg export`"
    )
    parser.add_argument("--out", "-o", required=True, help="output folder (created if missing)")
    parser.add_argument("--probabilities", action="store_true", help="also write <case>_prob.nii.gz")
    parser.add_argument("--overwrite", action="store_true", help="redo cases whose output already exists")
    parser.add_argument(
        "--report", action="store_true", help="also write OUT/report/: a PNG overlay per case and index.html with volumes"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap (default: the checkpoint's)")
    parser.add_argument("--mode", choices=["constant", "gaussian"], help="window blending (default: the checkpoint's)")
    parser.add_argument("--sw-batch-size", type=int, help="windows per forward pass")
    parser.add_argument("--stitch-device", help="device the whole-volume output is stitched on (e.g. cpu)")
    parser.add_argument(
        "--label-convention", choices=["brats2021", "brats2023", "msd"], help="write labels in this convention instead"
    )
    return parser


def check_output_dir(out: Path, inputs: list[dict]) -> None:
    """Fail before any work when the output folder cannot be written or would overwrite an input."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".medseg-write-test."):
            pass
    except OSError as e:
        raise MedsegError(f"output folder {out} is not writable ({e.strerror or e})") from None
    inputs_resolved = {
        Path(p).resolve() for case in inputs for p in (case["image"] if isinstance(case["image"], list) else [case["image"]])
    }
    for case in inputs:
        target = (out / case_output_name(case["case_id"])).resolve()
        if target in inputs_resolved:
            raise MedsegError(f"output {target} would overwrite an input scan; choose another --out")


def _report_case(result, convention, report_dir: Path) -> dict:
    image, regions = result.preview
    png = report.save_overlay(image, regions, report_dir / f"{result.case_id}.png", title=result.case_id)
    volumes = report.region_volumes_ml(result.label, convention, result.voxel_ml)
    return {"case_id": result.case_id, **volumes, "overlay": png.name}


def run(args: argparse.Namespace) -> int:
    cases = find_predict_cases(args.inputs)
    out = Path(args.out)
    check_output_dir(out, cases)
    predictor = Predictor.from_checkpoint(
        args.ckpt,
        device=args.device,
        overlap=args.overlap,
        mode=args.mode,
        sw_batch_size=args.sw_batch_size,
        stitch_device=args.stitch_device,
        label_convention=args.label_convention,
    )
    failures, skipped, written, report_rows = [], 0, 0, []
    for case in tqdm(cases, desc="predict", unit="case", disable=None):
        target = out / case_output_name(case["case_id"])
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            result = predictor.predict_case(case, probabilities=args.probabilities, preview=args.report)
        except Exception as e:
            error = find_medseg_error(e)
            if error is None:
                raise
            failures.append(str(error))
            tqdm.write(f"medseg predict: skipped {case['case_id']}: {error}", file=sys.stderr)
            continue
        if args.report:
            report_rows.append(_report_case(result, predictor.convention, out / "report"))
        predictor.write(result, out)
        written += 1
    if args.report and report_rows:
        index = report.write_html(out / "report", report.merge_rows(out / "report", report_rows))
        print(f"report: {index}")
    print(f"wrote {written} label map(s) to {out}" + (f"; {skipped} already there (use --overwrite to redo)" if skipped else ""))
    if failures:
        print(f"{len(failures)} case(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
