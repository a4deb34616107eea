"""One loader for the checkpoints ``medseg fit`` writes: the LightningModule they were trained as, rebuilt
from their saved hyperparameters (networks included, as LightningCLI saved them), plus the datamodule's
settings that inference needs (label convention, window size, spacing).

Checkpoints are read with ``torch.load(weights_only=True)`` (:func:`medseg.nets.pretrained.safe_load`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pytorch_lightning as pl
from pytorch_lightning.cli import instantiate_module

from medseg.nets.pretrained import WeightsError, safe_load
from medseg.tasks import Task, task_for_checkpoint

M = TypeVar("M", bound=pl.LightningModule)

# what each module's hyperparameters must hold, and the config it comes from (for the error message)
_NEEDS = {
    "SegmentationModule": (("net",), "a segmentation config such as configs/swin_unetr_demo.yaml"),
    "DetectionModule": (("net", "criterion"), "a DETR config such as configs/detr_demo.yaml"),
    "ClipModule": (("image_encoder", "text_encoder"), "configs/clip_demo.yaml"),
}


def load_checkpoint(checkpoint: str | Path, module_class: type[M], map_location: str = "cpu") -> tuple[M, dict]:
    """``(module, datamodule settings)`` from a ``medseg fit`` checkpoint, the module in eval mode.

    Start points the training config named (``pretrained``) are dropped: the checkpoint's own weights
    replace them. A text encoder's tokenizer comes back from the state_dict, not from its config.

    Raises:
        WeightsError: the file is unreadable, unsafe, or not a checkpoint of ``module_class``.
    """
    ckpt = safe_load(checkpoint, map_location)
    hparams = dict(ckpt.get("hyper_parameters", {}))
    needs, config = _NEEDS.get(module_class.__name__, ((), "its config"))
    if not hparams or any(key not in hparams for key in needs):
        raise WeightsError(
            f"{checkpoint}: holds no {module_class.__name__} configuration (was it written by `medseg fit` with "
            f"{config}?); build the module in Python and load its state_dict instead"
        )
    hparams.pop("_instantiator", None)
    hparams.pop("pretrained", None)
    text = hparams.get("text_encoder")
    if isinstance(text, dict) and isinstance(text.get("init_args"), dict):
        hparams["text_encoder"] = {
            **text,
            "init_args": {k: v for k, v in text["init_args"].items() if k != "tokenizer"},
        }
    module = instantiate_module(module_class, hparams)
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), dict(ckpt.get("datamodule_hyper_parameters", {}))


def checkpoint_task(checkpoint: str | Path) -> Task:
    """The task a ``medseg fit`` checkpoint was trained on (its datamodule hyperparameters: ``task``, or the
    ``label_convention`` of older checkpoints), read without building the model.

    Raises:
        WeightsError: the file is unreadable or unsafe, holds no datamodule settings, or a task that
            cannot be read.
    """
    ckpt = safe_load(checkpoint, "cpu")
    data = ckpt.get("datamodule_hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(data, dict):
        raise WeightsError(
            f"{checkpoint}: holds no datamodule settings (datamodule_hyper_parameters), so no task; "
            f"was it written by `medseg fit`? Name the task instead (a preset or a dataset.json)"
        )
    try:
        return task_for_checkpoint(data)
    except ValueError as err:
        raise WeightsError(f"{checkpoint}: cannot read the task it records: {err}") from None


def stored_beside(checkpoints, filename: str, what: str, option: str) -> Path | None:
    """The ``filename`` stored with the model(s) (``postprocess.json``, ``calibration.json``): beside the
    checkpoints. With several checkpoints the files found must agree, otherwise a MedsegError asks for
    ``option``; ``what`` names the setting in that message."""
    from medseg.errors import MedsegError

    found = [p for p in dict.fromkeys(Path(c).parent / filename for c in checkpoints) if p.is_file()]
    if len({p.read_text(encoding="utf-8").strip() for p in found}) > 1:
        names = ", ".join(str(p) for p in found)
        raise MedsegError(f"the checkpoints carry different {what} ({names}): choose one with {option}")
    return found[0] if found else None
