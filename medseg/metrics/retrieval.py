"""Retrieval and zero-shot metrics of image-report models: Recall@K both ways, accuracy and AUROC."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata


def retrieval_recall(image: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K of pair retrieval: ``i2t_recall@K`` (share of images whose own report is among the K most
    similar) and ``t2i_recall@K``. ``image``, ``text``: normalised [N, D], pair i in row i. Ties count in favour."""
    sim = image.float() @ text.float().T  # [N, N]
    own = sim.diag()  # [N]
    rank_i2t = (sim > own[:, None]).sum(1)  # [N] reports scoring above an image's own
    rank_t2i = (sim > own[None, :]).sum(0)  # [N] images scoring above a report's own
    out = {}
    for k in ks:
        out[f"i2t_recall@{k}"] = float((rank_i2t < k).float().mean())
        out[f"t2i_recall@{k}"] = float((rank_t2i < k).float().mean())
    return out


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties half); NaN without both classes."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def zero_shot_metrics(probs: torch.Tensor, truth: Sequence[str], classes: Sequence[str]) -> dict[str, float]:
    """``acc`` and ``auroc`` (macro one-vs-rest over classes present) of zero-shot probabilities [N, C]
    against true class names; cases whose truth is not one of ``classes`` are left out."""
    keep = [i for i, t in enumerate(truth) if t in classes]
    if not keep:
        return {"acc": float("nan"), "auroc": float("nan")}
    probs = probs[keep].float().numpy()  # [n, C]
    target = np.array([list(classes).index(truth[i]) for i in keep])  # [n]
    acc = float((probs.argmax(1) == target).mean())
    aucs = [auroc(probs[:, c], target == c) for c in range(len(classes))]
    aucs = [a for a in aucs if not math.isnan(a)]
    return {"acc": acc, "auroc": float(np.mean(aucs)) if aucs else float("nan")}
