"""Whole-scan Swin UNETR inference: `medseg predict` (defaults) against the stock MONAI path, in one run.

    # timing and memory at feature_size 48 on a BraTS-size case (4 x 240 x 240 x 155, 1 mm) whose brain has a
    # real BraTS brain's extent (head crop about 146 x 174 x 148), untrained weights
    python scripts/bench_inference.py --feature-size 48
    # the same on the generator's small-extent head (brain crop about 161 x 182 x 108: the earlier headline)
    python scripts/bench_inference.py --feature-size 48 --extent small
    # agreement and Dice against the truth with a trained model (the demo's), on held-out generated cases
    python scripts/bench_inference.py --ckpt demo_run/run/checkpoints/last.ckpt \
        --shape 96 96 64 --spacing 2 2 2.5 --extent small --cases 8
    # the same benchmark, small: seconds
    python scripts/bench_inference.py --quick

Both paths get the same generated case files and the same network weights, and each runs end to end
in its own process (files in, label maps written), so its wall time and peak resident memory are its
own:

- stock: what MONAI's reference BraTS scripts do. ``LoadImaged`` (nibabel), RAS orientation,
  ``NormalizeIntensityd(nonzero, channel_wise)`` on the whole volume, ``monai.networks.nets.SwinUNETR``,
  ``sliding_window_inference`` with roi ``--stock-roi`` (128), overlap 0.5, sw_batch_size 1, under
  ``torch.no_grad``; sigmoid > 0.5 -> label map.
- medseg: ``medseg predict CASES --ckpt CKPT --out DIR`` with its defaults.

Printed per case and as medians: wall time of each path, their ratio, peak RSS, Dice between the two
label maps per region (TC, WT, ET), and Dice of each against the generated ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REGIONS = ("TC", "WT", "ET")


def write_untrained_checkpoint(path: Path, feature_size: int, roi: int, overlap: float) -> None:
    """A `medseg fit`-style checkpoint with seeded random weights (timing needs no training)."""
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    torch.manual_seed(0)
    net = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=feature_size)
    hparams = {
        "net": {
            "class_path": "medseg.nets.SwinUNETR",
            "init_args": {"in_channels": 4, "out_channels": 3, "feature_size": feature_size},
        },
        "roi_size": [roi] * 3,
        "sw_overlap": overlap,
    }
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"hyper_parameters": hparams, "state_dict": state, "datamodule_hyper_parameters": {}}, path)


def stock_path(ckpt: str, case_dirs: list[str], out: str, roi: int, overlap: float) -> None:
    """MONAI's reference inference, end to end, in this process (run by main() as a child)."""
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
    from monai.transforms import Compose, LoadImaged, NormalizeIntensityd, Orientationd

    from medseg.data.labels import get_convention

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    feature_size = checkpoint["hyper_parameters"]["net"]["init_args"]["feature_size"]
    model = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=feature_size)
    model.load_state_dict({k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")})
    model.eval()
    transform = Compose(
        [
            LoadImaged(keys="image"),
            Orientationd(keys="image", axcodes="RAS"),
            NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        ]
    )
    convention = get_convention("brats2021")
    for case_dir in map(Path, case_dirs):
        case_id = case_dir.name
        files = [str(case_dir / f"{case_id}_{m}.nii.gz") for m in ("t1", "t1ce", "t2", "flair")]
        image = transform({"image": files})["image"]  # [4, X, Y, Z] RAS
        with torch.no_grad():
            logits = sliding_window_inference(
                image[None], roi_size=(roi,) * 3, sw_batch_size=1, predictor=model, overlap=overlap
            )
        label = convention.from_regions(torch.sigmoid(logits[0]) > 0.5).numpy().astype(np.uint8)
        nib.save(nib.Nifti1Image(label, image.affine.numpy()), Path(out) / f"{case_id}.nii.gz")


def timed_child(command: list[str]) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, peak RSS in MiB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{command[:4]} failed with exit code {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024


def ras_regions(path: Path) -> np.ndarray:
    """Label map at ``path`` -> bool [3, X, Y, Z] (TC, WT, ET) in RAS orientation."""
    from medseg.data.labels import get_convention

    img = nib.as_closest_canonical(nib.load(path))
    return get_convention("brats2021").to_regions(np.asarray(img.dataobj).astype(np.uint8)).numpy().astype(bool)


def dice(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Dice per region of two bool [3, ...] arrays; both empty -> 1."""
    out = []
    for x, y in zip(a, b):
        total = x.sum() + y.sum()
        out.append(1.0 if total == 0 else float(2 * np.logical_and(x, y).sum() / total))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="trained `medseg fit` checkpoint (Swin UNETR); default: untrained weights")
    parser.add_argument("--feature-size", type=int, default=48, help="for untrained weights (default 48)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[240, 240, 155], help="voxels (default: BraTS 240 240 155)"
    )
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], help="mm (default 1 1 1)")
    parser.add_argument(
        "--extent",
        choices=["real", "small"],
        default="real",
        help="generated brain: real (a BraTS brain's extent, ~146 x 174 x 148 mm; default) or small (the head fills "
        "the volume: the demo's kind; at 240 x 240 x 155 a brain of ~161 x 182 x 108)",
    )
    parser.add_argument("--difficulty", choices=["easy", "hard"], default="easy", help="generated cases (default easy)")
    parser.add_argument("--cases", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7, help="case generator seed (the demo trains on seed 0)")
    parser.add_argument("--stock-roi", type=int, default=128, help="stock window side (default 128)")
    parser.add_argument("--stock-overlap", type=float, default=0.5)
    parser.add_argument(
        "--medseg-args", default="", help="extra `medseg predict` arguments: --medseg-args='--window roi'"
    )
    parser.add_argument("--no-stock", action="store_true", help="medseg only: time and Dice against the truth")
    parser.add_argument("--out", help="keep cases and outputs here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--quick", action="store_true", help="one 96x96x64 small-extent case, feature_size 12: runs in seconds"
    )
    parser.add_argument("--stock-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stock_child:  # internal: the stock path in its own process
        ckpt, out, roi, overlap, *cases = args.stock_child
        stock_path(ckpt, cases, out, int(roi), float(overlap))
        return
    if args.quick:
        args.shape, args.spacing, args.feature_size, args.cases, args.stock_roi, args.extent = (
            [96, 96, 64],
            [2.0, 2.0, 2.5],
            12,
            1,
            64,
            "small",
        )

    from medseg.data.demo import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "cases"
        case_dirs = generate_dataset(
            data,
            args.cases,
            seed=args.seed,
            start_index=20000,
            shape=args.shape,
            spacing=args.spacing,
            extent=args.extent,
            difficulty=args.difficulty,
        )
        ckpt = args.ckpt
        if ckpt is None:
            ckpt = str(work / f"untrained_fs{args.feature_size}.ckpt")
            write_untrained_checkpoint(Path(ckpt), args.feature_size, args.stock_roi, args.stock_overlap)
        feature_size = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["net"]["init_args"][
            "feature_size"
        ]
        rows = []
        for case_dir in case_dirs:
            outs = {p: work / p / case_dir.name for p in ("stock", "medseg")}
            for o in outs.values():
                o.mkdir(parents=True, exist_ok=True)
            stock_cmd = [
                sys.executable,
                __file__,
                "--stock-child",
                ckpt,
                str(outs["stock"]),
                str(args.stock_roi),
                str(args.stock_overlap),
                str(case_dir),
            ]
            medseg_cmd = [
                sys.executable,
                "-m",
                "medseg.cli",
                "predict",
                str(case_dir),
                "--ckpt",
                ckpt,
                "--out",
                str(outs["medseg"]),
                "--overwrite",
                *args.medseg_args.split(),
            ]
            t_medseg, m_medseg = timed_child(medseg_cmd)
            truth = ras_regions(case_dir / f"{case_dir.name}_seg.nii.gz")
            medseg = ras_regions(outs["medseg"] / f"{case_dir.name}.nii.gz")
            row = {
                "case": case_dir.name,
                "medseg_s": t_medseg,
                "medseg_peak_mib": m_medseg,
                "medseg_vs_truth": dice(medseg, truth),
            }
            if not args.no_stock:
                t_stock, m_stock = timed_child(stock_cmd)
                stock = ras_regions(outs["stock"] / f"{case_dir.name}.nii.gz")
                row.update(
                    stock_s=t_stock,
                    speedup=t_stock / t_medseg,
                    stock_peak_mib=m_stock,
                    agreement=dice(medseg, stock),
                    stock_vs_truth=dice(stock, truth),
                )
            rows.append(row)
            print(json.dumps(row), flush=True)

    def med(key, i=None):
        return statistics.median(r[key] if i is None else r[key][i] for r in rows)

    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; {args.cases} {args.extent}-extent "
        f"{args.difficulty} case(s) {tuple(args.shape)} at {tuple(args.spacing)} mm; feature_size {feature_size}; "
        f"{'trained: ' + args.ckpt if args.ckpt else 'untrained weights'}"
    )
    print(
        f"medseg predict {args.medseg_args or '(defaults)'}: median {med('medseg_s'):.1f} s/case, "
        f"peak RSS {med('medseg_peak_mib'):.0f} MiB"
    )
    keys = [("medseg_vs_truth", "medseg vs truth")]
    if not args.no_stock:
        print(
            f"stock (roi {args.stock_roi}, overlap {args.stock_overlap}): median {med('stock_s'):.1f} s/case, "
            f"peak RSS {med('stock_peak_mib'):.0f} MiB"
        )
        print(f"speed-up (stock / medseg): median {med('speedup'):.2f}x")
        keys = [("agreement", "medseg vs stock"), ("stock_vs_truth", "stock vs truth"), *keys]
    for key, title in keys:
        print(
            f"Dice {title}: "
            + ", ".join(
                f"{r} {med(key, i):.4f} (min {min(x[key][i] for x in rows):.4f})" for i, r in enumerate(REGIONS)
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
