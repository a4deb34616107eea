"""``medseg demo-data``: write synthetic BraTS-style MRI (:mod:`medseg.data.demo`) or abdominal CT
(:mod:`medseg.data.demo_ct`) cases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medseg.data.demo import DIFFICULTIES, EXTENTS, LAYOUTS, generate_dataset, holds_cases
from medseg.data.demo_ct import CT_LAYOUTS, generate_ct_dataset

KIND_LAYOUTS = {"mri": tuple(sorted(LAYOUTS)), "ct": CT_LAYOUTS}  # the first of each is its default
# MRI-only options: dest -> (flag, default). They default to None so that one given with --kind ct is an error.
MRI_ONLY = {
    "lesions": ("--lesions", [1]),
    "shape": ("--shape", [96, 96, 64]),
    "spacing": ("--spacing", [2, 2, 2.5]),
    "p_enhancing": ("--p-enhancing", 1.0),
    "p_necrosis": ("--p-necrosis", 0.8),
    "with_skull": ("--with-skull", False),
    "difficulty": ("--difficulty", "easy"),
    "extent": ("--extent", "small"),
}
REAL_GRID = {"shape": [240, 240, 155], "spacing": [1.0, 1.0, 1.0]}  # --extent real: BraTS's grid unless given


def main(argv: list[str] | None = None) -> int:
    """``medseg demo-data``: write a synthetic MRI or CT dataset. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="medseg demo-data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Write synthetic cases for trying medseg without downloading anything: BraTS-style brain-tumour MRI
(--kind mri, the default) or abdominal CT with five labelled organs (--kind ct).

mri: each case is a head (scalp, skull, CSF, grey and white matter, ventricles) with one or more
tumours: edema (label 2) around a core with an enhancing rim (4, or 3 in BraTS 2023) and a necrotic
centre (1). Lesion metadata (centre, hemisphere, lobe, volumes, bounding box) goes to OUT/demo_truth.json.
--difficulty hard draws the same heads and tumours, then makes them look like real scans: weak, variable,
textured lesions whose edema fades past its label; unlabelled enhancing vessels, choroid plexus and
white-matter hyperintensities; small labelled satellite lesions; thick-slice blur, a strong bias field,
Rician noise and about a voxel of label-boundary noise. Each case's draws go to demo_truth.json ("hard").
--extent real makes heads of a fixed size whose brain spans what a real skull-stripped BraTS brain does
(foreground crop about 146 x 174 x 148 mm; the default, small, fills the volume: at 240 x 240 x 155 mm a
brain of about 161 x 182 x 108 mm) and defaults --shape and --spacing to BraTS's 240 240 155 at 1 mm.

ct: each case is an abdomen in Hounsfield units (int16; air -1000) with spine, ribs, bowel and labels
1 liver, 2 spleen, 3 right kidney, 4 left kidney, 5 aorta, in a non-contrast, arterial or portal venous
phase; 120 x 96 x 40-50 voxels, 2.4-3.2 mm in-plane, 4-6 mm slices. --held-out N writes N more cases
to imagesTs/ and labelsTs/, listed as the datalist's "test".

Case i is drawn from (--seed, i) alone, so a held-out set made with another --start-index (or, for ct,
--held-out) never repeats a training case.

layouts:
  brats2021  (mri) OUT/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz, labels 1/2/4
  brats2023  (mri) OUT/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz, labels 1/2/3
  msd        (ct)  OUT/dataset.json (Medical Segmentation Decathlon), OUT/imagesTr/abdomen_000.nii.gz,
                   OUT/labelsTr/abdomen_000.nii.gz
  btcv       (ct)  the same files with OUT/dataset_0.json (MONAI's BTCV datalist), about 20 % of the
                   training cases listed under "validation"

--lesions, --shape, --spacing, --p-enhancing, --p-necrosis, --with-skull, --difficulty and --extent
apply to --kind mri only; giving one with --kind ct is an error.""",
        epilog="examples: medseg demo-data --out data/demo --cases 24 && "
        "medseg demo-data --out data/demo_test --cases 6 --start-index 1000; "
        "medseg demo-data --out data/hard --cases 24 --difficulty hard; "
        "medseg demo-data --out data/real --cases 4 --extent real --difficulty hard; "
        "medseg demo-data --kind ct --out data/ct --cases 24 --held-out 6 --layout btcv",
    )
    add = parser.add_argument
    add("--out", required=True, type=Path, metavar="DIR", help="folder to write the cases into")
    add("--kind", choices=tuple(KIND_LAYOUTS), default="mri", help="brain MRI or abdominal CT (default: mri)")
    add("--cases", type=int, default=24, metavar="N", help="number of (training) cases (default: 24)")
    add("--seed", type=int, default=0, help="dataset seed (default: 0)")
    add("--start-index", type=int, default=0, metavar="I", help="number of the first case (default: 0)")
    add(
        "--layout",
        choices=[*KIND_LAYOUTS["mri"], *KIND_LAYOUTS["ct"]],
        help="file names and labels: brats2021 or brats2023 for mri (default: brats2021), msd or btcv for ct "
        "(default: msd)",
    )
    add("--held-out", type=int, default=0, metavar="N", help="ct: N more cases in imagesTs/ + labelsTs/ (default: 0)")
    add("--lesions", type=int, nargs="+", metavar="N", help="mri: lesions per case: N, or MIN MAX (default: 1)")
    add("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="mri: voxels (default 96 96 64; real: 240 240 155)")
    add("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="mri: mm (default: 2 2 2.5; real: 1 1 1)")
    add("--p-enhancing", type=float, help="mri: probability a lesion enhances (default: 1.0)")
    add("--p-necrosis", type=float, help="mri: probability of a necrotic centre (default: 0.8)")
    add("--with-skull", action="store_true", default=None, help="mri: keep scalp and skull (default: skull-stripped)")
    add(
        "--difficulty",
        choices=DIFFICULTIES,
        help="mri: easy, or hard: realistic contrast and confounders (default: easy)",
    )
    add(
        "--extent",
        choices=EXTENTS,
        help="mri: small (the head fills the volume), or real: a brain of real BraTS extent, on BraTS's "
        "240 x 240 x 155 1 mm grid unless --shape/--spacing say otherwise (default: small)",
    )
    add("--overwrite", action="store_true", help="write into a folder that already holds cases")
    args = parser.parse_args(argv)

    layouts = KIND_LAYOUTS[args.kind]
    if args.layout is None:
        args.layout = layouts[0]
    elif args.layout not in layouts:
        other = next(kind for kind, names in KIND_LAYOUTS.items() if args.layout in names)
        parser.error(f"--layout {args.layout} is for --kind {other}; --kind {args.kind} takes {', '.join(layouts)}")
    if args.kind == "ct":
        given = [flag for dest, (flag, _) in MRI_ONLY.items() if getattr(args, dest) is not None]
        if given:
            parser.error(f"{', '.join(given)} apply to --kind mri only")
    else:
        if args.held_out:
            parser.error("--held-out applies to --kind ct only; for mri, write a held-out set with --start-index")
        for dest, (_, default) in MRI_ONLY.items():
            if args.extent == "real" and dest in REAL_GRID:
                default = REAL_GRID[dest]
            if getattr(args, dest) is None:
                setattr(args, dest, default)
        if len(args.lesions) > 2:
            parser.error(f"--lesions takes N or MIN MAX, got {len(args.lesions)} numbers")
    if args.out.exists() and not args.overwrite and holds_cases(args.out):
        print(
            f"medseg demo-data: error: {args.out} already holds cases; pass --overwrite to write over them "
            "or choose another --out",
            file=sys.stderr,
        )
        return 1
    try:
        return _write_ct(args) if args.kind == "ct" else _write_mri(args)
    except ValueError as err:
        parser.error(str(err))


def _write_mri(args: argparse.Namespace) -> int:
    n_lesions = args.lesions[0] if len(args.lesions) == 1 else tuple(args.lesions)
    folders = generate_dataset(
        args.out,
        args.cases,
        seed=args.seed,
        start_index=args.start_index,
        layout=args.layout,
        shape=args.shape,
        spacing=args.spacing,
        n_lesions=n_lesions,
        p_enhancing=args.p_enhancing,
        p_necrosis=args.p_necrosis,
        skull_stripped=not args.with_skull,
        difficulty=args.difficulty,
        extent=args.extent,
    )
    kind = " hard" * (args.difficulty == "hard") + " real-extent" * (args.extent == "real")
    print(f"wrote {len(folders)}{kind} {args.layout} cases to {args.out.resolve()}")
    print(f"lesion metadata: {(args.out / 'demo_truth.json').resolve()}")
    return 0


def _write_ct(args: argparse.Namespace) -> int:
    images = generate_ct_dataset(
        args.out, args.cases, seed=args.seed, start_index=args.start_index, layout=args.layout, held_out=args.held_out
    )
    held = f" ({args.held_out} held out in imagesTs/)" if args.held_out else ""
    print(f"wrote {len(images)} CT cases{held} to {args.out.resolve()}")
    datalist = "dataset.json" if args.layout == "msd" else "dataset_0.json"
    print(f"{args.layout} datalist: {(args.out / datalist).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
