"""Lesion-wise Dice and HD95 (the BraTS 2023+ ranking metrics), per named output, computed with panoptica.

Each output mask (a region TC/WT/ET or a class) is split into lesions, matched, scored lesion by lesion and
averaged with the BraTS penalties:

1. lesions: the connected components of the truth and of the prediction, 26-connectivity in 3-D (8 in 2-D),
   by panoptica's ``ConnectedComponentsInstanceApproximator`` (cc3d);
2. matching: panoptica's ``NaiveThresholdMatching``: a predicted lesion matches a truth lesion when their
   IoU is at least ``iou_threshold`` (0.5), one to one, best IoU first: the lesions and matching of the
   configuration panoptica ships as ``panoptica_evaluator_BRATS.yaml`` (HD95 added to its metrics);
3. a matched truth lesion (TP) scores the Dice and HD95 of the pair; a missed truth lesion (FN) scores
   Dice 0 and HD95 :data:`LESION_HD95_PENALTY_MM`; so does every unmatched predicted lesion (FP);
4. lesion-wise Dice = sum of TP Dice / (TP + FN + FP); lesion-wise HD95 = (sum of TP HD95 + 374 (FN + FP))
   / (TP + FN + FP); nothing to count (both masks empty) -> Dice 1, HD95 0.

Truth lesions of at most ``min_lesion_volume_mm3`` (BraTS-GLI: 50) are left out of the TP and FN counts
(they neither reward nor penalise); the predicted lesions matched to them are not false positives.

HD95, two definitions, both in mm (the voxel spacing is passed): the voxel-wise ``hd95_<out>`` of
:mod:`medseg.metrics.segmentation` is MONAI's: the larger of the two *directed* 95th percentiles of the
surface-to-surface distances. The lesion-wise ``lesion_hd95_<out>`` is panoptica's, per lesion pair: the
95th percentile of the two directed sets *pooled* (``np.percentile(np.hstack((d_ref, d_pred)), 95)``),
usually the smaller. Both take as surface the voxels a 6-connected erosion removes and measure exact
Euclidean distances between surface voxel centres.

Where this differs from the BraTS 2023 reference script (``rachitsaluja/BraTS-2023-Metrics``): that script
dilates the truth (3 iterations of an 18-connected element for gliomas), merges truth components whose
dilations touch into one lesion, matches every predicted component that overlaps a dilated lesion (many to
one, no IoU threshold), and takes HD95 from DeepMind's ``surface_distance`` (surfel-area weighted, max of
the directed percentiles). Cases with split or neighbouring lesions can therefore score differently here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from medseg.metrics.segmentation import metric_keys

LESION_HD95_PENALTY_MM = 374.0  # BraTS 2023 lesion-wise penalty (the voxel-wise one is 373.13)


@functools.lru_cache(maxsize=4)
def build_lesion_evaluator(iou_threshold: float = 0.5, with_hd95: bool = True):
    """panoptica's BraTS configuration (semantic input, connected components, IoU matching, one to one) with
    per-lesion Dice (and HD95): a ``panoptica.Panoptica_Evaluator``, built once per setting."""
    from panoptica import (
        CCABackend,
        ConnectedComponentsInstanceApproximator,
        InputType,
        Metric,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
        disable_citation_reminder,
    )
    from panoptica.utils.edge_case_handling import EdgeCaseHandler, EdgeCaseResult, MetricZeroTPEdgeCaseHandling

    disable_citation_reminder()  # it prints a banner on the first evaluation
    zero_tp = dict(EdgeCaseHandler().listmetric_zeroTP_handling)  # panoptica's defaults; HD95 has none
    zero_tp[Metric.HD95] = MetricZeroTPEdgeCaseHandling(
        no_instances_result=EdgeCaseResult.NAN, default_result=EdgeCaseResult.INF
    )
    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(cca_backend=CCABackend.cc3d),
        instance_matcher=NaiveThresholdMatching(
            matching_metric=Metric.IOU, matching_threshold=iou_threshold, allow_many_to_one=False
        ),
        edge_case_handler=EdgeCaseHandler(zero_tp),
        instance_metrics=[Metric.DSC, Metric.HD95] if with_hd95 else [Metric.DSC],
        global_metrics=[],
        log_times=False,
        verbose=False,
    )


def lesion_scores(
    pred: np.ndarray | Tensor,
    label: np.ndarray | Tensor,
    spacing: Sequence[float] | None = None,
    with_hd95: bool = True,
    iou_threshold: float = 0.5,
    min_lesion_volume_mm3: float = 0.0,
) -> dict[str, float | int]:
    """Lesion-wise scores of one binary mask pair ``[*spatial]`` (any non-zero value is foreground).

    Args:
        pred: predicted mask.
        label: truth mask, same shape.
        spacing: voxel size in mm per axis; ``None`` means 1 mm isotropic.
        with_hd95: also the lesion-wise HD95 (the slow part).
        iou_threshold: a predicted lesion matches a truth lesion at IoU >= this.
        min_lesion_volume_mm3: truth lesions of at most this volume are left out (BraTS-GLI: 50).

    Returns:
        ``{"dice", "hd95" (with ``with_hd95``; mm), "tp", "fn", "fp"}``: Dice and HD95 floats as in the module
        docstring, the counts ints (``tp`` and ``fn`` count truth lesions, ``fp`` predicted lesions).
    """
    from panoptica import Metric, MetricMode

    pred, label = (torch.as_tensor(m).cpu().numpy() != 0 for m in (pred, label))
    if pred.shape != label.shape:
        raise ValueError(f"prediction and label must have the same shape, got {pred.shape} and {label.shape}")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * pred.ndim
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} needs one value per axis of shape {pred.shape}")
    evaluator = build_lesion_evaluator(float(iou_threshold), with_hd95)
    (result,) = evaluator.evaluate(pred.astype(np.uint8), label.astype(np.uint8), voxelspacing=spacing).values()

    voxel_mm3 = float(np.prod(spacing))
    kept = np.array(result.instance_voxel_count_matched_ref_list, dtype=np.float64) * voxel_mm3 > min_lesion_volume_mm3
    missed = np.array(result.instance_voxel_count_unmatched_ref_list, dtype=np.float64) * voxel_mm3
    tp, fn, fp = int(kept.sum()), int((missed > min_lesion_volume_mm3).sum()), int(result.fp)
    n = tp + fn + fp
    metrics = {"dice": Metric.DSC, "hd95": Metric.HD95} if with_hd95 else {"dice": Metric.DSC}
    out: dict[str, float | int] = {}
    for name, metric in metrics.items():
        values = np.asarray(result.get_list_metric(metric, MetricMode.ALL), dtype=np.float64)  # [matched]
        if name == "dice":
            out[name] = float(values[kept].sum() / n) if n else 1.0
        else:
            out[name] = float((values[kept].sum() + LESION_HD95_PENALTY_MM * (fn + fp)) / n) if n else 0.0
    return {**out, "tp": tp, "fn": fn, "fp": fp}


def lesion_metrics(
    pred_masks: np.ndarray | Tensor,
    label_masks: np.ndarray | Tensor,
    spacing: Sequence[float] | None = None,
    names: Sequence[str] = ("TC", "WT", "ET"),
    with_hd95: bool = True,
    iou_threshold: float = 0.5,
    min_lesion_volume_mm3: float = 0.0,
) -> dict[str, float | int]:
    """Lesion-wise metrics of one case from binary masks ``[N, *spatial]``, one per output named in ``names``
    (a task's regions or foreground classes), scored by :func:`lesion_scores`.

    Returns, ``<key>`` as :func:`medseg.metrics.segmentation.metric_keys` makes it: ``lesion_dice_<key>``...,
    ``lesion_dice_mean``, with ``with_hd95`` ``lesion_hd95_<key>``..., ``lesion_hd95_mean`` (mm; the means over
    the outputs), then the int counts ``lesions_tp_<key>``..., ``lesions_fn_<key>``..., ``lesions_fp_<key>``....
    """
    pred_masks, label_masks = (torch.as_tensor(m).cpu().numpy() for m in (pred_masks, label_masks))
    names = [names] if isinstance(names, str) else list(names)
    if not names or pred_masks.shape[0] != len(names) or label_masks.shape != pred_masks.shape:
        raise ValueError(
            f"expected masks [{len(names)}, *spatial] ({', '.join(names)}), "
            f"got {tuple(pred_masks.shape)} and {tuple(label_masks.shape)}"
        )
    scores = [
        lesion_scores(p, lab, spacing, with_hd95, iou_threshold, min_lesion_volume_mm3)
        for p, lab in zip(pred_masks, label_masks)
    ]
    keys = metric_keys(names)
    out: dict[str, float | int] = {}
    for metric in ("dice", "hd95") if with_hd95 else ("dice",):
        out.update({f"lesion_{metric}_{key}": s[metric] for key, s in zip(keys, scores)})
        out[f"lesion_{metric}_mean"] = float(np.mean([s[metric] for s in scores]))
    for count in ("tp", "fn", "fp"):
        out.update({f"lesions_{count}_{key}": s[count] for key, s in zip(keys, scores)})
    return out


def lesion_settings(iou_threshold: float = 0.5, min_lesion_volume_mm3: float = 0.0) -> dict:
    """What made the lesion-wise numbers, for the metrics summary (provenance)."""
    from importlib.metadata import version

    return {
        "library": f"panoptica {version('panoptica')}",
        "lesions": "connected components, 26-connectivity (cc3d)",
        "matching": f"IoU >= {iou_threshold}, one to one (panoptica NaiveThresholdMatching)",
        "min_lesion_volume_mm3": min_lesion_volume_mm3,
        "hd95": "per lesion pair: 95th percentile of both directed surface distances pooled (panoptica), mm",
        "hd95_penalty_mm": LESION_HD95_PENALTY_MM,
    }
