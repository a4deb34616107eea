"""Cross-validation: k deterministic folds, one fit per fold, out-of-fold predictions and their scores.

The folds are :func:`medseg.data.base.kfold_assignment`'s: the labelled cases sorted by id, shuffled with
the data seed, dealt round-robin, so the same data and seed always give the same folds. Fold ``k`` trains
with ``--data.init_args.n_folds K --data.init_args.fold k`` in ``OUT/fold_k`` (resumed with
``--ckpt_path last`` when interrupted, skipped once finished), then segments its validation cases into
``OUT/oof/`` with its own checkpoint: every labelled case is predicted exactly once, by the one model that
never saw it. Post-processing (``medseg.inference.postprocess``: small components per output, small ET
relabelled as core) is then chosen on those out-of-fold predictions, kept only where it raises their
mean Dice, and stored as ``postprocess.json`` beside every fold's checkpoint, where ``medseg predict``
applies it; temperatures for calibrated probabilities (:mod:`medseg.inference.calibration`) are fitted on
the same out-of-fold probabilities and stored as ``calibration.json`` there too. The scores are per fold
and pooled over all cases (``OUT/metrics_summary.json`` with a ``folds`` entry, ``OUT/metrics_per_case.csv``
with a ``fold`` column, as ``medseg evaluate`` writes them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medseg.data.base import kfold_assignment
from medseg.evaluation import evaluate_case, read_label_map, summarize, write_results
from medseg.inference.calibration import FILENAME as CALIBRATION
from medseg.inference.calibration import Samples, fit_temperature
from medseg.inference.postprocess import FILENAME, choose_and_score
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


def out_of_fold(
    predictor, cases: Sequence[dict], fold: int, oof_dir: Path, hd95: bool = True, samples: Samples | None = None
) -> list[dict]:
    """Segment ``cases`` (fold ``fold``'s validation cases) into ``oof_dir`` and score each against its label;
    with ``samples``, add voxels of their probabilities and labels to it (for :func:`fit_temperature`)."""
    rows = []
    task = predictor.task
    for case in cases:
        result = predictor.predict_case(case, probabilities=samples is not None)
        written = predictor.write(result, oof_dir) if samples is None else _write_label(predictor, result, oof_dir)
        row = evaluate_case(case["case_id"], written, Path(case["label"]), task, task, hd95=hd95)
        rows.append({"case_id": row.pop("case_id"), "fold": fold, **row})
        if samples is not None:
            label, _ = read_label_map(Path(case["label"]), case["case_id"])
            samples.add(result.probabilities, task.to_masks(label.astype(np.int64)).numpy())
    return rows


def _write_label(predictor, result, out_dir: Path) -> Path:
    """The label map alone (the probabilities were only asked for to sample them)."""
    from dataclasses import replace

    return predictor.write(replace(result, probabilities=None), out_dir)


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


def learn_postprocessing(
    cases: Sequence[dict], oof_dir: Path, task, fold_dirs: Sequence[Path], objective: str = "both"
) -> dict:
    """Choose post-processing on the out-of-fold predictions of ``cases`` (their labels known) by ``objective``
    (see :func:`choose_postprocessing`) and write it as ``postprocess.json`` beside each fold's checkpoint;
    returns it (``{}`` when nothing helped).

    Holds every case's masks in memory (fine for demo-size sets; a large dataset wants a subset)."""
    preds, truths, spacings = [], [], []
    for case in cases:
        pred, _ = read_label_map(oof_dir / f"{case['case_id']}.nii.gz", case["case_id"])
        label, image = read_label_map(Path(case["label"]), case["case_id"])
        preds.append(task.to_masks(pred.astype(np.int64)).numpy())
        truths.append(task.to_masks(label.astype(np.int64)).numpy())
        spacings.append([float(z) for z in image.header.get_zooms()[:3]])
    config, _ = choose_and_score(preds, truths, task.outputs, spacings, objective)
    for fold_dir in fold_dirs:
        write_atomic(fold_dir / "checkpoints" / FILENAME, json.dumps(config, indent=1))
    return config


def learn_calibration(samples: Samples, task, fold_dirs: Sequence[Path]) -> dict:
    """Fit temperatures on the out-of-fold ``samples`` and write them as ``calibration.json`` beside each
    fold's checkpoint; returns them with the (out-of-fold, in-sample) ECE before and after."""
    config = fit_temperature(samples, task.outputs, task.kind)
    for fold_dir in fold_dirs:
        write_atomic(fold_dir / "checkpoints" / CALIBRATION, json.dumps(config, indent=1))
    return config
