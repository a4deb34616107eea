import pickle

import pytest
import torch
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

from medseg.modules.segmentation import SegmentationModule
from medseg.nets import SwinUNETR
from medseg.nets.pretrained import WeightsError, load_pretrained, safe_load


def tiny_swin(**kwargs) -> SwinUNETR:
    return SwinUNETR(in_channels=4, out_channels=3, feature_size=12, **kwargs)


def test_roi_not_multiple_of_32_is_a_clear_error():
    with pytest.raises(ValueError, match=r"roi_size \(64, 64, 48\).*multiple of 32"):
        SegmentationModule(net=tiny_swin(), roi_size=(64, 64, 48))


def test_state_dict_loads_into_monai_swin_unetr():
    module = SegmentationModule(net=tiny_swin(), roi_size=(64, 64, 64))
    reference = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12)
    reference.load_state_dict(module.net.state_dict(), strict=True)
    x = torch.randn(1, 4, 64, 64, 64)
    module.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x))


@pytest.mark.parametrize("wrap", ["bare", "lightning", "ddp"])
def test_training_starts_from_monai_weights(tmp_path, wrap):
    reference = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12)
    state = reference.state_dict()
    if wrap == "lightning":
        state = {"state_dict": {f"net.{k}": v for k, v in state.items()}}
    elif wrap == "ddp":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / "weights.pt")
    module = SegmentationModule(net=tiny_swin(), roi_size=(64, 64, 64), pretrained=str(tmp_path / "weights.pt"))
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(module.net.state_dict()[name], value)


def test_weights_matching_nothing_are_refused(tmp_path):
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="no tensor matches"):
        load_pretrained(tiny_swin(), tmp_path / "other.pt")


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/medseg_pwned_marker",))


def test_checkpoint_with_malicious_pickle_is_refused(tmp_path):
    import os

    marker = "/tmp/medseg_pwned_marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        torch.save({"state_dict": {}, "payload": _Payload()}, f, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(WeightsError, match="refused to load"):
        safe_load(path)
    assert not os.path.exists(marker)


def test_unreadable_weights_files_say_what_is_wrong_without_torchs_unsafe_advice(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64)}}, good)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(64)}, legacy, _use_new_zipfile_serialization=False)
    cases = {
        "junk.ckpt": (b"\x13" * 100, r"not a PyTorch weights file"),
        "empty.ckpt": (b"{}\n", r"not a PyTorch weights file"),
        "cut.ckpt": (good.read_bytes()[:300], r"damaged or truncated: its zip archive has no end"),
        "cut_legacy.pt": (legacy.read_bytes()[:100], r"damaged or truncated, cannot be read"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(WeightsError, match=message) as error:
            safe_load(tmp_path / name)
        assert str(tmp_path / name) in str(error.value) and "weights_only` set to `False`" not in str(error.value)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "where": tmp_path}, tmp_path / "objects.ckpt")
    with pytest.raises(
        WeightsError, match=r"refused to load: it holds pickled Python objects or instructions \(pathlib\.\w*Path\)"
    ):
        safe_load(tmp_path / "objects.ckpt")
    assert safe_load(legacy)["w"].shape == (64,)


def test_loss_and_training_step_on_a_small_crop():
    module = SegmentationModule(net=torch.nn.Conv3d(4, 3, 3, padding=1), roi_size=(16, 16, 16))
    batch = {"image": torch.randn(2, 4, 16, 16, 16), "label": (torch.rand(2, 3, 16, 16, 16) > 0.7).float()}
    module.log_dict = lambda *a, **k: None  # no trainer attached
    loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and module.net.weight.grad is not None


@pytest.mark.parametrize(("name", "kind"), [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_optimizer_option(name, kind):
    module = SegmentationModule(net=torch.nn.Conv3d(4, 3, 3, padding=1), roi_size=(16, 16, 16), lr=1e-2,
                                optimizer=name)  # fmt: skip
    module.trainer = type("Trainer", (), {"estimated_stepping_batches": 100, "callbacks": [], "max_time": None})()
    optimizer = module.configure_optimizers()["optimizer"]
    assert type(optimizer) is kind and optimizer.defaults["lr"] == 1e-2
    if name == "sgd":  # nnU-Net's
        assert optimizer.defaults["momentum"] == 0.99 and optimizer.defaults["nesterov"]


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer must be adamw or sgd, got 'adam'"):
        SegmentationModule(net=torch.nn.Conv3d(4, 3, 3, padding=1), roi_size=(16, 16, 16), optimizer="adam")
