"""Any dataset, not only BraTS: a one-channel CT dataset with two organs trains, predicts and evaluates."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_NET, write_ct_dataset

from medseg.cli import main
from medseg.data.datamodule import SegmentationDataModule
from medseg.data.layouts import read_dataset

ROOT = Path(__file__).resolve().parents[1]
ONE_IN_THREE_OUT = [*TINY_NET[:3], "1", TINY_NET[4], "3", *TINY_NET[6:]]  # CT in; background, liver, spleen out


def fit_args(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"),
        "--data.init_args.data_dir", str(data),
        "--data.init_args.roi_size", "[16, 16, 8]", "--model.init_args.roi_size", "[16, 16, 8]",
        "--trainer.default_root_dir", str(run), "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(run), "--trainer.max_steps", "3", *ONE_IN_THREE_OUT, *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("datalist", [False, True], ids=["msd", "btcv-datalist"])
def test_layouts_give_a_ct_classes_task(tmp_path, datalist):
    root = write_ct_dataset(tmp_path, datalist=datalist)
    index = read_dataset(root, datalist="dataset_0.json" if datalist else None)
    assert index.layout == ("datalist" if datalist else "msd")
    task = index.task
    assert task.kind == "classes" and task.classes == ("liver", "spleen") and task.channels[0].kind == "CT"
    assert len(index.cases) == 3 and all(c["label"] for c in index.cases)


def test_ct_statistics_are_measured_on_training_cases_and_normalise(tmp_path):
    root = write_ct_dataset(tmp_path)
    dm = SegmentationDataModule(str(root), roi_size=(16, 16, 8), val_fraction=0.0, cache="none")
    dm.setup("fit")
    channel = dm.task.channels[0]
    assert channel.window is not None and channel.mean is not None  # foreground: organs, 100 and 160 HU
    assert 80 < channel.window[0] < 110 and 150 < channel.window[1] < 180 and 100 < channel.mean < 160
    assert dm.hparams.task["channels"][0]["mean"] == channel.mean  # recorded for the checkpoint
    batch = dm.transform(train=False)(dm.splits["train"][0])
    image, label = batch["image"], batch["label"]
    assert image.shape[0] == 1 and label.shape[0] == 1 and set(label.unique().tolist()) == {0.0, 1.0, 2.0}
    # by hand: clip to the window, then z-score with the dataset's statistics
    raw = nib.load(dm.splits["train"][0]["image"]).get_fdata()
    low, high = channel.window
    assert float(image.max()) == pytest.approx((min(raw.max(), high) - channel.mean) / channel.std, abs=1e-4)
    # the crop keeps the body (above -500 HU), not the non-zero voxels (all of a CT is non-zero)
    assert image.shape[1:] == (22, 18, 12)


def test_fit_predict_evaluate_ct(tmp_path, capsys):
    data = write_ct_dataset(tmp_path / "data", n=3)
    run = tmp_path / "run"
    assert main(fit_args(data, run)) == 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    task = ckpt["datamodule_hyper_parameters"]["task"]
    assert task["classes"] == ["liver", "spleen"] and task["channels"][0]["kind"] == "CT"
    out = tmp_path / "pred"
    assert main(["predict", str(data / "imagesTr"), "--ckpt", str(run / "checkpoints" / "last.ckpt"),
                 "--out", str(out)]) == 0  # fmt: skip
    for source in sorted((data / "imagesTr").glob("*.nii.gz")):
        written, given = nib.load(out / source.name), nib.load(source)
        assert written.shape == given.shape and np.allclose(written.affine, given.affine)
        assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1, 2}
    capsys.readouterr()
    # the label names come from the dataset.json above labelsTr/
    assert main(["evaluate", "--pred", str(out), "--label", str(data / "labelsTr")]) in (0, 1)
    table = capsys.readouterr().out
    assert "liver" in table and "spleen" in table
    header = (out / "metrics_per_case.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "dice_liver" in header and "dice_spleen" in header and "hd95_spleen" in header


@pytest.mark.slow
def test_plan_then_fit_from_the_plan(tmp_path, capsys):
    """``medseg plan`` writes a config ``medseg fit`` trains from as it is (only the step budget shortened)."""
    data = write_ct_dataset(tmp_path / "data", n=3, datalist=True)
    plan = tmp_path / "plan.yaml"
    assert main(["plan", str(data), "--datalist", "dataset_0.json", "--out", str(plan), "--device", "cpu"]) == 0
    run = tmp_path / "run"
    logger = ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(run)]
    args = ["fit", "--config", str(plan), "--trainer.max_steps", "1", "--trainer.default_root_dir", str(run), *logger]
    assert main(args) == 0
    out = tmp_path / "pred"
    assert main(["predict", str(data / "imagesTr"), "--ckpt", str(run / "checkpoints" / "last.ckpt"),
                 "--out", str(out)]) == 0  # fmt: skip
    assert len(list(out.glob("*.nii.gz"))) == 3


def test_net_that_does_not_fit_the_task_is_one_clear_error(tmp_path, capsys):
    data = write_ct_dataset(tmp_path / "data", n=2)
    code = main([*fit_args(data, tmp_path / "run"), "--model.init_args.net.out_channels", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "4 outputs but task TinyAbdomen has 3" in err and "out_channels: 3" in err


def test_unetr_and_swin_unetr_take_any_channel_count():
    from medseg.modules.segmentation import SegmentationModule
    from medseg.nets import SwinUNETR
    from medseg.nets.unetr import UNETR
    from medseg.tasks import get_task

    task = get_task({"name": "two", "channels": ["CT", "PET"], "labels": {"a": 1, "b": 2, "c": 3}})
    unetr = UNETR(in_channels=2, out_channels=4, img_size=(32, 32, 32), hidden_size=48, mlp_dim=48, num_heads=4)
    swin = SwinUNETR(in_channels=2, out_channels=4, feature_size=12)
    for net, roi in ((unetr, (32, 32, 32)), (swin, (64, 64, 32))):
        module = SegmentationModule(net, roi_size=roi)
        module.set_task(task)
        with torch.no_grad():
            logits = module(torch.zeros(1, 2, *roi))
        assert logits.shape == (1, 4, *roi) and module.masks(logits).shape == (1, 3, *roi)
