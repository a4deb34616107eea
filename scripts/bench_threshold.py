"""Issue 13: is a per-region probability threshold chosen on validation cases a lever? (It was not kept.)

    .venv/bin/python scripts/bench_threshold.py runs/bench_hard16/nnunet-ds3 runs/bench_hard16/nnunet-ds3-seed1 ...

For each RUN of scripts/bench_hard.sh (``RUN/checkpoints/last.ckpt``), segments the validation cases of
scripts/bench_postprocess.sh (``--val``, default OUT/data/val-8) and the held-out cases (``--test``, default
OUT/data/test-16) with their probabilities, cached in ``RUN/threshold/<split>/<case>.npz`` (float16). Then,
per region (the others at the model's 0.5), the threshold of ``THRESHOLDS`` with the best mean voxel-wise
Dice on the validation cases is chosen, and the held-out cases are scored at 0.5 and at the chosen
thresholds (each region's Dice after the label map is painted and read back, as `medseg evaluate` sees
it). Prints, per run, each region's held-out Dice at every threshold too, to show what a perfect choice
would have given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

THRESHOLDS = np.round(np.arange(0.2, 0.81, 0.05), 2)


def dump(run: Path, split: str, data: Path) -> list[dict]:
    """The cases of ``data`` segmented by ``run``'s checkpoint: each case's probabilities and truth masks."""
    from medseg.data.layouts import read_dataset
    from medseg.evaluation import read_label_map
    from medseg.inference import Predictor

    out = run / "threshold" / split
    if not out.is_dir():
        predictor = Predictor.from_checkpoints([run / "checkpoints" / "last.ckpt"], device="cpu")
        tmp = out.with_name(split + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        for case in read_dataset(data, task=predictor.task).cases:
            result = predictor.predict_case(case, probabilities=True)
            label, _ = read_label_map(Path(case["label"]), case["case_id"])
            truth = predictor.task.to_masks(label.astype(np.int64)).numpy()
            prob = result.probabilities.astype(np.float16)
            np.savez_compressed(tmp / f"{case['case_id']}.npz", prob=prob, truth=truth)
            print(f"{run.name} {split} {case['case_id']}", flush=True)
        tmp.rename(out)
    return [dict(np.load(f)) for f in sorted(out.glob("*.npz"))]


def scores(task, cases: list[dict], thresholds) -> np.ndarray:
    """[cases, regions] Dice with each region's probability cut at ``thresholds``."""
    from medseg.metrics.segmentation import dice

    rows = []
    for case in cases:
        prob = case["prob"].astype(np.float32)
        masks = torch.from_numpy(np.stack([prob[i] > t for i, t in enumerate(thresholds)]))
        painted = task.to_masks(task.from_masks(masks).long())  # [N, *spatial], as the label map reads back
        rows.append(dice(painted[None], torch.from_numpy(case["truth"])[None])[0].numpy())  # [N]
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--val", type=Path, help="validation cases (default: OUT/data/val-8)")
    parser.add_argument("--test", type=Path, help="held-out cases (default: OUT/data/test-16)")
    args = parser.parse_args()
    from medseg.inference.segment import model_task

    base, chosen_all = [], []
    for run in args.runs:
        root = run.parent
        val = dump(run, "val", args.val or root / "data" / "val-8")
        test = dump(run, "test", args.test or root / "data" / "test-16")
        task = model_task(run / "checkpoints" / "last.ckpt")
        n = len(task.outputs)
        chosen = []
        for i, name in enumerate(task.outputs):
            at = [[t if j == i else 0.5 for j in range(n)] for t in THRESHOLDS]
            on_val = [scores(task, val, th)[:, i].mean() for th in at]
            on_test = [scores(task, test, th)[:, i].mean() for th in at]
            chosen.append(float(THRESHOLDS[int(np.argmax(on_val))]))
            by_threshold = " ".join(f"{t}:{s:.3f}" for t, s in zip(THRESHOLDS, on_test))
            print(f"{run.name} {name} held-out Dice by threshold: {by_threshold}")
        at_half = scores(task, test, [0.5] * n).mean(0)
        at_chosen = scores(task, test, chosen).mean(0)
        base.append(at_half.mean())
        chosen_all.append(at_chosen.mean())
        print(f"{run.name}: chosen on validation {dict(zip(task.outputs, chosen))}; held-out Dice "
              f"{' / '.join(f'{s:.3f}' for s in at_half)} (mean {at_half.mean():.4f}) at 0.5, "
              f"{' / '.join(f'{s:.3f}' for s in at_chosen)} (mean {at_chosen.mean():.4f}) at the chosen")  # fmt: skip
    print(f"over {len(base)} run(s): mean Dice {np.mean(base):.4f} at 0.5, {np.mean(chosen_all):.4f} chosen")


if __name__ == "__main__":
    main()
