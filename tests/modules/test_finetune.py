"""Fine-tuning options: layer-wise learning-rate decay over Swin UNETR's encoder stages, and an encoder left
untouched by the optimizer for the first steps."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import ConfigError
from medseg.modules.finetune import layer_decay_groups
from medseg.modules.segmentation import SegmentationModule
from medseg.nets import SwinUNETR


class TinyEncoderDecoder(torch.nn.Module):
    """A stand-in with Swin UNETR's names: ``swinViT`` the encoder, the rest a decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.swinViT = torch.nn.Conv3d(4, 6, 3, padding=1)
        self.out = torch.nn.Conv3d(6, 3, 1)

    def forward(self, image):
        return self.out(torch.relu(self.swinViT(image)))


def test_layer_decay_scales_each_encoder_stage_once_more():
    net = SwinUNETR(in_channels=4, out_channels=3, feature_size=12)
    groups = {g["name"]: g for g in layer_decay_groups(net, lr=1.0, decay=0.5)}
    assert {name: g["lr"] for name, g in groups.items()} == {
        "encoder_stage0": 0.5**5, "encoder_stage1": 0.5**4, "encoder_stage2": 0.5**3,
        "encoder_stage3": 0.5**2, "encoder_stage4": 0.5, "decoder": 1.0,
    }  # fmt: skip
    in_groups = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in net.parameters())  # each parameter exactly once
    stage = {id(p): name for name, g in groups.items() for p in g["params"]}
    assert stage[id(net.swinViT.patch_embed.proj.weight)] == "encoder_stage0"
    assert stage[id(net.swinViT.layers4[0].downsample.reduction.weight)] == "encoder_stage4"
    assert stage[id(net.encoder1.layer.conv1.conv.weight)] == "decoder"
    assert len(layer_decay_groups(net, lr=1.0, decay=1.0)) == 1


def test_options_need_a_network_with_a_known_encoder():
    with pytest.raises(ConfigError, match="layer_decay needs a network with a known encoder"):
        SegmentationModule(net=torch.nn.Conv3d(4, 3, 1), roi_size=(16, 16, 16), layer_decay=0.8)
    with pytest.raises(ConfigError, match="freeze_encoder_steps needs a network with a known encoder"):
        SegmentationModule(net=torch.nn.Conv3d(4, 3, 1), roi_size=(16, 16, 16), freeze_encoder_steps=5)


def _step(module: SegmentationModule, optimizer: torch.optim.Optimizer) -> None:
    batch = {"image": torch.randn(2, 4, 8, 8, 8), "label": (torch.rand(2, 3, 8, 8, 8) > 0.7).float()}
    optimizer.zero_grad()
    module.training_step(batch, 0).backward()
    module.on_after_backward()
    optimizer.step()


def test_encoder_is_left_untouched_for_the_first_steps(monkeypatch):
    module = SegmentationModule(net=TinyEncoderDecoder(), roi_size=(8, 8, 8), freeze_encoder_steps=2, weight_decay=0.1)
    module.log_dict = lambda *a, **k: None  # no trainer attached
    optimizer = torch.optim.AdamW(layer_decay_groups(module.net, 1e-2, 1.0), weight_decay=0.1)
    encoder, decoder = module.net.swinViT.weight.detach().clone(), module.net.out.weight.detach().clone()
    for step in range(2):
        monkeypatch.setattr(SegmentationModule, "global_step", property(lambda self, s=step: s))
        _step(module, optimizer)
    torch.testing.assert_close(module.net.swinViT.weight, encoder, rtol=0, atol=0)  # no update, no weight decay
    assert not torch.equal(module.net.out.weight, decoder)
    monkeypatch.setattr(SegmentationModule, "global_step", property(lambda self: 2))
    _step(module, optimizer)
    assert not torch.equal(module.net.swinViT.weight, encoder)  # trained from step 2 on
