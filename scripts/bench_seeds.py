"""Mean and spread over seeds of `scripts/bench_hard.sh` runs: one line per recipe, seeds pooled.

    .venv/bin/python scripts/bench_seeds.py runs/bench_hard/monai runs/bench_hard/monai-seed1 \\
        runs/bench_hard/nnunet runs/bench_hard/nnunet-seed1

Each RUN folder holds ``pred/metrics_summary.json`` (`medseg evaluate --lesion-wise`; ``--pred NAME``: another
subfolder, e.g. ``pred_pp`` of scripts/bench_postprocess.sh); a trailing ``-seedN``
in its name groups it with the run of the same recipe without one (seed 0). Prints, per recipe: the seeds,
mean Dice (mean over seeds, its sample std and range), each region's mean over seeds, lesion-wise mean
Dice (and per region), and the difference in mean Dice from ``monai`` (the plain MONAI loop) where that recipe is there.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

REGIONS = ("tc", "wt", "et")
SEED_SUFFIX = re.compile(r"^(?P<recipe>.+?)(?:-seed(?P<seed>\d+))?$")


def group_runs(runs: list[Path], pred: str = "pred") -> dict[str, dict[int, dict]]:
    """recipe -> seed -> that run's metrics summary (``<pred>/metrics_summary.json``), in the order given."""
    groups: dict[str, dict[int, dict]] = {}
    for run in runs:
        summary = run / pred / "metrics_summary.json"
        if not summary.is_file():
            raise FileNotFoundError(f"{summary}: missing; run `medseg evaluate --pred {run / pred} ...` first")
        match = SEED_SUFFIX.match(run.name)
        seed = int(match["seed"] or 0)
        seeds = groups.setdefault(match["recipe"], {})
        if seed in seeds:
            raise ValueError(f"{run}: a second run of recipe {match['recipe']!r} with seed {seed}")
        seeds[seed] = json.loads(summary.read_text(encoding="utf-8"))
    return groups


def recipe_row(seeds: dict[int, dict]) -> dict:
    """Mean Dice over seeds (mean, sample std, min, max), each region's and the lesion-wise mean."""
    means = [s["dice_mean"]["mean"] for s in seeds.values()]
    row = {
        "seeds": sorted(seeds),
        "mean": statistics.fmean(means),
        "std": statistics.stdev(means) if len(means) > 1 else 0.0,
        "min": min(means),
        "max": max(means),
    }
    for region in REGIONS:
        row[region] = statistics.fmean(s[f"dice_{region}"]["mean"] for s in seeds.values())
    lesion = [s["lesion_dice_mean"]["mean"] for s in seeds.values() if "lesion_dice_mean" in s]
    row["lesion"] = statistics.fmean(lesion) if len(lesion) == len(means) else None
    if all(f"lesion_dice_{r}" in s for s in seeds.values() for r in REGIONS):
        row["lesion_regions"] = [
            statistics.fmean(s[f"lesion_dice_{r}"]["mean"] for s in seeds.values()) for r in REGIONS
        ]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders of scripts/bench_hard.sh")
    parser.add_argument("--pred", default="pred", metavar="NAME", help="the predictions' subfolder (default: pred)")
    args = parser.parse_args(argv)
    try:
        groups = group_runs(args.runs, args.pred)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    rows = {recipe: recipe_row(seeds) for recipe, seeds in groups.items()}
    width = max(11, *map(len, rows))
    head = "seeds    mean Dice ± std (min-max)    TC / WT / ET           lesion-wise  vs monai  lesion TC / WT / ET"
    print(f"{'recipe':<{width}} {head}")
    for recipe, r in rows.items():
        spread = f"{r['mean']:.3f} ± {r['std']:.3f} ({r['min']:.3f}-{r['max']:.3f})"
        regions = " / ".join(f"{r[region]:.3f}" for region in REGIONS)
        lesion = f"{r['lesion']:.3f}" if r["lesion"] is not None else "-"
        delta = f"{r['mean'] - rows['monai']['mean']:+.3f}" if "monai" in rows and recipe != "monai" else ""
        seeds = ",".join(map(str, r["seeds"]))
        lesions = " / ".join(f"{d:.3f}" for d in r.get("lesion_regions", []))
        print(f"{recipe:<{width}} {seeds:<8} {spread:<28} {regions:<22} {lesion:<12} {delta:<8}  {lesions}".rstrip())


if __name__ == "__main__":
    main()
