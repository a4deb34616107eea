"""How every medseg LightningModule saves its hyperparameters (public Lightning API only).

Networks, encoders and criteria are injected ``nn.Module`` arguments. Built by LightningCLI (``medseg fit``),
a module receives its resolved config from Lightning, so such an argument is saved as its ``class_path`` +
``init_args`` and the checkpoint rebuilds without code (``medseg.inference.checkpoint.load_checkpoint``).
Built in Python, the argument is an object, not a hyperparameter: it is left out (its weights are in the
state_dict), as ``save_hyperparameters(ignore=[...])`` would.
"""

from __future__ import annotations

import inspect
import types
import warnings

import pytorch_lightning as pl
from torch import nn


def save_hparams(module: pl.LightningModule, frame: types.FrameType | None = None) -> None:
    """``module.save_hyperparameters()`` from the calling ``__init__``, minus arguments that are ``nn.Module``
    objects (those that came from a config stay, as their configs)."""
    frame = frame or inspect.currentframe().f_back
    with warnings.catch_warnings():  # Lightning warns about module objects; they are dropped just below
        warnings.filterwarnings("ignore", message="Attribute '.*' is an instance of `nn.Module`")
        module.save_hyperparameters(frame=frame)
    objects = [name for name, value in module.hparams.items() if isinstance(value, nn.Module)]
    if objects:  # again without them, so that hparams_initial (what loggers record) holds no module either
        module.save_hyperparameters(ignore=objects, frame=frame)
