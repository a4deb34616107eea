"""scripts/bench_seeds.py: runs grouped by recipe over their seeds, mean and spread, the gap to the MONAI loop."""

from __future__ import annotations

import json

import pytest
from conftest import load_script


def _run(root, name, tc, wt, et, pred="pred", lesion=None):
    pred = root / name / pred
    pred.mkdir(parents=True)
    summary = {f"dice_{r}": {"mean": v} for r, v in zip(("tc", "wt", "et"), (tc, wt, et))}
    summary["dice_mean"] = {"mean": (tc + wt + et) / 3}
    summary["lesion_dice_mean"] = {"mean": 0.5}
    if lesion is not None:
        summary |= {f"lesion_dice_{r}": {"mean": v} for r, v in zip(("tc", "wt", "et"), lesion)}
    (pred / "metrics_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root / name


def test_seeds_pool_per_recipe_and_compare_with_monai(tmp_path, capsys):
    bench = load_script("bench_seeds")
    runs = [
        _run(tmp_path, "monai", 0.9, 0.6, 0.9),  # mean 0.8
        _run(tmp_path, "monai-seed1", 0.9, 0.3, 0.9),  # mean 0.7
        _run(tmp_path, "nnunet-lc05", 0.9, 0.9, 0.9),
        _run(tmp_path, "nnunet-lc05-seed2", 0.9, 0.6, 0.9),
    ]
    groups = bench.group_runs(runs)
    assert {recipe: sorted(seeds) for recipe, seeds in groups.items()} == {"monai": [0, 1], "nnunet-lc05": [0, 2]}
    row = bench.recipe_row(groups["monai"])
    assert row["mean"] == pytest.approx(0.75) and row["std"] == pytest.approx(0.0707, abs=1e-4)
    assert row["wt"] == pytest.approx(0.45) and (row["min"], row["max"]) == pytest.approx((0.7, 0.8))

    bench.main([str(r) for r in runs])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("monai       0,1      0.750 ± 0.071 (0.700-0.800)")
    assert lines[2].startswith("nnunet-lc05 0,2") and lines[2].endswith("+0.100")


def test_a_run_without_a_summary_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_script("bench_seeds").main([str(tmp_path / "monai")])
    assert "monai/pred/metrics_summary.json: missing" in capsys.readouterr().err


def test_another_predictions_folder_and_lesion_wise_per_region(tmp_path, capsys):
    runs = [
        _run(tmp_path, "nnunet", 0.9, 0.6, 0.9, pred="pred_pp", lesion=(0.6, 0.3, 0.5)),
        _run(tmp_path, "nnunet-seed1", 0.9, 0.6, 0.9, pred="pred_pp", lesion=(0.4, 0.1, 0.3)),
    ]
    load_script("bench_seeds").main([*map(str, runs), "--pred", "pred_pp"])
    assert capsys.readouterr().out.splitlines()[1].endswith("0.500 / 0.200 / 0.400")
