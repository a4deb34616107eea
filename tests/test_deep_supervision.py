"""Deep supervision (medseg.losses.deep_supervision, SwinUNETR(deep_supervision=...)): nnU-Net's weighting,
the downsampled targets, and a net whose inference path and state_dict stay MONAI's."""

import warnings

import pytest
import torch
from conftest import load_script
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
from test_cli import fit_args

from medseg.cli import main
from medseg.data.demo import generate_dataset
from medseg.inference.checkpoint import load_checkpoint
from medseg.losses import DiceBCELoss, DiceCELoss, deep_supervision_loss
from medseg.losses.deep_supervision import deep_supervision_weights
from medseg.modules.segmentation import SegmentationModule
from medseg.nets import SwinUNETR


def tiny(**kwargs) -> SwinUNETR:
    torch.manual_seed(0)
    return SwinUNETR(in_channels=4, out_channels=3, feature_size=12, **kwargs)


def test_weights_halve_per_resolution_and_sum_to_one():
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_one_output_is_the_plain_loss():
    logits, target = torch.randn(2, 3, 8, 8, 8), (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
    loss = DiceBCELoss()
    assert torch.allclose(deep_supervision_loss(loss, [logits], target)["loss"], loss(logits, target)["loss"])


@pytest.mark.parametrize("kind", ["regions", "classes"])
def test_lower_resolutions_are_scored_against_the_label_taken_every_second_voxel(kind):
    torch.manual_seed(0)
    if kind == "regions":
        loss, target = DiceBCELoss(), (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
        small = target[:, :, ::2, ::2, ::2]  # nearest neighbour at half resolution
    else:
        loss, target = DiceCELoss(), torch.randint(0, 3, (1, 1, 8, 8, 8)).float()
        small = target[:, :, ::2, ::2, ::2]
    full, half = torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4)
    parts = deep_supervision_loss(loss, [full, half], target)
    expected = 2 / 3 * loss(full, target)["loss"] + 1 / 3 * loss(half, small)["loss"]
    assert torch.allclose(parts["loss"], expected)
    assert torch.allclose(parts["ds"], 1 / 3 * loss(half, small)["loss"])
    assert torch.allclose(parts["dice"], loss(full, target)["dice"])  # the logged parts are full resolution


def test_heads_give_logits_at_half_quarter_and_eighth_resolution():
    net = tiny(deep_supervision=3)
    outputs = net.forward_deep(torch.randn(1, 4, 64, 64, 32))
    assert [tuple(o.shape) for o in outputs] == [(1, 3, 64, 64, 32), (1, 3, 32, 32, 16), (1, 3, 16, 16, 8),
                                                 (1, 3, 8, 8, 4)]  # fmt: skip


def test_forward_is_monais_and_the_state_dict_only_adds_the_heads():
    net, x = tiny(deep_supervision=2).eval(), torch.randn(1, 4, 64, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), net.forward_deep(x)[0])
    monai_keys = set(MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12).state_dict())
    assert set(tiny().state_dict()) == monai_keys
    assert set(net.state_dict()) - monai_keys == {f"ds_heads.{i}.{p}" for i in range(2) for p in ("weight", "bias")}


def test_out_of_range_heads_fail_with_the_allowed_range():
    with pytest.raises(ValueError, match="0 to 3"):
        tiny(deep_supervision=4)


def test_module_trains_every_head():
    module = SegmentationModule(net=tiny(deep_supervision=2), roi_size=(32, 32, 32))
    logged = {}
    module.log_dict = lambda values, **k: logged.update(values)  # no trainer attached
    label = torch.zeros(1, 3, 32, 32, 32)
    label[:, :, 8:20, 8:20, 8:20] = 1
    loss = module.training_step({"image": torch.randn(1, 4, 32, 32, 32), "label": label}, 0)
    loss.backward()
    assert {"train/loss", "train/dice", "train/bce", "train/ds"} <= set(logged)
    assert all(head.weight.grad is not None and head.weight.grad.abs().sum() > 0 for head in module.net.ds_heads)


def test_fit_with_heads_then_predict_and_export_without_them(tmp_path, capsys):
    """The CLI end to end: the heads train and are saved, the checkpoint loads, the export leaves them out."""
    generate_dataset(tmp_path / "train", 2, seed=4, shape=(48, 48, 32))
    swin = ["--model.init_args.net", "medseg.nets.SwinUNETR", "--model.init_args.net.in_channels", "4",
            "--model.init_args.net.out_channels", "3", "--model.init_args.net.feature_size", "12",
            "--model.init_args.net.deep_supervision", "2"]  # fmt: skip
    assert main(fit_args(tmp_path, tmp_path / "run", 2, net=swin, roi="[64, 32, 32]")) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module, _ = load_checkpoint(ckpt, SegmentationModule)
    assert module.net.deep_supervision == 2 and len(module.net.ds_heads) == 2
    case = str(tmp_path / "train" / "BraTS2021_00000")
    assert main(["predict", case, "--ckpt", str(ckpt), "--out", str(tmp_path / "pred")]) == 0
    export = ["export", "--ckpt", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "model.pt")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(export) == 0  # (ONNX refuses instance norm over this roi's 2 x 1 x 1 bottleneck; 64^3 exports)
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]  # nothing to act on
    assert float(capsys.readouterr().out.strip().splitlines()[-1].rsplit(":", 1)[1]) < 1e-4
    load_script("ds_heads").main([str(ckpt), str(tmp_path / "train")])  # what each head predicts (a diagnostic)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines[1:]] == ["full resolution", "head 1/2", "head 1/4"]
    assert lines[0].endswith("outputs: TC, WT, ET") and "(32, 16, 16): voxels won [" in lines[2]


def test_ds_heads_counts_what_full_resolution_says_where_the_head_puts_each_class():
    half = torch.zeros(1, 3, 2, 2, 2)
    half[:, 2, 0] = 5.0  # the head: class 2 on the first half (4 voxels at 1/2, 32 at full), else class 0
    full = torch.zeros(1, 3, 4, 4, 4)
    full[:, 1, :2, :, :2] = 5.0  # full resolution: class 1 on half of the head's class-2 voxels, else class 0
    counts = load_script("ds_heads").head_against_full(full, half)
    assert counts.tolist() == [[32, 0, 0], [0, 0, 0], [16, 16, 0]]


def test_ds_heads_reads_out_a_class_whose_code_is_a_weaker_copy_of_another():
    """The CT collapse's shape: class 2 is on the same channel as class 1, only weaker; a linear read-out
    separates the three, and the positive channels say which channel carries each."""
    ds_heads = load_script("ds_heads")
    classes = torch.arange(3).repeat_interleave(50)
    features = torch.full((150, 2), -0.05)  # off: the LeakyReLU's negative side
    features[:50, 0] = 1.0  # class 0: channel 0
    features[50:100, 1] = 3.0  # class 1: channel 1, strong
    features[100:, 1] = 1.0  # class 2: channel 1, weak
    features += 0.01 * torch.randn(150, 2, generator=torch.Generator().manual_seed(0))
    assert [ds_heads.positive_channels(features[classes == c]) for c in range(3)] == [[0], [1], [1]]
    said = ds_heads.linear_read_out(features, classes, 3)
    assert [ds_heads.recall(said, classes, c) for c in range(3)] == [1.0, 1.0, 1.0]
    assert ds_heads.recall(torch.zeros(150, dtype=torch.long), classes, 2) == 0.0
