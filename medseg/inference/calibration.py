"""Calibrated probabilities: temperature scaling fitted on labelled cases, expected calibration error (ECE)
and uncertainty maps.

A segmentation network trained with Dice is over-confident: its probabilities sit near 0 and 1 even where it
is wrong. Temperature scaling (Guo et al., ICML 2017) divides each output's logit by a temperature T fitted
to minimise the negative log-likelihood of labelled voxels the model did not train on (a validation set, or
the out-of-fold predictions of ``medseg cv``): one T per region (sigmoid outputs) or one T for the softmax
over classes. It never changes a label: ``sigmoid(z / T) > 0.5`` exactly where ``sigmoid(z) > 0.5`` and the
argmax of ``z / T`` is that of ``z``, and ``medseg predict`` thresholds the uncalibrated probabilities in
any case, so only ``--probabilities`` and ``--uncertainty`` change.

Stored as ``calibration.json`` beside a checkpoint (``medseg predict`` applies it by default)::

    {"temperature": {"TC": 1.8, "WT": 2.3, "ET": 1.6}}      # regions
    {"temperature": {"classes": 1.4}}                        # classes (one softmax temperature)

ECE: :mod:`medseg.metrics.calibration` (15 bins per output, over the voxels the network segmented).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.metrics.calibration import BINS, calibration_error, ece, positive_probabilities, segmented

FILENAME = "calibration.json"
CLASSES = "classes"  # the key of the one softmax temperature of a classes task
_EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before taking logits


def check_calibration(config: Mapping, outputs: Sequence[str], kind: str, source: str = "calibration") -> dict:
    """``config`` checked against a task's ``outputs`` and ``kind`` (``regions`` or ``classes``).

    Raises:
        MedsegError: naming ``source`` (the file) and what is wrong.
    """
    temperature = config.get("temperature") if isinstance(config, Mapping) else None
    if not isinstance(temperature, Mapping) or set(config) - {"temperature", "ece", "cases"}:
        raise MedsegError(f'{source}: expected a JSON object like {{"temperature": {{"TC": 1.5, ...}}}}')
    names = [CLASSES] if kind == "classes" else list(outputs)
    if set(temperature) != set(names):
        raise MedsegError(f"{source}: temperatures for {sorted(temperature)}; this model needs {', '.join(names)}")
    out = {}
    for name in names:
        try:
            value = float(temperature[name])
        except (TypeError, ValueError):
            value = float("nan")
        if not 0 < value < 1e3:
            raise MedsegError(f"{source}: temperature.{name} must be a number > 0, found {temperature[name]!r}")
        out[name] = value
    return {"temperature": out}


def load_calibration(path: str | Path, outputs: Sequence[str], kind: str) -> dict:
    """A calibration from a JSON file, checked against the model's ``outputs`` and ``kind``."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MedsegError(f"{path}: cannot read calibration: {err}") from None
    return check_calibration(config, outputs, kind, str(path))


def calibrate(probs: torch.Tensor, config: Mapping, outputs: Sequence[str], kind: str) -> torch.Tensor:
    """Probabilities [N', *spatial] (sigmoid per region, or softmax over background + classes) rescaled by
    the temperatures of ``config``; exact zeros (outside the segmented crop) stay zero."""
    temperature = config["temperature"]
    p = probs.float().clamp(_EPS, 1 - _EPS)
    if kind == "classes":
        out = torch.softmax(torch.log(p) / temperature[CLASSES], dim=0)
    else:
        t = torch.tensor([temperature[name] for name in outputs], dtype=p.dtype).view(-1, *[1] * (p.ndim - 1))
        out = torch.sigmoid(torch.logit(p) / t)
    return torch.where(probs.sum(0, keepdim=True) > 0, out, torch.zeros_like(out))


class Samples:
    """Voxels drawn from labelled cases for :func:`fit_temperature`: up to ``per_case`` random segmented
    voxels of each case (seeded), their probabilities [N', n] and truth masks [N, n]."""

    def __init__(self, per_case: int = 200_000, seed: int = 0) -> None:
        self.per_case, self.rng = per_case, np.random.default_rng(seed)
        self.probs: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []

    def add(self, probs: np.ndarray, truth: np.ndarray) -> None:
        """``probs`` [N', *spatial], ``truth`` bool [N, *spatial] (one mask per output), on one grid."""
        index = np.flatnonzero(segmented(probs))
        if index.size > self.per_case:
            index = self.rng.choice(index, self.per_case, replace=False)
        self.probs.append(np.asarray(probs).reshape(len(probs), -1)[:, index].astype(np.float32))
        self.truth.append(np.asarray(truth, bool).reshape(len(truth), -1)[:, index])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.probs:
            raise MedsegError("calibration: no labelled voxels to fit on")
        return np.concatenate(self.probs, 1), np.concatenate(self.truth, 1)


def fit_temperature(samples: Samples, outputs: Sequence[str], kind: str) -> dict:
    """The temperatures minimising the negative log-likelihood of the sampled voxels, with their ECE before
    and after: ``{"temperature": {...}, "ece": {"before": {...}, "after": {...}}}`` (ECE on the samples)."""
    probs, truth = samples.arrays()
    p = torch.from_numpy(probs).double().clamp(_EPS, 1 - _EPS)
    if kind == "classes":
        target = torch.from_numpy(_class_index(truth))
        temps = {CLASSES: _minimise(lambda t: torch.nn.functional.cross_entropy(torch.log(p).T / t, target))}
    else:
        temps = {}
        for i, name in enumerate(outputs):
            z, y = torch.logit(p[i]), torch.from_numpy(truth[i]).double()
            temps[name] = _minimise(lambda t, z=z, y=y: torch.nn.functional.binary_cross_entropy_with_logits(z / t, y))
    config = {"temperature": temps}
    after = calibrate(torch.from_numpy(probs), config, outputs, kind).numpy()
    ece = {
        "before": _sample_ece(probs, truth, outputs, kind),
        "after": _sample_ece(after, truth, outputs, kind),
    }
    return {**config, "ece": ece}


def _sample_ece(probs: np.ndarray, truth: np.ndarray, names: Sequence[str], kind: str) -> dict[str, float]:
    positive = positive_probabilities(probs.astype(np.float64), kind)
    return {name: round(ece(positive[i], truth[i], BINS), 6) for i, name in enumerate(names)}


def _class_index(truth: np.ndarray) -> np.ndarray:
    """Bool masks [K, n] (exclusive foreground classes) -> class index [n] (0 background)."""
    return np.where(truth.any(0), truth.argmax(0) + 1, 0).astype(np.int64)


def _minimise(loss) -> float:
    """The temperature T > 0 minimising ``loss(T)`` (L-BFGS on log T, from T = 1), rounded to 4 digits."""
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = loss(log_t.exp())
        value.backward()
        return value

    optimizer.step(closure)
    return round(float(log_t.detach().exp().clamp(1e-2, 1e2)), 4)


def uncertainty(probs: np.ndarray, kind: str) -> np.ndarray:
    """Entropy in bits, 0 (certain) to 1: per region the binary entropy of its probability [R, *spatial];
    for classes one map [1, *spatial] of the softmax entropy divided by log2(K + 1)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    if kind == "classes":
        entropy = -(p * np.log2(p)).sum(0, keepdims=True) / np.log2(len(p))
    else:
        q = np.clip(1.0 - p, 1e-12, 1.0)
        entropy = -(p * np.log2(p) + q * np.log2(q))
    return np.where(segmented(probs)[None], entropy, 0.0).astype(np.float32)


def beside(checkpoints: Sequence[str | Path]) -> Path | None:
    """The ``calibration.json`` stored with the model(s), beside the checkpoints; several must agree."""
    from medseg.inference.checkpoint import stored_beside

    return stored_beside(checkpoints, FILENAME, "calibrations", "--calibration")


def fit_on_cases(predictor, cases: Sequence[dict], per_case: int = 200_000, seed: int = 0, progress=None) -> dict:
    """Fit temperatures for ``predictor`` (a :class:`medseg.inference.segment.Predictor`, uncalibrated) on
    labelled ``cases`` (dicts with ``image`` and ``label``, as :func:`medseg.data.layouts.read_dataset` lists
    them) that its models did not train on: see :func:`fit_temperature`, plus ``"cases": n``."""
    from medseg.evaluation import read_label_map

    samples = Samples(per_case, seed)
    task = predictor.task
    for case in progress(cases) if progress else cases:
        result = predictor.predict_case(case, probabilities=True)
        label, _ = read_label_map(Path(case["label"]), case["case_id"])
        if label.shape != result.probabilities.shape[1:]:
            raise MedsegError(f"{case['label']}: label shape {label.shape} != image {result.probabilities.shape[1:]}")
        samples.add(result.probabilities, task.to_masks(label.astype(np.int64)).numpy())
    return {**fit_temperature(samples, task.outputs, task.kind), "cases": len(cases)}


PROB_SUFFIX = "_prob"  # <case>_prob.nii.gz beside <case>.nii.gz, as medseg predict --probabilities writes it
SIDECARS = (PROB_SUFFIX, "_uncertainty")


def without_sidecars(files: dict[str, Path]) -> dict[str, Path]:
    """Case id -> prediction file, without ``<case>_prob`` and ``<case>_uncertainty`` beside ``<case>``."""
    extra = {c for c in files for s in SIDECARS if c.endswith(s) and c[: -len(s)] in files}
    return {c: path for c, path in files.items() if c not in extra}


def probability_metrics(path: Path, truth: np.ndarray, task, case_id: str) -> dict[str, float]:
    """``{"ece_<key>": ..., "ece_mean": ...}`` of the probability file ``path`` ([X, Y, Z, N'] as
    ``medseg predict --probabilities`` writes it) against ``truth`` bool [N, X, Y, Z] of ``task``'s outputs."""
    import nibabel as nib

    from medseg.errors import CaseError
    from medseg.metrics.segmentation import metric_keys

    try:
        probs = np.moveaxis(np.asarray(nib.load(path).dataobj, np.float32), -1, 0)  # [N', X, Y, Z]
    except Exception as exc:
        raise CaseError(f"cannot read probabilities: {exc}", case_id=case_id, path=path) from exc
    expected = len(task.outputs) + (task.kind == "classes")
    if probs.shape != (expected, *truth.shape[1:]):
        raise CaseError(
            f"probabilities {path} have shape {probs.shape[1:]} x {probs.shape[0]}; expected {truth.shape[1:]} x "
            f"{expected} ({task.describe()})",
            case_id=case_id,
        )
    errors = calibration_error(probs, truth, metric_keys(task.outputs), task.kind)
    return {**errors, "ece_mean": float(np.mean(list(errors.values())))}
