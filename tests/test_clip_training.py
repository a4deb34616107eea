"""The CLIP demo recipe learns: a few hundred seeded steps on generated image-report pairs give retrieval
and zero-shot scores well above chance (a regression in the model, loss, tokenizer or data shows here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("train_clip_demo", ROOT / "scripts" / "train_clip_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_clip_demo_recipe_retrieves_well_above_chance(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train_clip_demo.py"])
    script = _script()
    out = tmp_path / "clip"
    args = [
        "--steps",
        "300",
        "--train-cases",
        "96",
        "--test-cases",
        "32",
        "--out",
        str(out),
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert script.main(args) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    n = results["n"]
    recall = results["recall"]
    chance_at_5 = 5 / n
    for direction in ("i2t", "t2i"):  # chance 0.16 at N = 32
        assert recall[f"{direction}_recall@5"] >= 2 * chance_at_5, recall
    hemisphere = results["zero_shot"]["hemisphere"]
    assert hemisphere["auroc"] >= 0.7, hemisphere  # chance 0.5
