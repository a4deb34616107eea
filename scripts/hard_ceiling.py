"""How high can any model score on the hard demo's held-out cases? Three oracles, each scored against the
labels `medseg demo-data --difficulty hard` writes (which carry about a voxel of annotation noise):

- ``clean``: the label before the annotation noise (knows every lesion and the case's taper threshold);
  what the annotation noise alone costs.
- ``fixed``: the clean TC and ET, and a WT drawn at one taper level for every case (the generator's own
  noise-free edema weight, 1 at the core, cut at ``--level``) instead of the case's hidden threshold: a
  model that knows the edema's weight but not where this case's annotator stopped.
- ``local``: the clean TC and ET, and a WT where the noise-free FLAIR edema signal (weight x the lesion's
  edema contrast, relative to white matter) exceeds one level, the best level for these cases: a model
  that sees the edema perfectly but judges each voxel by its brightness, as a local filter does. The
  lesion's contrast varies 0.15-1.3 around the case's, so the same brightness is inside one lesion's
  label and outside another's.

With ``--lesion-wise``, also the ``clean`` oracle's lesion-wise Dice (BraTS 2023+, as ``medseg evaluate
--lesion-wise`` scores it): what a voxel of annotation noise alone does to lesions of a few voxels, which a
shift can move below the IoU 0.5 a match needs, so that the lesion counts as missed and as a false positive.

All three see what no model sees (noise-free images, exact weights), so they bound the score from above.
With ``--pred DIR`` (``<case_id>.nii.gz`` label maps, as ``medseg predict`` writes), also each case's WT
precision and recall, and the taper level whose cut matches the predicted WT best: where the model stops.

    .venv/bin/python scripts/hard_ceiling.py --cases 4 --start-index 10000 --seed 0 [--pred runs/x/pred]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import torch

from medseg.data import demo_hard, demo_hard_render
from medseg.data.demo import generate_case
from medseg.data.labels import BRATS2021, REGIONS
from medseg.metrics.lesion import lesion_metrics
from medseg.metrics.segmentation import dice, metric_keys

CASE_ID = "BraTS2021_{index:05d}"  # what `medseg demo-data` names case ``index`` (the brats2021 layout)


def draw(index: int, seed: int) -> dict:
    """One hard case as ``medseg demo-data --difficulty hard`` draws it at its default shape and spacing (what
    ``scripts/bench_hard.sh`` uses), with what the generator hides."""
    seen = {}
    jitter, taper, render = demo_hard.jitter_label, demo_hard_render.edema_taper, demo_hard.render_hard

    def keep_clean(rng, label, lesion_map, brain, spacing):
        seen["clean"], seen["brain"] = label.copy(), brain.copy()
        return jitter(rng, label, lesion_map, brain, spacing)

    def keep_taper(wt, core, lesion_map, threshold, fade_mm, spacing):
        weight, nearest = taper(wt, core, lesion_map, threshold, fade_mm, spacing)
        seen["taper"], seen["threshold"], seen["core"] = weight.copy(), threshold, core.copy()
        seen["nearest"] = nearest.copy()
        return weight, nearest

    def keep_contrast(*args):
        images, knobs, lesion_contrast = render(*args)
        seen["edema_flair"] = np.array([0.0] + [c["edema_flair"] - 1 for _, c in sorted(lesion_contrast.items())])
        return images, knobs, lesion_contrast

    with (
        mock.patch.object(demo_hard, "jitter_label", keep_clean),
        mock.patch.object(demo_hard_render, "edema_taper", keep_taper),
        mock.patch.object(demo_hard, "render_hard", keep_contrast),
    ):
        case = generate_case(CASE_ID.format(index=index), seed=(seed, index), difficulty="hard")
    return seen | {"label": case.label, "spacing": case.spacing}


def regions(label: np.ndarray) -> torch.Tensor:
    """Label map [X, Y, Z] -> TC, WT, ET [3, X, Y, Z] bool."""
    return BRATS2021.to_masks(torch.from_numpy(label.astype(np.int64)))


def cut_wt(case: dict, region: np.ndarray) -> torch.Tensor:
    """A WT drawn as ``region`` inside the brain, plus the core: [1, 1, X, Y, Z] bool, as ``dice`` takes it."""
    return torch.from_numpy(region & case["brain"] | case["core"])[None, None]


def where_it_stops(case: dict, truth: torch.Tensor, pred: np.ndarray) -> str:
    """A predicted label map's WT against the truth: precision, recall, the best-matching taper level."""
    wt, true_wt = torch.from_numpy(pred > 0), truth[1]
    hit = int((wt & true_wt).sum())
    levels = np.arange(0.05, 1.0, 0.05)
    matched = [float(dice(wt[None, None], cut_wt(case, case["taper"] >= t))) for t in levels]
    best = int(np.argmax(matched))
    return (
        f"WT precision {hit / max(int(wt.sum()), 1):.2f}, recall {hit / max(int(true_wt.sum()), 1):.2f}, "
        f"cut at taper level {levels[best]:.2f} (Dice {matched[best]:.2f} with that cut)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--start-index", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", type=float, default=None, help="WT taper level (default: the range's middle)")
    parser.add_argument("--pred", type=Path, default=None, help="a folder of predicted label maps to diagnose")
    parser.add_argument("--lesion-wise", action="store_true", help="also the clean oracle's lesion-wise Dice")
    parser.add_argument(
        "--min-lesion-volume", type=float, default=0.0, metavar="MM3", help="as `medseg evaluate` (BraTS-GLI: 50)"
    )
    args = parser.parse_args()
    indices = range(args.start_index, args.start_index + args.cases)
    if args.pred is not None:
        missing = [i for i in indices if not (args.pred / f"{CASE_ID.format(index=i)}.nii.gz").is_file()]
        if missing:
            first = CASE_ID.format(index=missing[0])
            parser.error(f"--pred {args.pred}: no {first}.nii.gz ({len(missing)} of {len(indices)} cases missing)")
    level = float(np.mean(demo_hard_render.TAPER_THRESHOLD)) if args.level is None else args.level
    signal_levels = np.geomspace(0.01, 1.0, 61)  # FLAIR edema signal / WM, tried for ``local``
    clean_rows, fixed_rows, local_wt = [], [], []  # local_wt: per case, WT Dice at each signal level
    lesion_rows = []  # per case: the clean oracle's lesion-wise metrics (--lesion-wise)
    for index in indices:
        case = draw(index, args.seed)
        truth, clean = regions(case["label"]), regions(case["clean"])
        tc, wt, et = dice(clean[None], truth[None])[0].tolist()
        true_wt = truth[1][None, None]
        clean_rows.append([tc, wt, et])
        fixed_rows.append([tc, float(dice(cut_wt(case, case["taper"] >= level), true_wt)), et])
        signal = case["taper"] * case["edema_flair"][case["nearest"]]  # [X, Y, Z]
        local_wt.append([float(dice(cut_wt(case, signal >= c), true_wt)) for c in signal_levels])
        show = " / ".join
        print(
            f"case {index}: taper threshold {case['threshold']:.3f}; "
            f"clean {show(f'{d:.3f}' for d in clean_rows[-1])}; fixed {show(f'{d:.3f}' for d in fixed_rows[-1])}"
        )
        if args.lesion_wise:
            scores = lesion_metrics(
                clean, truth, case["spacing"], with_hd95=False, min_lesion_volume_mm3=args.min_lesion_volume
            )
            lesion_rows.append(scores)
            counts = ", ".join(
                f"{r} {scores[f'lesions_tp_{k}']}/{scores[f'lesions_fn_{k}']}/{scores[f'lesions_fp_{k}']}"
                for r, k in zip(REGIONS, metric_keys(REGIONS))
            )
            print(f"  clean, lesions found/missed/false positive: {counts}")
        if args.pred is not None:
            pred = np.asanyarray(nib.load(args.pred / f"{CASE_ID.format(index=index)}.nii.gz").dataobj)
            print(f"  prediction: {where_it_stops(case, truth, pred)}")
    best = int(np.argmax(np.mean(local_wt, axis=0)))  # one signal level for every case
    local_rows = [[tc, per_level[best], et] for (tc, _, et), per_level in zip(clean_rows, local_wt)]
    for name, rows in (("clean", clean_rows), ("fixed", fixed_rows), ("local", local_rows)):
        mean = np.mean(rows, axis=0)
        print(f"{name}: TC / WT / ET {' / '.join(f'{d:.3f}' for d in mean)}, mean {mean.mean():.3f}")
    if lesion_rows:
        lesion = [np.mean([row[f"lesion_dice_{k}"] for row in lesion_rows]) for k in metric_keys(REGIONS)]
        voxel = np.mean(clean_rows, axis=0)
        print(
            f"clean, lesion-wise: TC / WT / ET {' / '.join(f'{d:.3f}' for d in lesion)}, mean {np.mean(lesion):.3f}"
            f" (voxel-wise minus lesion-wise: {' / '.join(f'{v - d:.3f}' for v, d in zip(voxel, lesion))})"
        )
    print(f"(fixed cuts WT at taper level {level:.3f}; local at FLAIR edema signal {signal_levels[best]:.3f} x WM)")


if __name__ == "__main__":
    main()
