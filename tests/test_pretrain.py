"""Self-supervised pre-training: the views, the unlabelled datamodule (any layout, labels never read; a plain
folder of volumes), the loss parts, the module, and `medseg pretrain` -> `medseg fit` from its checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blob_label, save, write_case

from medseg.cli import MedsegCLI, main
from medseg.data.pretext import RandAxialRotate90d, pretext_transforms
from medseg.data.unlabelled import UnlabelledDataModule, folder_task
from medseg.losses import SSLLoss
from medseg.modules.clip import ClipModule
from medseg.modules.pretrain import PretrainModule
from medseg.nets import SwinImageEncoder, SwinPretrainNet, TransformerTextEncoder

ROOT = Path(__file__).resolve().parents[1]


class TinySSLNet(torch.nn.Module):
    """A stand-in with SwinPretrainNet's outputs, small enough for unit tests."""

    in_channels = 4

    def __init__(self) -> None:
        super().__init__()
        self.swinViT = torch.nn.Conv3d(4, 8, 3, padding=1)
        self.rotation_head, self.contrastive_head = torch.nn.Linear(8, 4), torch.nn.Linear(8, 16)
        self.conv = torch.nn.Conv3d(8, 4, 1)

    def forward(self, image):
        features = self.swinViT(image)
        pooled = features.mean((2, 3, 4))
        return {"rotation": self.rotation_head(pooled), "contrastive": self.contrastive_head(pooled),
                "reconstruction": self.conv(features)}  # fmt: skip


def test_rotation_label_says_how_far_the_view_was_turned():
    image = torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).view(2, 4, 4, 3)
    rotate = RandAxialRotate90d(keys="target", label_key="k").set_random_state(seed=3)
    seen = set()
    for _ in range(12):
        out = rotate({"target": image})
        seen.add(out["k"])
        torch.testing.assert_close(torch.rot90(out["target"], -out["k"], dims=(1, 2)), image)
    assert seen == {0, 1, 2, 3}


def test_views_share_the_crop_and_differ_in_rotation_and_masking(tmp_path):
    case = write_case(tmp_path, "BraTS2021_00001", blob_label((40, 40, 36)))
    del case["label"]
    transform = pretext_transforms(folder_task(["t1", "t1ce", "t2", "flair"]), (32, 32, 32), mask_size=(4, 8))
    transform.set_random_state(seed=0)
    out = transform(case)
    assert set(out) >= {"view_1", "view_2", "target_1", "target_2", "rotation_1", "rotation_2"} and "image" not in out
    assert out["view_1"].shape == out["target_1"].shape == (4, 32, 32, 32)
    back = [torch.rot90(out[f"target_{v}"], -out[f"rotation_{v}"], dims=(1, 2)) for v in (1, 2)]
    torch.testing.assert_close(back[0], back[1])  # one crop
    for v in (1, 2):
        masked = (out[f"view_{v}"] != out[f"target_{v}"]).any(0).float().mean()
        assert 0.001 < masked < 0.6, masked


def test_roi_must_be_square_in_the_rotation_plane():
    with pytest.raises(ValueError, match="X and Y must be equal"):
        pretext_transforms(folder_task(None), (64, 32, 64))


def _datamodule(data_dir, **kwargs) -> UnlabelledDataModule:
    args = {"roi_size": (32, 32, 32), "batch_size": 2, "mask_size": (4, 8), "cache": "none", **kwargs}
    return UnlabelledDataModule(str(data_dir), **args)


def test_brats_layout_reads_images_only(tmp_path):
    for i in range(3):
        write_case(tmp_path / "data", f"BraTS2021_0000{i}", blob_label((40, 40, 36), seed=i), seed=i)
    (tmp_path / "data" / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz").unlink()  # unlabelled cases count
    dm = _datamodule(tmp_path / "data")
    dm.setup("fit")
    assert dm.index.layout == "brats2021" and len(dm.splits["train"]) == 3
    assert all("label" not in case for case in dm.splits["train"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["view_1"].shape == (2, 4, 32, 32, 32) and batch["rotation_2"].shape == (2,)


def test_plain_folder_of_ct_volumes(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        volume = np.full((36, 36, 34), -1000.0, np.float32)
        volume[4:-4, 4:-4, 2:-2] = rng.normal(40, 20, (28, 28, 30))
        save(tmp_path / "scans" / f"scan_{i}.nii.gz", volume)
    channels = [{"name": "CT", "kind": "CT", "window": [-200, 300]}]
    dm = _datamodule(tmp_path / "scans", channels=channels, val_fraction=0.34)
    dm.setup("fit")
    assert dm.index.layout == "folder" and dm.task.channel_names == ("CT",)
    assert (len(dm.splits["train"]), len(dm.splits["val"])) == (2, 1)
    first, again = (next(iter(dm.val_dataloader())) for _ in range(2))
    assert first["view_1"].shape == (1, 1, 32, 32, 32)
    torch.testing.assert_close(first["view_1"], again["view_1"])  # the same validation views every time


def test_loss_has_named_parts_and_weights_zero_leave_parts_out():
    outputs = {
        "rotation": torch.randn(4, 4),
        "contrastive": torch.randn(4, 8),
        "reconstruction": torch.randn(4, 1, 4, 4, 4),
    }
    target, rotation = torch.randn(4, 1, 4, 4, 4), torch.tensor([0, 1, 2, 3])
    parts = SSLLoss()(outputs, target, rotation)
    assert set(parts) == {"loss", "inpaint", "rotation", "contrastive"}
    torch.testing.assert_close(parts["loss"], parts["inpaint"] + parts["rotation"] + parts["contrastive"])
    masked_only = SSLLoss(rotation_weight=0, contrastive_weight=0)(outputs, target, rotation)
    torch.testing.assert_close(masked_only["loss"], masked_only["inpaint"])


def test_module_step_trains_every_head():
    module = PretrainModule(TinySSLNet())
    module.log_dict = lambda *a, **k: None  # no trainer attached
    batch = {f"{k}_{v}": torch.randn(2, 4, 8, 8, 8) for k in ("view", "target") for v in (1, 2)}
    batch |= {"rotation_1": torch.tensor([0, 3]), "rotation_2": torch.tensor([1, 2])}
    module.training_step(batch, 0).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_swin_pretrain_net_outputs():
    net = SwinPretrainNet(in_channels=2, feature_size=12, contrastive_dim=16).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 2, 64, 64, 64))
    assert out["rotation"].shape == (2, 4) and out["contrastive"].shape == (2, 16)
    assert out["reconstruction"].shape == (2, 2, 64, 64, 64)


def test_a_clip_checkpoint_starts_a_segmentation_fit_from_the_config_alone(tmp_path):
    text = TransformerTextEncoder(embed_dim=32, width=32, layers=1, heads=2, context_length=16, vocab_size=50)
    clip = ClipModule(SwinImageEncoder(in_channels=4, feature_size=12, embed_dim=32), text)
    torch.save({"state_dict": clip.state_dict(), "pytorch-lightning_version": "2.6.6"}, tmp_path / "clip.ckpt")
    cli = MedsegCLI(
        args=["--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"), "--data.init_args.data_dir", str(tmp_path),
              "--model.init_args.pretrained", str(tmp_path / "clip.ckpt"), "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path)],
        run=False,
    )  # fmt: skip
    expected = clip.image_encoder.swinViT.state_dict()
    for name, value in cli.model.net.swinViT.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


@pytest.mark.slow
def test_pretrain_then_fit_from_its_checkpoint(tmp_path):
    for i in range(3):
        write_case(tmp_path / "unlabelled", f"BraTS2021_0100{i}", blob_label((40, 40, 36), seed=i), seed=i)
    run = tmp_path / "pretrain"
    logger = ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir"]
    small = ["--data.init_args.mask_size", "[4, 8]", "--model.init_args.net.init_args.contrastive_dim", "16"]
    args = ["pretrain", "--config", str(ROOT / "configs" / "pretrain_demo.yaml"), *small,
            "--data.init_args.data_dir", str(tmp_path / "unlabelled"), "--trainer.default_root_dir", str(run),
            "--trainer.log_every_n_steps", "1", *logger, str(run), "--trainer.max_steps", "1"]  # fmt: skip
    assert main(args) == 0
    assert main([*args[:-1], "2", "--ckpt_path", "last"]) == 0  # resumable like fit
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["datamodule_hyper_parameters"]["task"]["channels"][0]["name"] == "t1"
    metrics = (run / "lightning_logs" / "version_1" / "metrics.csv").read_text(encoding="utf-8")
    assert all(f"train/{part}" in metrics for part in ("inpaint", "rotation", "contrastive", "embedding_std"))

    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addHandler(handler)
    fit = tmp_path / "fit"
    assert main(["fit", "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"),
                 "--data.init_args.data_dir", str(tmp_path / "unlabelled"),  # labelled too: their seg files are there
                 "--model.init_args.pretrained", str(run / "checkpoints" / "last.ckpt"),
                 "--model.init_args.freeze_encoder_steps", "1", "--model.init_args.layer_decay", "0.8",
                 "--trainer.default_root_dir", str(fit), *logger, str(fit),
                 "--trainer.max_steps", "1"]) == 0  # fmt: skip
    logging.getLogger("pytorch_lightning.utilities.rank_zero").removeHandler(handler)
    assert any("(medseg checkpoint): loaded 126 of 159" in r and "(complete)" in r for r in records), records
    assert "encoder frozen until step 1 (model.init_args.freeze_encoder_steps)" in records
    state = torch.load(fit / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    key = "swinViT.layers1.0.blocks.0.attn.qkv.weight"  # frozen for the one step: still the pre-trained tensor
    torch.testing.assert_close(state[f"net.{key}"], ckpt["state_dict"][f"net.{key}"])
