"""UNETR through the existing segmentation module and the `medseg` command: fit, predict, size checks."""

from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNETR as MonaiUNETR

from medseg.cli import main
from medseg.data.demo import generate_dataset
from medseg.modules.segmentation import SegmentationModule
from medseg.nets.unetr import UNETR

ROOT = Path(__file__).resolve().parents[1]
TINY = {"feature_size": 4, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2}  # still 12 transformer layers


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_dataset(root / "train", 2, seed=1, shape=(32, 32, 32))
    generate_dataset(root / "test", 1, seed=1, start_index=500, shape=(32, 32, 32))
    return root


def tiny_fit_args(data: Path, run: Path, steps: int, roi: int = 16) -> list[str]:
    size = f"[{roi}, {roi}, {roi}]"
    net = [f"--model.init_args.net.init_args.{k}={v}" for k, v in TINY.items()]
    return [
        "fit",
        "--config", str(ROOT / "configs" / "unetr_demo.yaml"),
        "--data.init_args.data_dir", str(data / "train"),
        "--data.init_args.roi_size", size,
        "--model.init_args.roi_size", size,
        "--model.init_args.net.init_args.img_size", size,
        *net,
        "--trainer.default_root_dir", str(run),
        "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(run),
        "--trainer.max_steps", str(steps),
    ]  # fmt: skip


def test_unetr_fit_and_predict_through_the_cli(demo_data, tmp_path):
    run = tmp_path / "run"
    assert main(tiny_fit_args(demo_data, run, 2)) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["global_step"] == 2
    assert saved["hyper_parameters"]["net"]["class_path"] == "medseg.nets.UNETR"

    out = tmp_path / "pred"
    windows = ["--overlap", "0"]  # 16^3 windows over the whole head: few, for speed
    assert main(["predict", str(demo_data / "test"), "--ckpt", str(ckpt), "--out", str(out), *windows]) == 0
    assert [p.name for p in out.glob("*.nii.gz")] == ["BraTS2021_00500.nii.gz"]


def test_state_dict_is_monais():
    ours = UNETR(4, 3, (16, 16, 16), **TINY).eval()
    reference = MonaiUNETR(4, 3, (16, 16, 16), **TINY).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_roi_other_than_img_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"roi_size \(24, 24, 24\).*multiple of 16"):
        SegmentationModule(net=UNETR(4, 3, (16, 16, 16), **TINY), roi_size=(24, 24, 24))
    with pytest.raises(ValueError, match=r"roi_size \(32, 32, 32\).*takes exactly \(16, 16, 16\)"):
        SegmentationModule(net=UNETR(4, 3, (16, 16, 16), **TINY), roi_size=(32, 32, 32))  # caught before training
    net = UNETR(4, 3, (16, 16, 16), **TINY)
    with pytest.raises(ValueError, match=r"built for img_size \(16, 16, 16\) but got an input of \(32, 32, 32\)"):
        net(torch.zeros(1, 4, 32, 32, 32))
    with pytest.raises(ValueError, match=r"img_size \(40, 32, 32\).*multiple of 16"):
        UNETR(4, 3, (40, 32, 32))
