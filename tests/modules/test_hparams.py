"""Every module saves hyperparameters one way: injected networks as configs when LightningCLI built them,
left out when built in Python."""

import threading
import warnings

import pytest
import torch
from pytorch_lightning.cli import LightningCLI, instantiate_module

from medseg.modules.classification import ClassificationModule
from medseg.modules.clip import ClipModule
from medseg.modules.detection import DetectionModule
from medseg.modules.segmentation import SegmentationModule

CONV = {"class_path": "torch.nn.Conv3d", "init_args": {"in_channels": 4, "out_channels": 3, "kernel_size": 1}}
MODULES = {
    SegmentationModule: {"net": CONV},
    ClassificationModule: {"net": CONV},
    DetectionModule: {"net": CONV, "criterion": CONV},
    ClipModule: {"image_encoder": CONV, "text_encoder": CONV},
}


@pytest.mark.parametrize("module_class", MODULES, ids=lambda c: c.__name__)
def test_objects_are_left_out_and_configs_kept(module_class):
    nets = MODULES[module_class]
    uncopyable = torch.nn.Conv3d(4, 3, 1)
    uncopyable.session = threading.Lock()  # as an ONNX session: the module must not be deep-copied
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "is an instance of nn.Module" warning
        built = module_class(**dict.fromkeys(nets, uncopyable), lr=0.5)
    assert built.hparams.lr == 0.5 and not set(nets) & set(built.hparams) and not set(nets) & set(built.hparams_initial)

    cli = LightningCLI(
        module_class,
        run=False,
        args=[f"--model.{name}={config}" for name, config in nets.items()] + ["--model.lr=0.5"],
        trainer_defaults={"logger": False, "enable_checkpointing": False},
        save_config_callback=None,
        seed_everything_default=False,
    )
    saved = dict(cli.model.hparams)
    assert saved["lr"] == 0.5
    for name, config in nets.items():
        assert saved[name]["class_path"] == config["class_path"]
        assert saved[name]["init_args"]["out_channels"] == 3
    saved.pop("_instantiator")
    rebuilt = instantiate_module(module_class, saved)  # what load_checkpoint does
    assert isinstance(getattr(rebuilt, "net", None) or rebuilt.image_encoder, torch.nn.Conv3d)
