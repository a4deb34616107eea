"""``medseg demo-data``: write synthetic BraTS-style cases (:mod:`medseg.data.demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medseg.data.demo import LAYOUTS, generate_dataset, holds_cases


def main(argv: list[str] | None = None) -> int:
    """``medseg demo-data``: write a synthetic BraTS-style dataset. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="medseg demo-data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Write synthetic BraTS-style brain-tumour cases for trying medseg without downloading anything.

Each case is a head (scalp, skull, CSF, grey and white matter, ventricles) with one or more tumours:
edema (label 2) around a core with an enhancing rim (4, or 3 in BraTS 2023) and a necrotic centre (1).
Case i is drawn from (--seed, i) alone, so a held-out set made with another --start-index never repeats
a training case. Lesion metadata (centre, hemisphere, lobe, volumes, bounding box) goes to
OUT/demo_truth.json.

layouts:
  brats2021  OUT/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz, labels 1/2/4
  brats2023  OUT/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz, labels 1/2/3""",
        epilog="example: medseg demo-data --out data/demo --cases 24 && "
        "medseg demo-data --out data/demo_test --cases 6 --start-index 1000",
    )
    add = parser.add_argument
    add("--out", required=True, type=Path, metavar="DIR", help="folder to write the cases into")
    add("--cases", type=int, default=24, metavar="N", help="number of cases (default: 24)")
    add("--seed", type=int, default=0, help="dataset seed (default: 0)")
    add("--start-index", type=int, default=0, metavar="I", help="number of the first case (default: 0)")
    add("--layout", choices=sorted(LAYOUTS), default="brats2021", help="file names and labels (default: brats2021)")
    add("--lesions", type=int, nargs="+", default=[1], metavar="N", help="lesions per case: N, or MIN MAX (default: 1)")
    add("--shape", type=int, nargs=3, default=[96, 96, 64], metavar=("X", "Y", "Z"), help="voxels (default: 96 96 64)")
    add("--spacing", type=float, nargs=3, default=[2, 2, 2.5], metavar=("X", "Y", "Z"), help="mm (default: 2 2 2.5)")
    add("--p-enhancing", type=float, default=1.0, help="probability a lesion enhances (default: 1.0)")
    add("--p-necrosis", type=float, default=0.8, help="probability of a necrotic centre (default: 0.8)")
    add("--with-skull", action="store_true", help="keep scalp and skull (default: skull-stripped, as BraTS)")
    add("--overwrite", action="store_true", help="write into a folder that already holds cases")
    args = parser.parse_args(argv)

    if len(args.lesions) > 2:
        parser.error(f"--lesions takes N or MIN MAX, got {len(args.lesions)} numbers")
    if args.out.exists() and not args.overwrite and holds_cases(args.out):
        print(
            f"medseg demo-data: error: {args.out} already holds cases; pass --overwrite to write over them "
            "or choose another --out",
            file=sys.stderr,
        )
        return 1
    n_lesions = args.lesions[0] if len(args.lesions) == 1 else tuple(args.lesions)
    try:
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
        )
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {len(folders)} {args.layout} cases to {args.out.resolve()}")
    print(f"lesion metadata: {(args.out / 'demo_truth.json').resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
