"""Dataset fingerprint: what the planner (:mod:`medseg.planning`) and CT normalisation need to know of a dataset.

Measured on the voxels of every labelled case, in the geometry the datamodule gives them: the transforms
reorient to RAS (``Orientationd(axcodes="RAS")``) before resampling (``Spacingd(pixdim)``), so shapes and
spacings here are listed along the R, A and S axes whatever order the files store them in.

A case fingerprint (:func:`case_fingerprint`)::

    case_id        str
    orientation    str: axis codes of the stored voxel axes, e.g. "LPS" (i runs to the Left ...)
    shape          [3] int: voxels along R, A, S
    spacing        [3] float: mm along R, A, S
    cropped_shape  [3] int: the foreground box the transforms crop to (CT: body above -500 HU; MR: non-zero),
                   along R, A, S: the extent the planner sizes crops from
    labels         {name: {"value", "volume_ml", "components" (26-connected)}}; {} without a label
    samples        [C] float32 arrays: random foreground intensities per channel (label > 0; for a case
                   without a label, the body for CT and the non-zero voxels for MR)

The dataset fingerprint (:func:`dataset_fingerprint`) holds the case fingerprints without their samples,
and pooled over cases: per channel the foreground intensity statistics (mean, std, min, max, 0.5th and
99.5th percentiles), per label its median volume and component count over the cases that hold it, and the
median spacing and shapes. It is plain data (JSON-ready).

CT normalisation follows nnU-Net: a channel's window is the 0.5th-99.5th percentile of the labelled
foreground intensities pooled over the dataset, its mean and std those of the same samples
(:func:`measure_ct_channels`). Sampling is seeded per case, so the result depends on the seed alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from medseg.data.transforms import ForegroundMask, LoadCased
from medseg.errors import LayoutError, MedsegError
from medseg.tasks import Channel, Task

SAMPLES_PER_CASE = 10_000  # foreground intensities drawn per case and channel (nnU-Net's number)
PERCENTILES = (0.5, 99.5)  # the CT window: nnU-Net's clip range
CONNECTIVITY = np.ones((3, 3, 3), bool)  # 26-neighbourhood: voxels touching at a corner are one component


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of the ``index``-th case: independent of how many cases come before it."""
    return np.random.default_rng([seed, index])


def _load(case: dict, task: Task) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Image [C, X, Y, Z] float32, label [X, Y, Z] int32 or None, RAS affine [4, 4], as stored."""
    loaded = LoadCased(task)(case)  # header checks, NaN/empty checks, label values checked against the task
    image = loaded["image"]
    label = loaded.get("label")
    affine = np.asarray(image.affine, dtype=float)
    label = None if label is None else label.as_tensor().numpy()[0].astype(np.int32)
    return image.as_tensor().numpy(), label, affine


def _body(image: np.ndarray, task: Task) -> np.ndarray:
    """[C, X, Y, Z] bool: the voxels the transforms crop to, per channel (CT above -500 HU, MR non-zero)."""
    return ForegroundMask(task.channels)(torch.from_numpy(image)).numpy()


def _foreground(image: np.ndarray, label: np.ndarray | None, task: Task) -> np.ndarray:
    """[C, X, Y, Z] bool: where intensities are sampled: label > 0, or the body / non-zero voxels without a label."""
    return _body(image, task) if label is None else np.broadcast_to(label > 0, image.shape)


def _ras(values: Sequence, axes: np.ndarray) -> list:
    """Per stored voxel axis -> per R, A, S axis (``axes[i]``: the world axis voxel axis i runs along)."""
    out = [None] * 3
    for i, axis in enumerate(axes):
        out[int(axis)] = values[i]
    return out


def _box_size(mask: np.ndarray) -> list[int]:
    """Size of the bounding box of ``mask`` [X, Y, Z] per axis; the whole shape if it is empty."""
    if not mask.any():
        return [int(s) for s in mask.shape]
    sizes = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        sizes.append(int(hits[-1] - hits[0] + 1))
    return sizes


def _samples(image: np.ndarray, masks: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Per channel: its voxels under ``masks[c]``, all of them when there are at most ``n``, else ``n`` drawn
    without replacement."""
    out = []
    for channel, mask in zip(image, masks):
        values = channel[mask]
        if values.size > n:
            values = values[rng.choice(values.size, n, replace=False)]
        out.append(values.astype(np.float32))
    return out


def _label_stats(label: np.ndarray, task: Task, voxel_ml: float) -> dict[str, dict]:
    stats = {}
    for name, value in task.labels.items():
        mask = label == value
        count = int(mask.sum())
        components = int(ndimage.label(mask, structure=CONNECTIVITY)[1]) if count else 0
        stats[name] = {"value": value, "volume_ml": count * voxel_ml, "components": components}
    return stats


def case_fingerprint(
    case: dict, task: Task, rng: np.random.Generator, samples_per_case: int = SAMPLES_PER_CASE
) -> dict:
    """The fingerprint of one case (the module docstring lists its keys), read from its files.

    Raises ``CaseError`` naming the case and file for a missing, unreadable, empty or mislabelled file.
    """
    image, label, affine = _load(case, task)
    axes = nib.orientations.io_orientation(affine)[:, 0].astype(int)  # voxel axis i runs along world axis axes[i]
    spacing = [float(s) for s in nib.affines.voxel_sizes(affine)]
    body = _body(image, task)  # [C, X, Y, Z]
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    return {
        "case_id": case.get("case_id"),
        "orientation": "".join(nib.orientations.aff2axcodes(affine)),
        "shape": _ras([int(s) for s in image.shape[1:]], axes),
        "spacing": _ras(spacing, axes),
        "cropped_shape": _ras(_box_size(body.any(axis=0)), axes),
        "labels": {} if label is None else _label_stats(label, task, voxel_ml),
        "samples": _samples(image, _foreground(image, label, task), rng, samples_per_case),
    }


def channel_statistics(samples: np.ndarray) -> dict:
    """Foreground intensity statistics of one channel's pooled samples (None values when there are none)."""
    samples = np.asarray(samples, dtype=np.float64)
    if not samples.size:
        return dict.fromkeys(("mean", "std", "min", "max", "p0.5", "p99.5"), None) | {"n_samples": 0}
    low, high = np.percentile(samples, PERCENTILES)
    return {
        "n_samples": int(samples.size),
        "mean": float(samples.mean()),
        "std": float(samples.std()),
        "min": float(samples.min()),
        "max": float(samples.max()),
        "p0.5": float(low),
        "p99.5": float(high),
    }


def _planning_cases(cases: list[dict]) -> list[dict]:
    """The labelled cases (what nnU-Net measures on), or all cases when none has a label."""
    return [c for c in cases if c.get("label")] or list(cases)


def _progress(items: list, progress: bool, desc: str):
    return tqdm(items, desc=desc, unit="case", disable=None if progress else True)  # None: off without a terminal


def dataset_fingerprint(
    cases: list[dict], task: Task, seed: int = 0, progress: bool = True, samples_per_case: int = SAMPLES_PER_CASE
) -> dict:
    """Fingerprint of the labelled ``cases`` (module docstring), with a progress bar on a terminal.

    Raises ``LayoutError`` when no case has a label, ``CaseError`` for a case that cannot be read.
    """
    labelled = [c for c in cases if c.get("label")]
    if not labelled:
        raise LayoutError(f"none of the {len(cases)} case(s) has a label: there is nothing to plan training from")
    found, pooled = [], [[] for _ in task.channels]
    for index, case in enumerate(_progress(labelled, progress, "fingerprint")):
        fingerprint = case_fingerprint(case, task, case_rng(seed, index), samples_per_case)
        for channel, samples in enumerate(fingerprint.pop("samples")):
            pooled[channel].append(samples)
        found.append(fingerprint)
    labels = {}
    for name, value in task.labels.items():
        present = [f["labels"][name] for f in found if f["labels"][name]["components"]]
        labels[name] = {
            "value": value,
            "median_volume_ml": float(np.median([p["volume_ml"] for p in present])) if present else 0.0,
            "median_components": float(np.median([p["components"] for p in present])) if present else 0.0,
            "cases_present": len(present),
        }
    channels = [
        {"name": c.name, "kind": c.kind, **channel_statistics(np.concatenate(s))} for c, s in zip(task.channels, pooled)
    ]
    return {
        "task": task.name,
        "n_cases": len(found),
        "median_spacing": [float(v) for v in np.median([f["spacing"] for f in found], axis=0)],
        "median_shape": [float(v) for v in np.median([f["shape"] for f in found], axis=0)],
        "median_cropped_shape": [float(v) for v in np.median([f["cropped_shape"] for f in found], axis=0)],
        "channels": channels,
        "labels": labels,
        "cases": found,
    }


def fingerprint_summary(fingerprint: dict) -> str:
    """One line: ``4 labelled cases, median spacing 0.8 x 0.8 x 3 mm, median shape 24 x 24 x 24 (RAS), LPS x4``."""
    orientations: dict[str, int] = {}
    for case in fingerprint["cases"]:
        orientations[case["orientation"]] = orientations.get(case["orientation"], 0) + 1
    spacing = " x ".join(f"{s:.3g}" for s in fingerprint["median_spacing"])
    shape = " x ".join(f"{s:g}" for s in fingerprint["median_shape"])
    stored = ", ".join(f"{o} x{n}" for o, n in sorted(orientations.items(), key=lambda kv: -kv[1]))
    return (
        f"{fingerprint['n_cases']} labelled case(s), median spacing {spacing} mm, median shape {shape} voxels "
        f"(R, A, S); stored as {stored}"
    )


def foreground_samples(
    cases: list[dict], task: Task, seed: int = 0, samples_per_case: int = SAMPLES_PER_CASE, progress: bool = False
) -> list[np.ndarray]:
    """Pooled foreground intensities per channel over the labelled cases (all cases when none is labelled),
    drawn as :func:`dataset_fingerprint` draws them: same seed, same samples."""
    pooled = [[] for _ in task.channels]
    for index, case in enumerate(_progress(_planning_cases(cases), progress, "intensities")):
        image, label, _ = _load(case, task)
        masks = _foreground(image, label, task)
        for channel, samples in enumerate(_samples(image, masks, case_rng(seed, index), samples_per_case)):
            pooled[channel].append(samples)
    return [np.concatenate(s) for s in pooled]


def with_ct_statistics(task: Task, statistics: Sequence[dict]) -> Task:
    """``task`` with every CT channel that needs statistics set from its foreground ``statistics``
    (:func:`channel_statistics`): window = 0.5th-99.5th percentile, mean and std. Other channels as they are."""
    channels = []
    for channel, stats in zip(task.channels, statistics):
        if not channel.needs_statistics:
            channels.append(channel)
            continue
        if not stats["n_samples"]:
            raise MedsegError(f"CT channel {channel.name!r}: no foreground voxels to measure its window on")
        if not stats["p0.5"] < stats["p99.5"] or not stats["std"] > 0:
            raise MedsegError(
                f"CT channel {channel.name!r}: its foreground intensities are all {stats['mean']:g}; "
                "no window can be measured (give the channel a window in the task)"
            )
        window = (stats["p0.5"], stats["p99.5"])
        channels.append(Channel(channel.name, "CT", window=window, mean=stats["mean"], std=stats["std"]))
    return task.with_channels(channels)


def measure_ct_channels(cases: list[dict], task: Task, seed: int = 0, samples_per_case: int = SAMPLES_PER_CASE) -> Task:
    """nnU-Net's CT normalisation measured on ``cases``: each CT channel without a window gets the 0.5th-99.5th
    percentile of its pooled foreground samples as window, and their mean and std. CT channels that have a
    window and MR channels are returned untouched; nothing is read when no channel needs statistics."""
    if not any(c.needs_statistics for c in task.channels):
        return task
    samples = foreground_samples(cases, task, seed, samples_per_case)
    return with_ct_statistics(task, [channel_statistics(s) for s in samples])
