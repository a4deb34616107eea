"""Detection metrics over a set of scans: average precision at a 3-D IoU, and FROC (LUNA16).

Every function takes, per scan, the predicted boxes [P, 6] xyzxyz with scores [P] (and labels [P]) and
the true boxes [T, 6] (and labels [T]), as numpy arrays or tensors, all in one coordinate system (IoU
is the same in normalised, voxel or mm coordinates of an unrotated grid).

- :func:`average_precision`: predictions of all scans ranked by score; a prediction is a true positive
  when its best IoU with a not yet matched true box of its scan (and class) is >= the threshold (greedy,
  highest score first, as COCO and VOC); AP is the area under the precision-recall curve with precision
  made monotone (VOC 2010+ all-point interpolation). :func:`mean_average_precision` averages it over
  the classes present in the truth.
- :func:`froc`: LUNA16's free-response ROC: a lesion counts as found by its highest-scoring prediction
  that hits it (IoU >= threshold); further predictions hitting an already found lesion are ignored,
  neither true nor false positives; every other prediction is a false positive. Sensitivity is read at
  1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan (the best sensitivity reached with at most that
  many false positives on average), and the FROC score is their mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medseg.boxes import box_iou

FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[P, 6] x [T, 6] xyzxyz -> [P, T] IoU."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return box_iou(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64))[0].numpy()


def _numpy(values) -> np.ndarray:
    return np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float)


def _as_arrays(boxes, scores=None) -> tuple[np.ndarray, np.ndarray]:
    """boxes [P, 6] and scores [P] (zeros when not given) as float arrays."""
    boxes = _numpy(boxes).reshape(-1, 6)
    if scores is None:
        return boxes, np.zeros(len(boxes))
    scores = _numpy(scores).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    return boxes, scores


def _match(
    pred_boxes, pred_scores, true_boxes, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Greedy matching per scan, highest score first.

    Returns per scan: scores [P] (descending), the true box each prediction takes [P] (-1: none; each
    true box is taken once, by the best-overlapping free one), and whether it reaches any true box [P].
    """
    out = []
    for boxes, scores, truth in zip(pred_boxes, pred_scores, true_boxes):
        boxes, scores = _as_arrays(boxes, scores)
        truth, _ = _as_arrays(truth)
        order = np.argsort(-scores, kind="stable")
        iou = _iou(boxes[order], truth)  # [P, T]
        reached = iou >= iou_threshold
        taken = np.zeros(len(truth), bool)
        matched = np.full(len(boxes), -1)
        for p in range(len(boxes) if len(truth) else 0):
            free = np.where(reached[p] & ~taken, iou[p], -1.0)  # [T]
            if free.max() >= 0:
                matched[p] = int(np.argmax(free))
                taken[matched[p]] = True
        out.append((scores[order], matched, reached.any(axis=1)))
    return out


def average_precision(
    pred_boxes: Sequence, pred_scores: Sequence, true_boxes: Sequence, iou_threshold: float = 0.5
) -> float:
    """AP of one class over scans (lists of per-scan arrays); NaN when there is no true box at all."""
    n_true = sum(len(_as_arrays(t)[0]) for t in true_boxes)
    if n_true == 0:
        return float("nan")
    per_scan = _match(pred_boxes, pred_scores, true_boxes, iou_threshold)
    scores = np.concatenate([s for s, _, _ in per_scan]) if per_scan else np.zeros(0)
    tp = np.concatenate([m >= 0 for _, m, _ in per_scan]) if per_scan else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    cum_tp, cum_fp = np.cumsum(tp), np.cumsum(~tp)
    recall = np.concatenate([[0.0], cum_tp / n_true])
    precision = np.concatenate([[1.0], cum_tp / np.maximum(cum_tp + cum_fp, 1)])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    return float(np.sum(np.diff(recall) * precision[1:]))


def mean_average_precision(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    pred_labels: Sequence,
    true_boxes: Sequence,
    true_labels: Sequence,
    iou_threshold: float = 0.5,
) -> float:
    """AP averaged over the classes that have true boxes; NaN when no scan has any."""
    pred_labels = [_numpy(p).reshape(-1) for p in pred_labels]
    true_labels = [_numpy(t).reshape(-1) for t in true_labels]
    classes = sorted({int(c) for t in true_labels for c in t})
    aps = []
    for c in classes:
        aps.append(
            average_precision(
                [_as_arrays(b)[0][lab == c] for b, lab in zip(pred_boxes, pred_labels)],
                [_as_arrays(b, s)[1][lab == c] for b, s, lab in zip(pred_boxes, pred_scores, pred_labels)],
                [_as_arrays(t)[0][lab == c] for t, lab in zip(true_boxes, true_labels)],
                iou_threshold,
            )
        )
    return float(np.mean(aps)) if aps else float("nan")


def froc(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    true_boxes: Sequence,
    iou_threshold: float = 0.1,
    fp_rates: Sequence[float] = FROC_FP_RATES,
) -> tuple[float, dict[float, float]]:
    """(FROC score, {false positives per scan: sensitivity}); NaN when there is no true box at all."""
    n_scans = len(true_boxes)
    n_true = sum(len(_as_arrays(t)[0]) for t in true_boxes)
    if n_true == 0 or n_scans == 0:
        return float("nan"), {r: float("nan") for r in fp_rates}
    per_scan = _match(pred_boxes, pred_scores, true_boxes, iou_threshold)
    scores = np.concatenate([s for s, _, _ in per_scan])
    found = np.concatenate([m >= 0 for _, m, _ in per_scan])  # finds a lesion not found before
    false = np.concatenate([~r for _, _, r in per_scan])  # reaches no lesion; the rest are ignored
    order = np.argsort(-scores, kind="stable")
    fps = np.concatenate([[0.0], np.cumsum(false[order]) / n_scans])  # false positives per scan
    sens = np.concatenate([[0.0], np.cumsum(found[order]) / n_true])  # sensitivity
    sensitivity = {r: float(sens[fps <= r].max()) for r in fp_rates}
    return float(np.mean(list(sensitivity.values()))), sensitivity
