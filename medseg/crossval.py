"""Cross-validation: k deterministic folds, one fit per fold, out-of-fold predictions and their scores.

The folds are :func:`medseg.data.base.kfold_assignment`'s: the labelled cases sorted by id, shuffled with
the data seed, dealt round-robin, so the same data and seed always give the same folds. Fold ``k`` trains
with ``--data.init_args.n_folds K --data.init_args.fold k`` in ``OUT/fold_k`` (resumed with
``--ckpt_path last`` when interrupted, skipped once finished), then segments its validation cases into
``OUT/oof/`` with its own checkpoint: every labelled case is predicted exactly once, by the one model that
never saw it. The scores are per fold and pooled over all cases (``OUT/metrics_summary.json`` with a
``folds`` entry, ``OUT/metrics_per_case.csv`` with a ``fold`` column, as ``medseg evaluate`` writes them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from medseg.data.base import kfold_assignment
from medseg.evaluation import evaluate_case, summarize, write_results
from medseg.io import write_atomic

DONE = "fit_done"  # marker in OUT/fold_k: that fold's fit finished


def write_splits(cases: Sequence[dict], n_folds: int, seed: int, path: Path) -> dict[str, int]:
    """Write ``{"n_folds", "seed", "folds": [[case ids of fold 0], ...]}`` to ``path``; return the assignment."""
    assigned = kfold_assignment(list(cases), n_folds, seed)
    folds = [sorted(c for c, f in assigned.items() if f == k) for k in range(n_folds)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"n_folds": n_folds, "seed": seed, "folds": folds}, indent=1))
    return assigned


def fit_fold(fit: Callable[[list[str]], None], base_args: list[str], fold: int, n_folds: int, out: Path) -> str:
    """Train one fold through ``fit`` (LightningCLI arguments in, nothing out): ``done`` if it had finished,
    ``resumed`` from ``last.ckpt``, or ``trained`` from scratch."""
    fold_dir = out / f"fold_{fold}"
    if (fold_dir / DONE).is_file():
        return "done"
    resume = (fold_dir / "checkpoints" / "last.ckpt").is_file()
    args = [*base_args, "--data.init_args.n_folds", str(n_folds), "--data.init_args.fold", str(fold),
            "--trainer.default_root_dir", str(fold_dir)]  # fmt: skip
    fit([*args, "--ckpt_path", "last"] if resume else args)
    write_atomic(fold_dir / DONE, "")
    return "resumed" if resume else "trained"


def out_of_fold(predictor, cases: Sequence[dict], fold: int, oof_dir: Path, hd95: bool = True) -> list[dict]:
    """Segment ``cases`` (fold ``fold``'s validation cases) into ``oof_dir`` and score each against its label."""
    rows = []
    for case in cases:
        written = predictor.write(predictor.predict_case(case), oof_dir)
        task = predictor.task
        row = evaluate_case(case["case_id"], written, Path(case["label"]), task, task, hd95=hd95)
        rows.append({"case_id": row.pop("case_id"), "fold": fold, **row})
    return rows


def summarize_folds(rows: list[dict], out: Path, task) -> dict:
    """Per-fold and pooled summaries; writes ``metrics_per_case.csv`` and ``metrics_summary.json`` in ``out``."""
    folds = sorted({row["fold"] for row in rows})
    strip = lambda row: {k: v for k, v in row.items() if k != "fold"}  # noqa: E731
    pooled = summarize([strip(r) for r in rows])
    summary = {
        **pooled,
        "folds": {str(f): summarize([strip(r) for r in rows if r["fold"] == f]) for f in folds},
        "n_cases": len(rows),
        "task": task.to_dict(),
        "convention": task.name,
    }
    write_results(rows, summary, out)
    return summary
