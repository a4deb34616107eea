"""``medseg evaluate``: score a folder of predicted label maps against reference labels (:mod:`medseg.evaluation`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medseg.data.labels import CONVENTIONS
from medseg.evaluation import (
    PER_CASE_CSV,
    SUMMARY_JSON,
    evaluate_folder,
    format_table,
    list_some,
    summary_outputs,
)
from medseg.io import check_output_target
from medseg.metrics.lesion import LESION_HD95_PENALTY_MM
from medseg.metrics.segmentation import HD95_PENALTY_MM
from medseg.reporting import html as report
from medseg.reporting.scored import scored_rows
from medseg.tasks import get_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg evaluate",
        description="Score predicted label maps against reference labels: Dice and HD95 per output of the task "
        "(BraTS regions TC, WT, ET; organ classes) for every case, then mean, std and median.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "folders:\n"
            "  --pred   <case>.nii.gz label maps\n"
            "  --label  <case>.nii.gz | <case>/<case>_seg.nii.gz (BraTS 2021) | <case>/<case>-seg.nii.gz\n"
            "           (BraTS 2023) | an nnU-Net/MSD dataset root, its labelsTr/ or labelsTs/\n"
            "task (what the label values mean, what is scored):\n"
            "  --task PRESET | dataset.json | datalist.json | model.ckpt  (the labels of the JSON; the task\n"
            "             the checkpoint was trained on)\n"
            '  auto       a dataset.json / dataset_0.json (or one datalist .json) with "labels" in the label\n'
            "             folder or its parent (DATA/labelsTs -> DATA/dataset.json); else, for BraTS, the case\n"
            "             ids (BraTS2021_*, BraTS-XXX-*), else a label holding 4 means brats2021\n"
            "presets (value: sub-region; --convention / --pred-convention take these names):\n"
            "  brats2021  1 necrotic, 2 edema, 4 enhancing\n"
            "  brats2023  1 necrotic, 2 edema, 3 enhancing\n"
            "  msd        1 edema, 2 non-enhancing, 3 enhancing (also nnU-Net's converted BraTS)\n"
            "  brats2024-gli-post  1 NETC, 2 SNFH, 3 ET, 4 resection cavity (regions WT, TC, ET, RC)\n"
            "  brats2024-ped       1 ET, 2 NET, 3 cystic component, 4 edema\n"
            "regions: TC = tumour core, WT = whole tumour, ET = enhancing tumour; a classes task (organs)\n"
            "scores each foreground class, and the mean is over them. Empty masks: both empty -> Dice 1,\n"
            f"HD95 0; one empty -> Dice 0, HD95 {HD95_PENALTY_MM} mm (BraTS).\n"
            "--lesion-wise (BraTS 2023+ ranking, by panoptica): each connected component (26-connectivity) is\n"
            "  a lesion; a predicted lesion matches a truth lesion at IoU >= 0.5, one to one; missed and false\n"
            f"  positive lesions score Dice 0, HD95 {LESION_HD95_PENALTY_MM:g} mm; the score is the mean over\n"
            "  matched, missed and false positive lesions (medseg.metrics.lesion: where BraTS 2023 differs).\n"
            f"writes {PER_CASE_CSV} and {SUMMARY_JSON} to --out (default: --pred).\n"
            "exit code 1 on bad input or when a labelled case has no prediction."
        ),
    )
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predictions")
    parser.add_argument("--label", required=True, type=Path, metavar="DIR", help="folder of reference labels")
    parser.add_argument(
        "--task",
        metavar="PRESET|FILE",
        help="task of the labels: a preset, a dataset.json or datalist .json, or a .ckpt (default: auto)",
    )
    parser.add_argument(
        "--convention", default="auto", choices=["auto", *CONVENTIONS], help="preset of the labels (default: auto)"
    )
    parser.add_argument(
        "--pred-convention", choices=list(CONVENTIONS), help="convention of the predictions (default: the labels')"
    )
    parser.add_argument("--no-hd95", action="store_true", help="skip HD95 (Dice only, much faster)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where the CSV/JSON go (default: --pred)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write OUT/report/index.html: the cases worst first, each viewable with its truth beside its "
        "prediction (with the scans when medseg predict --report wrote the predictions), and a PNG per case",
    )
    parser.add_argument(
        "--lesion-wise", action="store_true", help="also lesion-wise Dice and HD95 and lesion counts (BraTS 2023+)"
    )
    parser.add_argument(
        "--min-lesion-volume",
        type=float,
        default=0.0,
        metavar="MM3",
        help="with --lesion-wise: leave out truth lesions of at most this volume (BraTS-GLI: 50; default: 0)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.min_lesion_volume and not args.lesion_wise:
        parser.error("--min-lesion-volume needs --lesion-wise")
    check_output_target(args.out if args.out is not None else args.pred)  # before the scoring
    rows, summary = evaluate_folder(
        args.pred,
        args.label,
        args.convention,
        args.pred_convention,
        not args.no_hd95,
        args.out,
        task=args.task,
        lesion_wise=args.lesion_wise,
        min_lesion_volume_mm3=args.min_lesion_volume,
    )
    print(format_table(summary))
    if args.lesion_wise:
        print(lesion_counts(summary))
    print(f"task: {get_task(summary['task']).describe()} ({summary['task_source']})")
    if summary["ignored_predictions"]:
        ignored = summary["ignored_predictions"]
        print(f"note: ignored {len(ignored)} prediction(s) without a label: {list_some(ignored)}")
    out = args.out if args.out is not None else args.pred
    print(f"per-case metrics: {out / PER_CASE_CSV}\nsummary: {out / SUMMARY_JSON}")
    if args.report and rows:
        print(f"report: {write_report(out / 'report', args, rows, summary, out / SUMMARY_JSON)}")
    if summary["n_missing"]:
        missing = f"{summary['n_missing']} labelled case(s) have no prediction: {list_some(summary['missing'])}"
        print(f"medseg: error: {missing} (left out of the means above)", file=sys.stderr)
        return 1
    return 0


def write_report(report_dir: Path, args: argparse.Namespace, rows: list[dict], summary: dict, summary_json: Path):
    """The review page of the scored cases (:mod:`medseg.reporting.scored`), merged with predict's rows."""
    task = get_task(summary["task"])
    pred_task = get_task(args.pred_convention) if args.pred_convention else None
    scored = scored_rows(report_dir, args.pred, args.label, rows, task, pred_task)
    return report.write_html(report_dir, report.merge_rows(report_dir, scored), summary_json, task=task)


def lesion_counts(summary: dict) -> str:
    """``lesions found/missed/false positive over 2 cases: TC 3/1/2, ...`` (each the summary's mean times n)."""
    counts = []
    for name, key in summary_outputs(summary)[1]:
        stats = [summary[f"lesions_{count}_{key}"] for count in ("tp", "fn", "fp")]
        counts.append(f"{name} " + "/".join(str(round(s["mean"] * s["n"])) for s in stats))
    return f"lesions found/missed/false positive over {summary['n_cases']} cases: " + ", ".join(counts)
