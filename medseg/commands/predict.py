"""``medseg predict``: segment scans from files with a trained checkpoint; no labels needed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pytorch_lightning import LightningModule, Trainer
from tqdm import tqdm

from medseg.commands.common import report_failures
from medseg.data.predict_inputs import find_predict_cases
from medseg.devices import PRECISIONS, resolve_device
from medseg.errors import find_medseg_error
from medseg.inference import Predictor
from medseg.inference.calibration import beside as calibration_beside
from medseg.inference.postprocess import beside
from medseg.inference.segment import model_task
from medseg.io import case_output_name, check_output_dir, check_output_target
from medseg.reporting import html as report
from medseg.reporting.review import scan_files
from medseg.tasks import PRESETS, get_task

DESCRIPTION = """\
Segment CT or MRI scans with a checkpoint written by `medseg fit`: the checkpoint knows its task (the
input channels, the labels and whether it learned overlapping regions or exclusive classes).

INPUT can be, for a brain-tumour model (t1, t1ce, t2, flair): the four modality files of one case (BraTS
2021 or 2023 naming, or nnU-Net <case>_0000..0003), a case folder, a folder of case folders, a flat
nnU-Net-style folder, or a single 4-D file. For any other model: nnU-Net-style <case>_0000.. files (one
per channel), single images (3-D for one channel, 4-D with the channels on the last axis, e.g. MSD's
imagesTs/), folders of them, or for one channel a DICOM series folder. Several inputs may be mixed.
NIfTI, NRRD and MetaImage.

For each case it writes OUT/<case>.nii.gz: a label map in the training dataset's own label values
(BraTS 2021: 1 necrotic, 2 edema, 4 enhancing; an organ dataset: each organ's value), with the input's
exact shape and affine, so it overlays the scan in ITK-SNAP or 3D Slicer. With --probabilities also
OUT/<case>_prob.nii.gz: float32 [X, Y, Z, N]: a sigmoid per region (TC, WT, ET), or a softmax over
background and each class.

Several --ckpt make an ensemble: the models (the same task and resampling) each predict, and their
probabilities are averaged before thresholding (regions) or the argmax (classes). --tta averages, per
model, over the scan mirrored along every combination of axes (nnU-Net's test-time augmentation): 8
passes for regions; for classes only axes 1 and 2 by default (4 passes), since a left-right mirror would
swap left and right organs (--tta-axes to choose). The passes per case and the time per case are printed.

Post-processing (removing small connected components per output, relabelling a small enhancing tumour
as core) comes from --postprocess FILE.json, or from a postprocess.json beside the checkpoint, applied
by default (--no-postprocess to skip it); see medseg/inference/postprocess.py.

Files are written under a temporary name and renamed when complete; cases whose output exists are
skipped unless --overwrite. A bad case is reported and skipped; the run exits 1 if any case failed.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg predict", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="case files or folders (see above)")
    parser.add_argument(
        "--ckpt",
        required=True,
        nargs="+",
        metavar="CKPT",
        help="checkpoint written by `medseg fit` (.ckpt), or a model written by `medseg export`; several: an "
        "ensemble (the same task and resampling), their probabilities averaged",
    )
    parser.add_argument("--out", "-o", required=True, help="output folder (created if missing)")
    parser.add_argument("--probabilities", action="store_true", help="also write <case>_prob.nii.gz")
    parser.add_argument("--overwrite", action="store_true", help="redo cases whose output already exists")
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write OUT/report/: index.html, a page of the cases (volumes in ml) with a viewer of each case's "
        "scans and prediction that opens offline from the file system, and a PNG overlay per case",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="split the cases over N processes with Lightning DDP (GPUs, or CPU processes)",
    )
    parser.add_argument("--num-nodes", type=int, default=1, help="machines for --devices (launch one process per node)")
    parser.add_argument(
        "--window",
        nargs="+",
        default=["roi"],
        metavar="SIZE",
        help="inference window: roi (default: the training roi_size, as validation does), auto (the whole "
        "head-cropped volume in one pass when it fits in 80%% of the free memory, else the largest window that "
        "does), plan (per case, the fewest windows per axis no larger than --max-window, then the smallest "
        "sides covering the cropped volume: a 146 x 174 x 149 crop takes 8 windows of 96^3 instead of 8 of "
        "128^3) or three sides, e.g. 128 128 128. auto and plan are 2-4x faster on large scans but windows "
        "other than the training roi changed 0.03-0.25 Dice per region on hard cases (docs/benchmarks.md). "
        "The windows of each case are printed",
    )
    parser.add_argument(
        "--max-window",
        type=int,
        nargs="+",
        metavar="SIDE",
        help="--window plan: the largest window side, one or three (default: the training roi_size)",
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (default): bf16 where the device computes it fast (a CPU with AMX, a GPU with bf16), else "
        "fp32; fp32; or bf16 (the network in bfloat16 autocast: labels agree with fp32 at Dice >= 0.99, "
        "1.5x faster at feature_size 48 with AMX, slower on CPUs without it); each case prints which ran",
    )
    precision.add_argument("--bf16", action="store_true", help="the same as --precision bf16")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap (default: the checkpoint's)")
    parser.add_argument("--mode", choices=["constant", "gaussian"], help="window blending (default: the checkpoint's)")
    parser.add_argument("--sw-batch-size", type=int, help="windows per forward pass")
    parser.add_argument("--stitch-device", help="device the whole-volume output is stitched on (e.g. cpu)")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average over mirrored copies of each scan (8 passes per model for "
        "regions, 4 for classes: see --tta-axes)",
    )
    parser.add_argument(
        "--tta-axes",
        nargs="+",
        type=int,
        choices=(0, 1, 2),
        metavar="AXIS",
        help="the RAS axes --tta mirrors (implies --tta): 0 left-right, 1 anterior-posterior, 2 inferior-superior "
        "(default: 0 1 2 for regions; 1 2 for classes, as mirroring left-right would swap left and right organs)",
    )
    post = parser.add_mutually_exclusive_group()
    post.add_argument(
        "--postprocess",
        metavar="FILE.json",
        help='post-processing, e.g. {"min_component_ml": {"WT": 0.5}, "et_to_tc_below_ml": 0.3} (default: '
        "postprocess.json beside the checkpoint, when there is one)",
    )
    post.add_argument("--no-postprocess", action="store_true", help="ignore a postprocess.json beside the checkpoint")
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write <case>_uncertainty.nii.gz: per region the entropy (bits, 0 certain to 1) of its "
        "(calibrated) probability; one map for a classes task",
    )
    cal = parser.add_mutually_exclusive_group()
    cal.add_argument(
        "--calibration",
        metavar="FILE.json",
        help='temperatures for --probabilities and --uncertainty, e.g. {"temperature": {"TC": 1.8, "WT": 2.3, '
        '"ET": 1.6}} (default: calibration.json beside the checkpoint, written by medseg calibrate or medseg cv)',
    )
    cal.add_argument("--no-calibration", action="store_true", help="ignore a calibration.json beside the checkpoint")
    parser.add_argument(
        "--label-convention",
        choices=list(PRESETS),
        help="brain-tumour models: write labels in this preset's values instead (the same regions)",
    )
    return parser


def _report_case(result, case: dict, predictor: Predictor, out: Path) -> dict:
    """The case's PNG and its row of the review page: volumes per output and the files the viewer shows."""
    image, masks = result.preview
    task = predictor.convention
    png = report.save_overlay(
        image, masks, out / "report" / f"{result.case_id}.png", result.case_id, names=task.outputs
    )
    volumes = report.region_volumes_ml(result.label, task, result.voxel_ml)  # ml per output of the task
    files = {
        "images": scan_files(case, predictor.task.channel_names),
        "prediction": str(out / case_output_name(case["case_id"])),
    }
    return {"case_id": result.case_id, **volumes, "overlay": png.name, "files": files}


def postprocess_file(args: argparse.Namespace) -> Path | None:
    """``--postprocess``, else a ``postprocess.json`` beside the checkpoint(s) unless ``--no-postprocess``."""
    if args.postprocess:
        return Path(args.postprocess)
    return None if args.no_postprocess else beside(args.ckpt)


def calibration_file(args: argparse.Namespace) -> Path | None:
    """``--calibration``, else a ``calibration.json`` beside the checkpoint(s) unless ``--no-calibration``."""
    if args.calibration:
        return Path(args.calibration)
    return None if args.no_calibration else calibration_beside(args.ckpt)


def _predictor(args: argparse.Namespace, device: str | None = None) -> Predictor:
    return Predictor.from_checkpoints(
        args.ckpt,
        device=device or args.device,
        overlap=args.overlap,
        mode=args.mode,
        sw_batch_size=args.sw_batch_size,
        stitch_device=args.stitch_device,
        label_convention=args.label_convention,
        window=args.window[0] if len(args.window) == 1 else args.window,
        max_window=args.max_window,
        precision="bf16" if args.bf16 else args.precision or "auto",
        tta=args.tta or args.tta_axes is not None,
        tta_axes=args.tta_axes,
        postprocess=postprocess_file(args),
        calibration=calibration_file(args) if args.probabilities or args.uncertainty else None,
    )


def predict_one(predictor: Predictor, case: dict, args: argparse.Namespace) -> dict:
    """Segment and write one case. Returns ``{"case_id", "status": written|skipped|failed, "error", "row"}``;
    a bad case (a MedsegError) is reported, not raised, so a folder goes on past it."""
    out = Path(args.out)
    outcome = {"case_id": case["case_id"], "status": "written", "error": None, "row": None, "seconds": None}
    if (out / case_output_name(case["case_id"])).exists() and not args.overwrite:
        return {**outcome, "status": "skipped"}
    start = time.perf_counter()
    try:
        result = predictor.predict_case(
            case, probabilities=args.probabilities, preview=args.report, uncertain=args.uncertainty
        )
    except Exception as e:
        error = find_medseg_error(e)
        if error is None:
            raise
        tqdm.write(f"medseg predict: skipped {case['case_id']}: {error}", file=sys.stderr)
        return {**outcome, "status": "failed", "error": str(error)}
    if result.windows:
        tqdm.write(f"{case['case_id']}: {result.windows}")
    if args.report:
        outcome["row"] = _report_case(result, case, predictor, out.resolve())
    predictor.write(result, out)
    return {**outcome, "seconds": time.perf_counter() - start, "passes": predictor.describe_passes()}


class DistributedPredict(LightningModule):
    """``Trainer.predict`` over cases with Lightning DDP: each rank segments its share of the folder
    (Lightning's unrepeated distributed sampler: every case on exactly one rank) and writes it."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args
        self.predictor: Predictor | None = None
        self.outcomes: list[dict] = []

    def setup(self, stage: str) -> None:
        device = str(self.device) if self.device.type == "cuda" else "cpu"
        self.predictor = _predictor(self.args, device)

    def predict_step(self, batch: list[dict], batch_idx: int) -> None:
        self.outcomes += [{**predict_one(self.predictor, case, self.args), "rank": self.global_rank} for case in batch]


def _predict_distributed(cases: list[dict], args: argparse.Namespace) -> list[dict]:
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    accelerator = "gpu" if resolve_device(args.device).type == "cuda" else "cpu"
    trainer = Trainer(
        accelerator=accelerator, devices=args.devices, num_nodes=args.num_nodes, strategy="ddp",
        logger=False, enable_checkpointing=False, enable_model_summary=False,
    )  # fmt: skip
    module = DistributedPredict(args)
    loader = DataLoader(cases, batch_size=1, collate_fn=list)
    trainer.predict(module, loader, return_predictions=False)
    gathered = [None] * trainer.world_size
    dist.all_gather_object(gathered, module.outcomes)
    dist.barrier()
    rank = trainer.global_rank
    dist.destroy_process_group()  # before any rank exits: gloo threads must not outlive the interpreter
    if rank != 0:
        sys.exit(0)  # rank 0 reports for everyone
    return [o for rank in gathered for o in rank]


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_output_target(out)  # before the model loads
    if args.devices > 1 or args.num_nodes > 1:  # each process loads the model; here only its task is read
        cases = find_predict_cases(args.inputs, model_task(args.ckpt[0]).channel_names)
        check_output_dir(out, cases)
        outcomes, predictor = _predict_distributed(cases, args), None
    else:
        predictor = _predictor(args)
        cases = find_predict_cases(args.inputs, predictor.task.channel_names)  # the channels the model takes
        check_output_dir(out, cases)
        outcomes = []
        with tqdm(cases, desc="predict", unit="case", disable=None) as bar:
            for case in bar:
                outcomes.append(predict_one(predictor, case, args))
                if outcomes[-1]["seconds"] is not None:
                    bar.set_postfix_str(f"{outcomes[-1]['seconds']:.1f} s/case, {predictor.passes} passes")
    rows = [o["row"] for o in outcomes if o["row"]]
    if args.report and rows:
        task = predictor.convention if predictor else get_task(args.label_convention or model_task(args.ckpt[0]))
        print(f"report: {report.write_html(out / 'report', report.merge_rows(out / 'report', rows), task=task)}")
    counts = {status: sum(o["status"] == status for o in outcomes) for status in ("written", "skipped", "failed")}
    note = f"; {counts['skipped']} already there (use --overwrite to redo)" if counts["skipped"] else ""
    print(f"wrote {counts['written']} label map(s) to {out}{note}")
    timed = [o for o in outcomes if o["seconds"] is not None]
    if timed:
        print(f"{timed[0]['passes']}: {sum(o['seconds'] for o in timed) / len(timed):.2f} s per case")
    post = postprocess_file(args)
    if post is not None:
        how = "" if args.postprocess else " (stored beside the checkpoint; --no-postprocess to turn it off)"
        print(f"post-processing: {post}{how}")
    calibration = calibration_file(args) if args.probabilities or args.uncertainty else None
    if calibration is not None:
        how = "" if args.calibration else " (stored beside the checkpoint; --no-calibration to turn it off)"
        print(f"calibrated probabilities: {calibration}{how}")
    if "rank" in (outcomes[0] if outcomes else {}):
        for rank in sorted({o["rank"] for o in outcomes}):
            print(f"  rank {rank}: " + " ".join(o["case_id"] for o in outcomes if o["rank"] == rank))
    return report_failures([o["error"] for o in outcomes if o["status"] == "failed"])


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
