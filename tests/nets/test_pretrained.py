"""Starting points in every layout medseg reads load into Swin UNETR with its encoder complete: each test writes
a file in the exact key layout of its source (no download) and compares every swinViT tensor with the file's."""

from __future__ import annotations

import re

import pytest
import torch
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
from monai.networks.nets.swin_unetr import filter_swinunetr

from medseg.modules.clip import ClipModule
from medseg.modules.pretrain import PretrainModule
from medseg.nets import SwinImageEncoder, SwinPretrainNet, SwinUNETR, TransformerTextEncoder
from medseg.nets.pretrained import WeightsError, load_pretrained


def swin(in_channels: int = 4) -> SwinUNETR:
    return SwinUNETR(in_channels=in_channels, out_channels=3, feature_size=12)


def encoder_of(net: torch.nn.Module, prefix: str = "swinViT.") -> dict[str, torch.Tensor]:
    """The swinViT tensors of ``net`` (under ``prefix``), named as in Swin UNETR."""
    return {"swinViT." + k.removeprefix(prefix): v for k, v in net.state_dict().items() if k.startswith(prefix)}


def assert_encoder_equal(net: SwinUNETR, expected: dict[str, torch.Tensor]) -> None:
    state = net.state_dict()
    names = [k for k in state if k.startswith("swinViT.")]
    assert sorted(names) == sorted(expected), "the file covers every swinViT tensor"
    for name in names:
        torch.testing.assert_close(state[name], expected[name], rtol=0, atol=0, msg=name)


def lightning_checkpoint(module: torch.nn.Module) -> dict:
    """What Lightning writes, reduced to what matters here: ``state_dict`` of the LightningModule and its version."""
    return {"state_dict": module.state_dict(), "pytorch-lightning_version": "2.6.6", "hyper_parameters": {}}


def authors_layout(source: dict[str, torch.Tensor]) -> dict:
    """The Swin UNETR authors' model_swinvit.pt: ``state_dict`` of ``module.``-prefixed Swin transformer keys with
    ``mlp.fc1``/``fc2`` (MONAI's ``SwinUNETR.load_from`` reads exactly these), plus the pre-training heads."""
    state = {}
    for key, value in source.items():
        name = key.removeprefix("swinViT.").replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
        state[f"module.{name}"] = value
    dim = source["swinViT.layers4.0.downsample.reduction.weight"].shape[0]
    state |= {
        "module.rotation_head.weight": torch.randn(4, dim),
        "module.rotation_head.bias": torch.randn(4),
        "module.contrastive_head.weight": torch.randn(512, dim),
        "module.contrastive_head.bias": torch.randn(512),
        "module.conv.0.weight": torch.randn(dim // 2, dim, 3, 3, 3),
        "module.conv.0.bias": torch.randn(dim // 2),
    }
    return {"epoch": 100, "state_dict": state}


def monai_ssl_layout(source: dict[str, torch.Tensor]) -> dict:
    """MONAI's ssl_pretrained_weights.pth: ``model`` with ``encoder.`` keys, the stages one level deeper
    (``encoder.layers1.0.0.blocks...``), a mask token, a final norm and an output conv: the keys
    ``filter_swinunetr`` is written for."""
    model = {}
    for key, value in source.items():
        name = key.removeprefix("swinViT.")
        model["encoder." + re.sub(r"^(layers\d)\.0\.", r"\1.0.0.", name)] = value
    dim = source["swinViT.layers4.0.downsample.reduction.weight"].shape[0]
    model |= {
        "encoder.mask_token": torch.zeros(1, 1, 12),
        "encoder.norm.weight": torch.ones(dim),
        "encoder.norm.bias": torch.zeros(dim),
        "out.conv.conv.weight": torch.randn(1, 12, 1, 1, 1),
        "out.conv.conv.bias": torch.randn(1),
    }
    return {"model": model, "epoch": 10}


def test_monai_ssl_layout_is_what_filter_swinunetr_maps_back():
    source = encoder_of(MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12))
    mapped = [filter_swinunetr(k, v) for k, v in monai_ssl_layout(source)["model"].items()]
    assert sorted(m[0] for m in mapped if m) == sorted(source)


def test_authors_model_swinvit_loads_the_whole_encoder(tmp_path):
    reference = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12)
    source = encoder_of(reference)
    torch.save(authors_layout(source), tmp_path / "model_swinvit.pt")
    net = swin()
    report = load_pretrained(net, tmp_path / "model_swinvit.pt")
    assert_encoder_equal(net, source)
    assert report.layout.startswith("Swin UNETR authors'")
    assert report.encoder() == ("swinViT.", len(source), len(source))
    assert sorted(report.unused) == sorted(
        k for k in authors_layout(source)["state_dict"] if "head" in k or "conv" in k
    )
    # MONAI's own reader of this layout agrees tensor for tensor
    monai = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12)
    monai.load_from(authors_layout(source))
    assert_encoder_equal(net, encoder_of(monai))


def test_monai_ssl_weights_load_through_filter_swinunetr(tmp_path):
    source = encoder_of(MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12))
    torch.save(monai_ssl_layout(source), tmp_path / "ssl_pretrained_weights.pth")
    net = swin()
    report = load_pretrained(net, tmp_path / "ssl_pretrained_weights.pth")
    assert_encoder_equal(net, source)
    assert "filter_swinunetr" in report.layout
    assert sorted(report.unused) == ["encoder.mask_token", "encoder.norm.bias", "encoder.norm.weight",
                                     "out.conv.conv.bias", "out.conv.conv.weight"]  # fmt: skip


def test_medseg_pretrain_checkpoint_loads_the_encoder(tmp_path):
    module = PretrainModule(SwinPretrainNet(in_channels=4, feature_size=12))
    torch.save(lightning_checkpoint(module), tmp_path / "pretrain.ckpt")
    net = swin()
    report = load_pretrained(net, tmp_path / "pretrain.ckpt")
    assert_encoder_equal(net, encoder_of(module.net))
    assert report.layout == "medseg checkpoint"
    assert {k.split(".")[1] for k in report.unused} == {"rotation_head", "contrastive_head", "conv"}
    assert not any(k.startswith("swinViT.") for k in report.initialised)


def test_medseg_clip_checkpoint_loads_the_encoder(tmp_path):
    text = TransformerTextEncoder(embed_dim=32, width=32, layers=1, heads=2, context_length=16, vocab_size=50)
    module = ClipModule(SwinImageEncoder(in_channels=4, feature_size=12, embed_dim=32), text)
    torch.save(lightning_checkpoint(module), tmp_path / "clip.ckpt")
    net = swin()
    report = load_pretrained(net, tmp_path / "clip.ckpt")
    assert_encoder_equal(net, encoder_of(module.image_encoder))
    assert report.layout == "medseg CLIP checkpoint"
    assert any(k.startswith("text_encoder.") for k in report.unused)


@pytest.mark.parametrize("wrap", ["bare", "fit checkpoint", "ddp"])
def test_full_swin_unetr_loads_every_tensor(tmp_path, wrap):
    reference = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12)
    state = reference.state_dict()
    if wrap == "fit checkpoint":
        state = {"state_dict": {f"net.{k}": v for k, v in state.items()}, "hyper_parameters": {}}
    elif wrap == "ddp":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / "weights.pt")
    net = swin()
    report = load_pretrained(net, tmp_path / "weights.pt")
    assert report.initialised == [] and report.unused == []
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value, rtol=0, atol=0)


def test_one_channel_ct_encoder_starts_a_four_channel_network(tmp_path):
    source = encoder_of(MonaiSwinUNETR(in_channels=1, out_channels=3, feature_size=12))
    torch.save(authors_layout(source), tmp_path / "model_swinvit.pt")
    net = swin(in_channels=4)
    report = load_pretrained(net, tmp_path / "model_swinvit.pt")
    key = "swinViT.patch_embed.proj.weight"
    assert key in report.adapted and report.encoder()[1:] == (len(source), len(source))
    torch.testing.assert_close(net.state_dict()[key], source[key].repeat(1, 4, 1, 1, 1) / 4)
    x = torch.randn(1, 1, 8, 8, 8)  # a scan repeated over the channels gives the file's patch features
    repeated = torch.nn.functional.conv3d(x.repeat(1, 4, 1, 1, 1), net.swinViT.patch_embed.proj.weight, stride=2)
    torch.testing.assert_close(repeated, torch.nn.functional.conv3d(x, source[key], stride=2))


def test_other_output_channels_stay_initialised_and_are_reported(tmp_path):
    other = MonaiSwinUNETR(in_channels=4, out_channels=14, feature_size=12)
    torch.save(other.state_dict(), tmp_path / "btcv.pt")
    net = swin()
    before = net.state_dict()["out.conv.conv.weight"].clone()
    report = load_pretrained(net, tmp_path / "btcv.pt")
    assert set(report.mismatched) == {"out.conv.conv.weight", "out.conv.conv.bias"}
    torch.testing.assert_close(net.state_dict()["out.conv.conv.weight"], before)
    text = str(report)
    assert "loaded 157 of 159 network tensors" in text and "encoder swinViT 126 of 126 (complete)" in text
    assert "shape differs, left initialised: out.conv.conv.weight (file [14, 12, 1, 1, 1]" in text


def test_a_file_matching_nothing_is_one_clear_error(tmp_path):
    torch.save({"state_dict": {"backbone.fc.weight": torch.zeros(3, 3)}}, tmp_path / "resnet.pt")
    with pytest.raises(WeightsError, match=r"resnet\.pt: no tensor matches SwinUNETR.*backbone\.fc\.weight"):
        load_pretrained(swin(), tmp_path / "resnet.pt")


def test_strict_refuses_a_partial_start(tmp_path):
    torch.save(authors_layout(encoder_of(swin())), tmp_path / "model_swinvit.pt")
    with pytest.raises(WeightsError, match="33 network tensors missing"):
        load_pretrained(swin(), tmp_path / "model_swinvit.pt", strict=True)


def test_a_file_for_another_feature_size_is_one_error_not_a_partial_load(tmp_path):
    torch.save(MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=24).state_dict(), tmp_path / "f24.pt")
    net = swin()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(WeightsError, match=r"f24\.pt: \d+ of the 159 tensors .* another shape.*feature_size"):
        load_pretrained(net, tmp_path / "f24.pt")
    for key, value in net.state_dict().items():  # nothing was loaded
        torch.testing.assert_close(value, before[key])
