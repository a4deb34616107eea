"""What was written before the package moved keeps working: configs' class_paths and checkpoints."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from conftest import blob_label, write_case

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_swin_unetr_demo_checkpoint.json"

# every class_path configs/*.yaml named before the move (checkpoints and saved config.yaml files hold them)
OLD_CLASS_PATHS = [
    "medseg.modules.segmentation.SegmentationModule",
    "medseg.modules.classification.ClassificationModule",
    "medseg.modules.detection.DetectionModule",
    "medseg.modules.clip.ClipModule",
    "medseg.data.datamodule.BratsDataModule",
    "medseg.data.classification.ClassificationDataModule",
    "medseg.data.detection.DetectionDataModule",
    "medseg.data.reports.ReportDataModule",
    "medseg.nets.SwinUNETR",
    "medseg.nets.unetr.UNETR",
    "medseg.nets.vit.ViTClassifier",
    "medseg.nets.detr.DETR3d",
    "medseg.nets.detr.ConvBackbone3d",
    "medseg.nets.clip.ViTImageEncoder",
    "medseg.nets.clip.SwinImageEncoder",
    "medseg.nets.clip.TransformerTextEncoder",
    "medseg.nets.clip.HFTextEncoder",
    "medseg.losses.detr.SetCriterion3d",
]


@pytest.mark.parametrize("class_path", OLD_CLASS_PATHS)
def test_old_class_paths_resolve(class_path):
    module, name = class_path.rsplit(".", 1)
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_checkpoint_written_before_the_move_loads_and_predicts(tmp_path):
    from medseg.inference import Predictor
    from medseg.inference.checkpoint import load_checkpoint
    from medseg.modules.segmentation import SegmentationModule

    legacy = json.loads(FIXTURE.read_text(encoding="utf-8"))
    hparams = legacy["hyper_parameters"]
    assert hparams["net"]["class_path"] == "medseg.nets.SwinUNETR"  # what the old file holds
    torch.manual_seed(0)
    weights = {k: torch.randn(shape) * 0.02 for k, shape in legacy["state_dict_shapes"].items()}
    checkpoint = tmp_path / "legacy.ckpt"
    torch.save(
        {
            "state_dict": weights,
            "hyper_parameters": hparams,
            "datamodule_hyper_parameters": legacy["datamodule_hyper_parameters"],
            "global_step": 1,
        },
        checkpoint,
    )
    module, data = load_checkpoint(checkpoint, SegmentationModule)
    assert {k: list(v.shape) for k, v in module.state_dict().items()} == legacy["state_dict_shapes"]
    assert data["label_convention"] == "brats2021" and list(data["roi_size"]) == [64, 64, 64]

    case = write_case(tmp_path / "data", "BraTS2021_00001", blob_label(shape=(40, 36, 30)))
    [result] = Predictor.from_checkpoint(checkpoint, device="cpu").predict(case["image"])
    assert result.label.shape == (40, 36, 30)
