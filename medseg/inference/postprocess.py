"""Post-processing of predicted masks on the input grid, before they become a label map (numpy + scipy).

A configuration is plain data, kept as ``postprocess.json`` beside a checkpoint (``medseg predict``
applies it by default) or passed with ``--postprocess FILE.json``::

    {"min_component_ml": {"WT": 0.5, "ET": 0.1}, "et_to_tc_below_ml": 0.3}

- ``min_component_ml``: per output (region or foreground class), 26-connected components smaller than
  this volume (ml) are removed (a class's voxels then become background).
- ``et_to_tc_below_ml``: the BraTS practice for a small enhancing-tumour prediction: when ET's total volume
  is below this (ml) but not zero, those voxels leave ET and stay in TC and WT (written as necrotic core),
  since a few false-positive ET voxels in a case without enhancement cost a whole Dice point.

:func:`choose_postprocessing` picks the thresholds that raise the mean score on cases with known labels: voxel-wise
Dice, lesion-wise Dice (BraTS 2023+) or their mean; :func:`choose_and_score` does it with the candidates
``medseg cv`` (on out-of-fold predictions) and ``medseg postprocess`` (on a validation set) try.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError

KEYS = ("min_component_ml", "et_to_tc_below_ml")
FILENAME = "postprocess.json"
_CONNECTIVITY = np.ones((3, 3, 3), bool)  # 26-connectivity


def check_postprocess(config: Mapping, outputs: Sequence[str], source: str = "post-processing") -> dict:
    """``config`` checked against a task's ``outputs`` (numbers >= 0, known names); returned as a plain dict.

    Raises:
        MedsegError: naming ``source`` (the file) and what is wrong.
    """
    if not isinstance(config, Mapping):
        raise MedsegError(f'{source}: expected a JSON object like {{"min_component_ml": {{...}}}}')
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise MedsegError(f"{source}: unknown keys {unknown}; known: {', '.join(KEYS)}")
    out: dict = {}
    minimum = config.get("min_component_ml") or {}
    if not isinstance(minimum, Mapping):
        raise MedsegError(f'{source}: min_component_ml maps output names to ml, e.g. {{"WT": 0.5}}')
    strange = sorted(set(minimum) - set(outputs))
    if strange:
        raise MedsegError(f"{source}: min_component_ml names {strange}; the model's outputs are {', '.join(outputs)}")
    if minimum:
        out["min_component_ml"] = {name: _volume(value, f"{source}: min_component_ml.{name}")
                                   for name, value in minimum.items()}  # fmt: skip
    if config.get("et_to_tc_below_ml") is not None:
        if not {"ET", "TC"} <= set(outputs):
            has = ", ".join(outputs)
            raise MedsegError(f"{source}: et_to_tc_below_ml needs outputs ET and TC; the model has {has}")
        out["et_to_tc_below_ml"] = _volume(config["et_to_tc_below_ml"], f"{source}: et_to_tc_below_ml")
    return out


def _volume(value, what: str) -> float:
    try:
        volume = float(value)
    except (TypeError, ValueError):
        volume = -1.0
    if not volume >= 0:
        raise MedsegError(f"{what}: expected a volume in ml >= 0, found {value!r}")
    return volume


def load_postprocess(path: str | Path, outputs: Sequence[str]) -> dict:
    """A configuration from a JSON file, checked against ``outputs``."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MedsegError(f"{path}: cannot read post-processing settings: {err}") from None
    return check_postprocess(config, outputs, str(path))


def beside(checkpoints: Sequence[str | Path]) -> Path | None:
    """The ``postprocess.json`` stored with the model(s): beside the checkpoints. With several checkpoints,
    the files found must agree (otherwise a MedsegError asks for ``--postprocess``)."""
    from medseg.inference.checkpoint import stored_beside

    return stored_beside(checkpoints, FILENAME, "post-processing", "--postprocess")


def remove_small_components(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """Bool mask [X, Y, Z] without its 26-connected components of fewer than ``min_voxels`` voxels."""
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())  # [n + 1], sizes[0] the background
    keep = sizes >= min_voxels - 1e-6  # a component of exactly the threshold stays
    keep[0] = False
    return keep[labels]


def et_to_tc(masks: np.ndarray, outputs: Sequence[str], voxel_ml: float, below_ml: float) -> np.ndarray:
    """Masks [N, X, Y, Z] with ET emptied when its total volume is below ``below_ml`` (TC and WT untouched)."""
    et = list(outputs).index("ET")
    out = masks.copy()
    if 0 < masks[et].sum() * voxel_ml < below_ml:
        for name in ("TC", "WT"):  # those voxels stay tumour (core)
            if name in outputs:
                out[list(outputs).index(name)] |= masks[et]
        out[et] = False
    return out


def postprocess_masks(masks: np.ndarray, outputs: Sequence[str], voxel_ml: float, config: Mapping) -> np.ndarray:
    """Bool masks [N, X, Y, Z], one per output (``outputs`` names them), post-processed by ``config``
    (checked with :func:`check_postprocess`): small components first, then ET -> TC."""
    out = np.asarray(masks, bool).copy()
    for name, ml in (config.get("min_component_ml") or {}).items():
        i = list(outputs).index(name)
        out[i] = remove_small_components(out[i], ml / voxel_ml)
    if config.get("et_to_tc_below_ml") is not None:
        out = et_to_tc(out, outputs, voxel_ml, config["et_to_tc_below_ml"])
    return out


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two bool masks; both empty -> 1 (as :func:`medseg.metrics.segmentation.dice`)."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


OBJECTIVES = ("dice", "lesion", "both")


def _scorer(objective: str, spacing: Sequence[float]):
    """Score of one mask pair under ``objective``: voxel-wise Dice, lesion-wise Dice (BraTS 2023+, by
    :func:`medseg.metrics.lesion.lesion_scores`) or the mean of the two."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "dice":
        return _dice
    from medseg.metrics.lesion import lesion_scores

    def lesion(pred: np.ndarray, truth: np.ndarray) -> float:
        return float(lesion_scores(pred, truth, spacing, with_hd95=False)["dice"])

    if objective == "lesion":
        return lesion
    return lambda pred, truth: (_dice(pred, truth) + lesion(pred, truth)) / 2.0


def choose_postprocessing(
    pred_masks_list: Sequence[np.ndarray],
    truth_masks_list: Sequence[np.ndarray],
    names: Sequence[str],
    spacing: Sequence[float],
    candidates: Sequence[float | str | None] = ("none", 0.1, 0.25, 0.5, 1.0),
    et_to_tc_candidates: Sequence[float] = (),
    objective: str = "dice",
) -> dict:
    """The post-processing that raises the mean score over cases with known labels.

    Args:
        pred_masks_list, truth_masks_list: per case, bool masks [N, X, Y, Z], one per output in ``names``.
        spacing: voxel size in mm (X, Y, Z), the same for all cases.
        candidates: ``min_component_ml`` thresholds to try per output; ``"none"`` (or None) is always tried.
        et_to_tc_candidates: ``et_to_tc_below_ml`` values to try (scored on ET) after the components.
        objective: what is raised: ``dice`` (voxel-wise), ``lesion`` (lesion-wise Dice, as BraTS 2023+ ranks)
            or ``both`` (their mean: removes false-positive specks without trading away voxel Dice).

    Returns:
        a configuration for :func:`postprocess_masks` holding, per output, the threshold with the best mean
        score, only where it beats no post-processing (ties keep none); ``{}`` when nothing helps.
    """
    score_of = _scorer(objective, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    pairs = [(np.asarray(p, bool), np.asarray(t, bool)) for p, t in zip(pred_masks_list, truth_masks_list)]
    thresholds = sorted({float(c) for c in candidates if c not in (None, "none")})
    chosen: dict = {}
    for i, name in enumerate(names):
        best, best_score = None, np.mean([score_of(p[i], t[i]) for p, t in pairs])
        for ml in thresholds:
            score = np.mean([score_of(remove_small_components(p[i], ml / voxel_ml), t[i]) for p, t in pairs])
            if score > best_score + 1e-12:
                best, best_score = ml, score
        if best is not None:
            chosen.setdefault("min_component_ml", {})[name] = best
    if et_to_tc_candidates and {"ET", "TC"} <= set(names):
        et = list(names).index("ET")
        processed = [(postprocess_masks(p, names, voxel_ml, chosen), t) for p, t in pairs]
        best, best_score = None, np.mean([score_of(p[et], t[et]) for p, t in processed])
        for ml in sorted(float(c) for c in et_to_tc_candidates):
            score = np.mean([score_of(et_to_tc(p, names, voxel_ml, ml)[et], t[et]) for p, t in processed])
            if score > best_score + 1e-12:
                best, best_score = ml, score
        if best is not None:
            chosen["et_to_tc_below_ml"] = best
    return chosen


ET_TO_TC_CANDIDATES = (0.1, 0.25, 0.5, 1.0)  # ml: what choose_and_score tries for et_to_tc_below_ml


def choose_and_score(
    pred_masks_list: Sequence[np.ndarray],
    truth_masks_list: Sequence[np.ndarray],
    names: Sequence[str],
    spacings: Sequence[Sequence[float]],
    objective: str = "both",
) -> tuple[dict, dict[str, tuple[float, float]]]:
    """:func:`choose_postprocessing` with the default candidates (ET -> TC too where the outputs have both), on
    cases of per-case ``spacings`` (their median is used); with, per output, the mean score by ``objective``
    without and with the chosen configuration: ``(config, {name: (before, after)})``."""
    spacing = np.median(np.asarray(spacings, dtype=np.float64), axis=0).tolist()
    et_candidates = ET_TO_TC_CANDIDATES if {"ET", "TC"} <= set(names) else ()
    config = choose_postprocessing(
        pred_masks_list, truth_masks_list, names, spacing, et_to_tc_candidates=et_candidates, objective=objective
    )
    score_of, voxel_ml = _scorer(objective, spacing), float(np.prod(spacing)) / 1000.0
    pairs = [(np.asarray(p, bool), np.asarray(t, bool)) for p, t in zip(pred_masks_list, truth_masks_list)]
    processed = [postprocess_masks(p, names, voxel_ml, config) for p, _ in pairs]
    scores = {
        name: (
            float(np.mean([score_of(p[i], t[i]) for p, t in pairs])),
            float(np.mean([score_of(q[i], t[i]) for q, (_, t) in zip(processed, pairs)])),
        )
        for i, name in enumerate(names)
    }
    return config, scores


def segment_and_choose(predictor, cases: Iterable[dict], objective: str = "both") -> tuple[dict, dict]:
    """Segment labelled ``cases`` (``{"case_id", "image", "label"}``) with ``predictor`` (a
    :class:`medseg.inference.Predictor` without post-processing) and :func:`choose_and_score` on them."""
    from medseg.evaluation import read_label_map

    task = predictor.task
    preds, truths, spacings = [], [], []
    for case in cases:
        result = predictor.predict_case(case)
        label, image = read_label_map(Path(case["label"]), case["case_id"])
        if label.shape != result.label.shape:
            raise MedsegError(f"{case['label']}: label {label.shape} does not match its image {result.label.shape}")
        preds.append(task.to_masks(result.label.astype(np.int64)).numpy())
        truths.append(task.to_masks(label.astype(np.int64)).numpy())
        spacings.append([float(z) for z in image.header.get_zooms()[:3]])
    return choose_and_score(preds, truths, task.outputs, spacings, objective)
