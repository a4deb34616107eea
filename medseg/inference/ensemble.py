"""Loading several models for one ensemble, and checking they can be averaged.

Members of an ensemble (the folds of a cross-validation, or different networks) see the same
preprocessed volume and their probabilities are averaged voxel for voxel on that grid, so they must
share the task (channels and their normalisation, labels, regions or classes), the resampling
(``pixdim``), the bias-field correction and, for regions, the threshold. Their networks, window sizes and
blending may differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medseg.errors import MedsegError
from medseg.modules.segmentation import SegmentationModule
from medseg.tasks import Task, task_for_checkpoint


def load_model(checkpoint: str | Path) -> tuple[SegmentationModule, dict]:
    """``(module, datamodule settings)`` from a ``medseg fit`` checkpoint or a ``medseg export`` model."""
    from medseg.inference.checkpoint import load_checkpoint
    from medseg.inference.export import FORMATS, load_exported, metadata_path

    path = Path(checkpoint)
    if path.suffix in FORMATS.values() and metadata_path(path).is_file():
        return load_exported(path)
    return load_checkpoint(path, SegmentationModule)


def _same_task(a: Task, b: Task) -> bool:
    """Equal but for the name (a preset and the same task from a dataset.json may be named differently)."""
    return {**a.to_dict(), "name": ""} == {**b.to_dict(), "name": ""}


def _pixdim(data: dict) -> tuple[float, ...] | None:
    pixdim = data.get("pixdim")
    return None if pixdim is None else tuple(float(p) for p in pixdim)


def check_compatible(checkpoints: Sequence[str | Path], modules: Sequence[SegmentationModule], datas: Sequence[dict]):
    """A MedsegError naming the checkpoints when the models cannot be averaged (see the module docstring)."""
    names = [Path(c).name if len({Path(c).name for c in checkpoints}) == len(checkpoints) else str(c)
             for c in checkpoints]  # fmt: skip
    tasks = [task_for_checkpoint(d) for d in datas]
    for name, task, module, data in zip(names[1:], tasks[1:], modules[1:], datas[1:]):
        first = f"cannot ensemble {names[0]} and {name}"
        if not _same_task(tasks[0], task):
            if tasks[0].describe() == task.describe():  # the same outputs: the normalisation differs
                detail = f"{names[0]}: {tasks[0].to_dict()['channels']}; {name}: {task.to_dict()['channels']}"
                raise MedsegError(f"{first}: their channels are normalised differently ({detail})")
            raise MedsegError(
                f"{first}: they were trained for different tasks ({names[0]}: {tasks[0].describe()}; "
                f"{name}: {task.describe()})"
            )
        if _pixdim(datas[0]) != _pixdim(data):
            raise MedsegError(
                f"{first}: they were trained at different resampling (pixdim {_pixdim(datas[0])} and "
                f"{_pixdim(data)}; None is the native grid), so their outputs are on different grids"
            )
        if datas[0].get("bias_field") != data.get("bias_field"):
            raise MedsegError(
                f"{first}: they were trained on differently corrected images (bias_field "
                f"{datas[0].get('bias_field')} and {data.get('bias_field')})"
            )
        thresholds = (float(modules[0].hparams.threshold), float(module.hparams.threshold))
        if task.kind == "regions" and thresholds[0] != thresholds[1]:
            raise MedsegError(f"{first}: their thresholds differ ({thresholds[0]} and {thresholds[1]})")


def load_ensemble(checkpoints: Sequence[str | Path]) -> tuple[list[SegmentationModule], dict]:
    """The modules of ``checkpoints``, checked to be compatible, and the datamodule settings they share."""
    if not checkpoints:
        raise MedsegError("no checkpoint given")
    loaded = [load_model(c) for c in checkpoints]
    modules, datas = [m for m, _ in loaded], [d for _, d in loaded]
    check_compatible(checkpoints, modules, datas)
    return modules, datas[0]
