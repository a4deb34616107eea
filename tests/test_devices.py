"""One device resolution for every command and predictor."""

import torch

from medseg.devices import resolve_device


def test_auto_is_a_gpu_when_there_is_one_and_other_names_pass_through(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_bf16_is_native_with_usable_amx_or_a_bf16_gpu(monkeypatch):
    from medseg import devices

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    for flags in ({"avx512f", "avx512_vnni"}, {"avx512f", "avx512_bf16"}):  # emulated, or slower than fp32
        monkeypatch.setattr(devices, "cpu_flags", lambda flags=flags: flags)
        assert not devices.bf16_native("cpu") and devices.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
    assert devices.bf16_native("cpu") and devices.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # the kernel does not grant the tiles
    assert not devices.bf16_native("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.resolve_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.resolve_precision("auto", "cuda") == "bf16"
    assert devices.resolve_precision("fp32", "cuda") == "fp32" and devices.resolve_precision("bf16", "cpu") == "bf16"


def test_precision_reaches_the_predictor_and_the_cli(monkeypatch, tmp_path):
    import pytest

    from medseg import devices
    from medseg.commands import predict
    from medseg.errors import MedsegError
    from medseg.inference import Predictor, segment
    from medseg.modules.segmentation import SegmentationModule

    module = SegmentationModule(net=torch.nn.Conv3d(4, 3, 1), roi_size=(16, 16, 16))
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"amx_bf16"})
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)  # any host
    assert Predictor(module, device="cpu", precision="auto").bf16
    assert Predictor(module, device="cpu").bf16  # auto is the default
    monkeypatch.setattr(devices, "cpu_flags", lambda: set())
    monkeypatch.setattr(devices, "bf16_native", lambda device="cpu": False)
    assert not Predictor(module, device="cpu", precision="auto").bf16
    assert Predictor(module, device="cpu", bf16=True).precision == "bf16"  # the older switch
    with pytest.raises(MedsegError, match="precision"):
        Predictor(module, device="cpu", precision="fp8")
    seen = {}
    monkeypatch.setattr(segment.Predictor, "from_checkpoints", classmethod(lambda cls, *a, **k: seen.update(k)))
    out = ["--ckpt", "x.ckpt", "--out", str(tmp_path / "o")]
    for flags, precision in (([], "auto"), (["--bf16"], "bf16"), (["--precision", "fp32"], "fp32")):
        predict._predictor(predict.build_parser().parse_args([str(tmp_path), *out, *flags]))
        assert seen["precision"] == precision
    with pytest.raises(SystemExit):
        predict.build_parser().parse_args([str(tmp_path), *out, "--bf16", "--precision", "fp32"])
