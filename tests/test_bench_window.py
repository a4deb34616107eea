"""scripts/bench_window.py at tiny size: every variant on the same cases, agreement with the first, Dice vs truth."""

from __future__ import annotations

import json

from conftest import blob_label, load_script, write_case
from torch import nn


class Oracle(nn.Module):
    """Reads the regions off the first three channels (conftest.write_case encodes them there)."""

    size_divisor = 8

    def inference_bytes(self, voxels: int) -> int:
        return voxels

    def forward(self, x):
        return x[:, :3] * 100.0


def test_variants_agree_and_report(tmp_path, monkeypatch, capsys):
    from medseg.inference import segment
    from medseg.modules.segmentation import SegmentationModule

    for i in range(2):
        write_case(tmp_path / "cases", f"BraTS2021_0000{i}", blob_label(shape=(40, 30, 20), seed=i), seed=i)

    def loaded(checkpoints):
        return [SegmentationModule(net=Oracle(), roi_size=(16, 16, 16))], {"label_convention": "brats2021"}

    monkeypatch.setattr(segment, "load_ensemble", loaded)
    bench = load_script("bench_window")
    out = tmp_path / "window.json"
    argv = [str(tmp_path / "cases"), "--ckpt", "x.ckpt", "--variants", "roi", "plan", "auto:bf16", "24x24x16"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert len(result["rows"]) == 8
    assert [s["variant"] for s in result["summary"]] == ["roi", "plan", "auto:bf16", "24x24x16"]
    for summary in result["summary"]:  # a voxel-wise oracle: every window gives the truth
        assert summary["agrees"] and summary["no_lower"] and summary["min_agreement"] == {"TC": 1, "WT": 1, "ET": 1}
        assert summary["mean_vs_truth"] == {"TC": 1, "WT": 1, "ET": 1}
    assert "(plan), fp32" in result["rows"][1]["windows"] and result["rows"][2]["windows"].endswith("(auto), bf16")
    assert "bf16_native" in result["provenance"]
    assert "| plan |" in capsys.readouterr().out
