"""Train the 3-D DETR demo on CPU and score it on held-out generated cases.

    nice -n 19 python scripts/train_detr_demo.py --out demo_run/detr
    nice -n 19 python scripts/train_detr_demo.py --out demo_run/detr -- --trainer.max_steps 200   # extra fit args

1. writes synthetic BraTS-style cases with 1-3 lesions each (``medseg.data.demo``): training cases
   0.. and held-out cases 1000.. (never the same), unless ``OUT/data`` already holds them;
2. ``medseg fit --config configs/detr_demo.yaml`` on the training cases, stopped by ``--minutes`` at the
   latest (``trainer.max_time``);
3. ``medseg detect``'s :func:`predict_boxes` on the held-out cases: world-mm boxes in ``OUT/boxes``;
4. mAP at 3-D IoU 0.1 / 0.25 / 0.5 and FROC of those boxes against the generator's own lesion boxes
   (``demo_truth.json``: ``bbox_voxel`` through the case's affine, world RAS mm), for the trained
   network and for the same network untrained (what the numbers are worth: on this data lesions
   are large, and an untrained DETR's boxes around the centre already reach IoU 0.1 with many).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.cli import instantiate_module

from medseg.boxes import boxes_voxel_to_world
from medseg.cli import main as medseg_main
from medseg.data.base import saved_roi_size
from medseg.data.demo import generate_dataset
from medseg.data.layouts import read_dataset
from medseg.inference.checkpoint import load_checkpoint
from medseg.inference.detect import BoxDetector, predict_boxes
from medseg.metrics.detection import average_precision, froc
from medseg.modules.detection import DetectionModule

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "detr_demo.yaml"


def make_data(folder: Path, n_cases: int, start_index: int) -> list[dict]:
    """Generated cases (written once), without their label maps: what `medseg detect` would get."""
    truth = folder / "demo_truth.json"
    if not truth.exists() or len(json.loads(truth.read_text())) < n_cases:
        generate_dataset(folder, n_cases, seed=0, start_index=start_index, n_lesions=(1, 3))
    return read_dataset(folder).cases[:n_cases]


def truth_boxes(folder: Path, case_ids: list[str]) -> list[np.ndarray]:
    """World RAS mm boxes [N, 6] of each case's lesions, from the generator's inclusive voxel boxes."""
    truth = json.loads((folder / "demo_truth.json").read_text())
    out = []
    for case_id in case_ids:
        lesions = truth[case_id]["lesions"]
        voxel = np.array([[*les["bbox_voxel"]["min"], *np.add(les["bbox_voxel"]["max"], 1)] for les in lesions], float)
        out.append(boxes_voxel_to_world(voxel.reshape(-1, 6), np.array(truth[case_id]["affine"])))
    return out


def scores(boxes: list[np.ndarray], confidences: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, float]:
    result = {f"mAP@{t}": average_precision(boxes, confidences, truth, t) for t in (0.1, 0.25, 0.5)}
    result["FROC"] = froc(boxes, confidences, truth, iou_threshold=0.1)[0]
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path("demo_run/detr"), help="working folder (default: demo_run/detr)"
    )
    parser.add_argument("--train-cases", type=int, default=96, help="generated training cases (default: 96)")
    parser.add_argument("--test-cases", type=int, default=24, help="held-out generated cases (default: 24)")
    parser.add_argument(
        "--minutes", type=float, default=14.0, help="training stops after this at the latest (default: 14)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.time()
    make_data(args.out / "data" / "train", args.train_cases, start_index=0)
    test_cases = make_data(args.out / "data" / "test", args.test_cases, start_index=1000)
    print(f"data ready in {time.time() - start:.0f} s", flush=True)

    run = args.out / "run"
    seconds = int(args.minutes * 60)
    fit = [
        "fit", "--config", str(CONFIG),
        "--data.init_args.data_dir", str(args.out / "data" / "train"),
        "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.max_time", f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}",
        *extra,
    ]  # fmt: skip
    started = time.time()
    if medseg_main(fit) != 0:
        return 1
    train_seconds = time.time() - started
    ckpt = run / "checkpoints" / "last.ckpt"
    steps = torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"]

    trained = BoxDetector.from_checkpoint(ckpt, device="cpu")
    written, failures = predict_boxes(trained, test_cases, args.out / "boxes", min_score=0.0, overwrite=True)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    results = [json.loads(p.read_text()) for p in written]
    truth = truth_boxes(args.out / "data" / "test", [r["case_id"] for r in results])
    rows = {"trained": scores(
        [np.array([b["box_mm"] for b in r["boxes"]]).reshape(-1, 6) for r in results],
        [np.array([b["score"] for b in r["boxes"]]) for r in results],
        truth,
    )}  # fmt: skip

    _, data = load_checkpoint(ckpt, DetectionModule)
    hparams = dict(torch.load(ckpt, weights_only=True, map_location="cpu")["hyper_parameters"])
    hparams.pop("_instantiator", None)
    torch.manual_seed(0)
    untrained = BoxDetector(instantiate_module(DetectionModule, hparams), saved_roi_size(data), device="cpu")
    found = [untrained.detect(case) for case in test_cases]
    rows["untrained"] = scores([f.boxes_mm for f in found], [f.scores for f in found], truth)

    print(f"\ntrained {steps} steps in {train_seconds / 60:.1f} min; {len(test_cases)} held-out cases, "
          f"{sum(len(t) for t in truth)} lesions; boxes in world mm vs the generator's lesion boxes")  # fmt: skip
    print(f"{'network':<10}" + "".join(f"{name:>10}" for name in rows["trained"]))
    for name, row in rows.items():
        print(f"{name:<10}" + "".join(f"{value:>10.3f}" for value in row.values()))
    print(f"total {(time.time() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
