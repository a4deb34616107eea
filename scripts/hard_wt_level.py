"""Where does each hard case's WT label end on its own FLAIR, and does the normalisation decide it?

For each case of `medseg demo-data --difficulty hard` folders: the FLAIR normalised three ways (``z``: the
z-score over non-zero voxels, what medseg's MR preprocessing does; ``robust``: minus the median over
IQR; ``median``: divided by the median), then the one cut of it that reproduces the case's WT label best
(highest Dice within 4 voxels of the label), then, over cases, that cut's spread and its correlation with
the WT's log volume. If a normalisation made the cut depend on the lesion's size (a large edema moving
the z-score's mean and std), another normalisation would shrink the correlation.

    .venv/bin/python scripts/hard_wt_level.py runs/bench_hard16/data/test-16 runs/bench_hard16/data/train
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import NormalizeIntensity
from scipy import ndimage

from medseg.metrics.segmentation import dice

NORMALISATIONS = ("z", "robust", "median")


def normalised(flair: np.ndarray) -> dict[str, np.ndarray]:
    """The FLAIR [X, Y, Z] under each normalisation of :data:`NORMALISATIONS`, from its non-zero voxels."""
    brain = flair[flair > 0]
    median = np.median(brain)
    q1, q3 = np.percentile(brain, [25, 75])
    z = np.asarray(NormalizeIntensity(nonzero=True)(flair))
    return {"z": z, "robust": (flair - median) / (q3 - q1), "median": flair / median}


def best_cut(image: np.ndarray, wt: np.ndarray, near: np.ndarray) -> float:
    """The level (one of 97 quantiles of ``image`` near the tumour) whose cut ``image > level`` inside ``near``
    has the highest Dice with ``wt``."""
    truth = torch.from_numpy(wt)[None, None]
    levels = np.quantile(image[near], np.linspace(0.02, 0.98, 97))
    scores = [float(dice(torch.from_numpy((image > level) & near)[None, None], truth)) for level in levels]
    return float(levels[int(np.argmax(scores))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="+", help="hard demo folders (case folders with _flair and _seg)")
    args = parser.parse_args()
    rows = []
    for folder in args.data:
        for case in sorted(p for p in folder.iterdir() if p.is_dir()):
            flair = np.asarray(nib.load(case / f"{case.name}_flair.nii.gz").dataobj, dtype=np.float32)
            wt = np.asarray(nib.load(case / f"{case.name}_seg.nii.gz").dataobj) > 0
            near = ndimage.binary_dilation(wt, iterations=4) & (flair > 0)
            cuts = {name: best_cut(image, wt, near) for name, image in normalised(flair).items()}
            rows.append((case.name, int(wt.sum()), cuts))
    print(f"{'case':<18} {'WT voxels':>9}  " + "  ".join(f"{n:>7}" for n in NORMALISATIONS))
    for name, volume, cuts in sorted(rows, key=lambda r: r[1]):
        print(f"{name:<18} {volume:>9}  " + "  ".join(f"{cuts[n]:>7.3f}" for n in NORMALISATIONS))
    size = np.log([volume for _, volume, _ in rows])
    for n in NORMALISATIONS:
        cut = np.array([cuts[n] for _, _, cuts in rows])
        print(
            f"{n}: the best cut over {len(rows)} cases {cut.mean():.3f} ± {cut.std():.3f} (std / mean "
            f"{cut.std() / abs(cut.mean()):.2f}), correlation with log WT volume {np.corrcoef(size, cut)[0, 1]:+.2f}"
        )


if __name__ == "__main__":
    main()
