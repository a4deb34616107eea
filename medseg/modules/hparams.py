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

import pytorch_lightning as pl
from torch import nn


def save_hparams(module: pl.LightningModule, frame: types.FrameType | None = None) -> None:
    """``module.save_hyperparameters()`` from the calling ``__init__``, minus arguments that are ``nn.Module``
    objects (those that came from a config stay, as their configs).

    Module objects are never copied (Lightning deep-copies what it saves; an ONNX session cannot be).
    LightningCLI marks the config it hands over with an ``_instantiator`` entry (kept in checkpoints, where
    ``load_checkpoint`` drops it): only then are the networks' configs saved.
    """
    frame = frame or inspect.currentframe().f_back
    objects = [name for name, value in frame.f_locals.items() if isinstance(value, nn.Module)]
    module.save_hyperparameters(ignore=objects, frame=frame)
    if "_instantiator" in module.hparams:  # built by LightningCLI: the arguments are configs, not objects
        module.save_hyperparameters(frame=frame)
