"""A Swin UNETR training config planned from a dataset fingerprint (:mod:`medseg.data.fingerprint`).

nnU-Net's rules where they carry over, simpler where a fixed network makes them simpler. Every shape and
spacing is along R, A, S (the datamodule reorients to RAS before it resamples).

- Target spacing: the median spacing per axis. When the dataset is anisotropic (the coarsest median
  spacing over 3 x the finest), the coarse axis gets the 10th percentile of its spacings instead, never
  finer than the other axes' median (nnU-Net: resampling thick slices to the median smears them).
  ``pixdim`` is None (no resampling) when every case is within 1 % of the target already.
- Median shape: the foreground box (CT body above -500 HU, MR non-zero: what the transforms crop to) of
  each case at the target spacing; the median per axis.
- ``roi_size``: each side the median shape rounded to the nearest multiple of 32 (Swin UNETR's divisor;
  at least 32, and at least one side 64: an all-32 patch leaves the deepest stage 1x1x1, which instance
  norm refuses), so a thin axis (44 slices) is not padded to twice its size; then while the roi holds
  more voxels than the device's budget, the side largest relative to the median shape shrinks by 32
  (nnU-Net's patch rule). Budgets: CPU 64^3 (step time, not memory, is the limit there: 64^3 at
  feature_size 12 is what the CPU demo trains in minutes); GPU 128^3 at 24 GiB or more, scaled with
  memory below that, never under 64^3.
- Batch 1; 2 on a GPU of 40 GiB or more. ``feature_size`` 12 on CPU, 48 on GPU (gradient checkpointing on).
  Deep supervision at 1/2, 1/4 and 1/8 resolution (``deep_supervision: 3``), as nnU-Net trains, for regions
  tasks and, at ``feature_size`` 24 or more (the GPU plan), for classes tasks; a CPU plan's classes task
  trains without it: with 12 channels in the last decoder stage the CT demo lost a whole organ in one seed
  of four, with 24 it gained in every seed (docs/benchmarks.md).
- Steps: ``max_steps`` or 400 (CPU) / 25,000 (GPU). AdamW with warm-up and cosine decay; lr 5e-3 on CPU
  (configs/swin_unetr_demo.yaml: a short budget), 1e-4 on GPU (MONAI's Swin UNETR recipes,
  configs/swin_unetr_brats.yaml).
- Validation: off on CPU (every case trains, ``limit_val_batches: 0``, as the demo); on GPU 20 % of the
  cases held out and validated every ``min(1000, max_steps // 10)`` steps.
- Augmentation: nnU-Net's (``augment: nnunet``, :mod:`medseg.data.augment`): rotation, scaling, noise,
  blur, brightness, contrast, low resolution, gamma, and mirroring for a regions task.
- MR channels: N4 bias-field correction (``bias_field: n4``, :mod:`medseg.data.bias_field`); none for CT.
- Cache: cases after preprocessing held in memory when the estimate (the median-shaped cases, image and
  target float32) fits 8 GiB (CPU) / 32 GiB (GPU), else reloaded each time (``cache: none``).
- CT channels without a window get nnU-Net's: the 0.5-99.5th percentile of the labelled foreground, its
  mean and std (measured by the fingerprint).
- Trainer: self-contained (fp32 on CPU, bf16-mixed on GPU, one device, no sanity validation), wandb
  offline as configs/logger/wandb.yaml, runs in ``runs/<name>``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg import __version__
from medseg.data.fingerprint import with_ct_statistics
from medseg.io import write_atomic
from medseg.tasks import Task

ANISOTROPY = 3.0  # coarsest / finest median spacing above which the coarse axis is planned from its 10th percentile
SPACING_TOLERANCE = 0.01  # cases within 1 % of the target spacing are not resampled
DIVISOR, MIN_SIDE = 32, 64  # Swin UNETR: sides multiples of 32; one side at least 64 for training
CPU_VOXELS = 64**3
GPU_VOXELS, GPU_REFERENCE_GIB, DEFAULT_GPU_GIB = 128**3, 24.0, 24.0
BATCH_2_GIB = 40.0
DEFAULT_STEPS = {"cpu": 400, "gpu": 25_000}
CACHE_LIMIT_GIB = {"cpu": 8.0, "gpu": 32.0}
LOGGER = {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"project": "medseg", "offline": True}}
MODULE = "medseg.modules.segmentation.SegmentationModule"
NET = "medseg.nets.SwinUNETR"
DATAMODULE = "medseg.data.datamodule.SegmentationDataModule"


def target_spacing(spacings: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """Target spacing (mm, R, A, S) of cases with ``spacings`` [N, 3] (module docstring)."""
    spacings = np.asarray(spacings, dtype=float)  # [N, 3]
    target = np.median(spacings, axis=0)
    coarse = int(np.argmax(target))
    others = np.delete(target, coarse)
    if target[coarse] > ANISOTROPY * others.min():
        target[coarse] = max(float(np.percentile(spacings[:, coarse], 10)), float(others.max()))
    return tuple(float(s) for s in target)


def needs_resampling(spacings: Sequence[Sequence[float]], target: Sequence[float]) -> bool:
    """Whether any case is more than 1 % off ``target`` along any axis."""
    spacings, target = np.asarray(spacings, dtype=float), np.asarray(target, dtype=float)
    return bool((np.abs(spacings - target) / target > SPACING_TOLERANCE).any())


def median_resampled_shape(fingerprint: dict, spacing: Sequence[float]) -> tuple[float, float, float]:
    """Median per axis of the cases' foreground boxes resampled to ``spacing``."""
    shapes = [
        np.asarray(c["cropped_shape"]) * np.asarray(c["spacing"]) / np.asarray(spacing) for c in fingerprint["cases"]
    ]
    return tuple(float(s) for s in np.median(shapes, axis=0))


def voxel_budget(device: str, memory_gib: float | None = None) -> int:
    """Most voxels one training patch may hold: CPU 64^3; GPU 128^3 at 24 GiB and above, scaled below it."""
    if device == "cpu":
        return CPU_VOXELS
    memory = DEFAULT_GPU_GIB if memory_gib is None else float(memory_gib)
    return max(MIN_SIDE**3, int(GPU_VOXELS * min(1.0, memory / GPU_REFERENCE_GIB)))


def plan_roi_size(median_shape: Sequence[float], device: str, memory_gib: float | None = None) -> tuple[int, int, int]:
    """Training crop and sliding-window size (module docstring): multiples of 32 near the median shape, one
    side at least 64, within the device's voxel budget."""
    roi = [max(DIVISOR, DIVISOR * round(s / DIVISOR)) for s in median_shape]
    budget = voxel_budget(device, memory_gib)
    while math.prod(roi) > budget:
        shrinkable = [a for a in range(3) if roi[a] > DIVISOR and (roi[a] > MIN_SIDE or sorted(roi)[-2] >= MIN_SIDE)]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (roi[a] / max(median_shape[a], 1.0), roi[a]))
        roi[axis] -= DIVISOR
    if max(roi) < MIN_SIDE:
        roi[int(max(range(3), key=lambda a: median_shape[a]))] = MIN_SIDE
    return tuple(roi)


def _short(value: float) -> float:
    return float(f"{value:.6g}")


def _cache(fingerprint: dict, task: Task, spacing: Sequence[float], device: str) -> str:
    """``memory`` when every case, preprocessed, fits the device's cache limit, else ``none``."""
    per_voxel = 4 * (task.in_channels + (len(task.regions) if task.regions is not None else 1))  # float32
    voxels = math.prod(median_resampled_shape(fingerprint, spacing)) * fingerprint["n_cases"]
    return "memory" if voxels * per_voxel <= CACHE_LIMIT_GIB[device] * 2**30 else "none"


def plan(
    fingerprint: dict,
    task: Task,
    data_dir: str | os.PathLike,
    device: str = "cpu",
    memory_gib: float | None = None,
    max_steps: int | None = None,
    name: str | None = None,
    layout: str = "auto",
    datalist: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A LightningCLI ``fit`` config (plain dict) for ``task`` on the dataset at ``data_dir``.

    Args:
        fingerprint: :func:`medseg.data.fingerprint.dataset_fingerprint` of the dataset.
        task: its task; CT channels without a window get the fingerprint's foreground statistics.
        data_dir: the dataset folder (or datalist JSON); written as an absolute path.
        device: ``cpu`` or ``gpu``: what the plan is sized for (module docstring).
        memory_gib: GPU memory; None assumes 24 GiB.
        max_steps: training steps; None: 400 on CPU, 25,000 on GPU.
        name: run name (``runs/<name>``); default ``swin_unetr_<task>``.
        layout, datalist: how the datamodule reads the dataset (``read_dataset``'s arguments; a relative
            ``datalist`` is read relative to ``data_dir``).
        seed: ``seed_everything`` and the datamodule's split and augmentation seed.
    """
    if device not in DEFAULT_STEPS:
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    gpu = device == "gpu"
    spacings = [c["spacing"] for c in fingerprint["cases"]]
    spacing = target_spacing(spacings)
    roi = list(plan_roi_size(median_resampled_shape(fingerprint, spacing), device, memory_gib))
    steps = int(max_steps or DEFAULT_STEPS[device])
    memory = DEFAULT_GPU_GIB if memory_gib is None else memory_gib
    run = re.sub(r"[^A-Za-z0-9._-]+", "_", name or f"swin_unetr_{task.name}")
    root = f"runs/{run}"
    measured = with_ct_statistics(task, fingerprint["channels"])
    task_dict = measured.to_dict()
    for channel in task_dict["channels"]:
        for key in ("window", "mean", "std"):
            if key in channel:
                channel[key] = [_short(v) for v in channel[key]] if key == "window" else _short(channel[key])
    trainer = {
        "max_epochs": -1,
        "max_steps": steps,
        "accelerator": "auto",
        "devices": 1,
        "precision": "bf16-mixed" if gpu else "32-true",
        "num_sanity_val_steps": 0,
        "log_every_n_steps": max(1, min(50, steps // 40)),
        "default_root_dir": root,
    }
    if gpu:
        trainer |= {"check_val_every_n_epoch": None, "val_check_interval": max(1, min(1000, steps // 10))}
    else:
        trainer["limit_val_batches"] = 0
    trainer["logger"] = {**LOGGER, "init_args": {**LOGGER["init_args"], "save_dir": root}}
    net = {"in_channels": task.in_channels, "out_channels": task.out_channels, "feature_size": 48 if gpu else 12}
    net["use_checkpoint"] = gpu
    if task.kind == "regions" or net["feature_size"] >= 24:  # docs/benchmarks.md, issue 13's twelfth measurement
        net["deep_supervision"] = 3
    model = {
        "net": {"class_path": NET, "init_args": net},
        "roi_size": roi,
        "lr": 1e-4 if gpu else 5e-3,
        "weight_decay": 1e-5,
        "warmup_steps": 0.05,
        "sw_batch_size": 4 if gpu else 1,
        "sw_overlap": 0.25,
        "sw_mode": "gaussian" if gpu else "constant",
        "log_images": 2,
    }
    data = {"data_dir": os.path.abspath(data_dir), "layout": layout}
    if datalist is not None:
        data["datalist"] = str(datalist)
    data |= {
        "task": task_dict,
        "roi_size": roi,
        "pixdim": [_short(s) for s in spacing] if needs_resampling(spacings, spacing) else None,
        "augment": "nnunet",
        "bias_field": "n4" if any(c.kind == "MR" for c in measured.channels) else None,
        "val_fraction": 0.2 if gpu else 0.0,
        "batch_size": 2 if gpu and memory >= BATCH_2_GIB else 1,
        "num_workers": 4 if gpu else 0,
        "cache": _cache(fingerprint, task, spacing, device),
        "seed": seed,
    }
    return {
        "seed_everything": seed,
        "trainer": trainer,
        "model": {"class_path": MODULE, "init_args": model},
        "data": {"class_path": DATAMODULE, "init_args": data},
    }


def describe_plan(fingerprint: dict, config: dict) -> list[str]:
    """What the plan decided and from what, a line each (printed by ``medseg plan`` and kept in the file)."""
    spacing = target_spacing([c["spacing"] for c in fingerprint["cases"]])
    data, model = config["data"]["init_args"], config["model"]["init_args"]
    net = model["net"]["init_args"]
    trainer = config["trainer"]
    mm = " x ".join(f"{s:.3g}" for s in spacing)
    lines = [
        f"target spacing {mm} mm (R, A, S): "
        + ("resampled to it (pixdim)" if data["pixdim"] else "every case has it already: no resampling"),
        "median foreground shape at that spacing "
        + " x ".join(f"{s:.0f}" for s in median_resampled_shape(fingerprint, spacing))
        + f" -> roi {' x '.join(str(s) for s in data['roi_size'])}",
        f"batch {data['batch_size']}, feature_size {net['feature_size']}, "
        + ("deep supervision at 1/2, 1/4, 1/8, " if net.get("deep_supervision") else "")
        + f"{trainer['max_steps']} steps at lr {model['lr']:g}, precision {trainer['precision']}, "
        f"cache {data['cache']}",
        "MR channels N4 bias-field corrected" if data.get("bias_field") else "no bias-field correction (no MR channel)",
        "validation off (every case trains)"
        if trainer.get("limit_val_batches") == 0
        else f"validation on {data['val_fraction']:.0%} of the cases every {trainer['val_check_interval']} steps",
    ]
    for channel in data["task"]["channels"]:
        if channel["kind"] == "CT" and "mean" in channel:
            low, high = channel["window"]
            lines.append(
                f"CT channel {channel['name']}: window [{low:g}, {high:g}] HU, mean {channel['mean']:g}, "
                f"std {channel['std']:g} (foreground, nnU-Net's scheme)"
            )
    return lines


class _PlanDumper(yaml.SafeDumper):
    """Block style, except lists of plain values: ``roi_size: [96, 96, 64]``."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, tuple, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_PlanDumper.add_representer(list, _represent_list)
_PlanDumper.add_representer(tuple, _represent_list)


def write_plan(config: dict, path: str | os.PathLike, notes: Sequence[str] = ()) -> Path:
    """Write ``config`` as readable YAML (one block per section) under a comment header naming the dataset,
    medseg's version, ``notes`` (the fingerprint summary, what was decided) and the command to train; atomic."""
    path = Path(path)
    data = config.get("data", {}).get("init_args", {})
    header = [
        f"Training plan written by `medseg plan` (medseg {__version__}) for {data.get('data_dir', '?')}",
        *notes,
        "A LightningCLI config: edit anything (keep model and data roi_size equal). Train with:",
        f"  medseg fit --config {path}",
    ]
    blocks = [yaml.dump({k: v}, Dumper=_PlanDumper, sort_keys=False, width=120) for k, v in config.items()]
    text = "".join(f"# {line}\n" for line in header) + "\n" + "\n".join(blocks)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, text)
