"""Export to ONNX / TorchScript: outputs equal PyTorch's, and predict runs from the exported file."""

import json

import nibabel as nib
import numpy as np
import pytest
from test_cli import fit_args

from medseg.cli import main
from medseg.data.demo import generate_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    generate_dataset(root / "train", 2, seed=4, shape=(48, 48, 32))
    assert main(fit_args(root, root / "run", 2, "--data.init_args.bias_field", "n4")) == 0  # carried to the export
    return root, root / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_export_matches_pytorch_and_predicts(trained, tmp_path, capsys, fmt, suffix):
    root, ckpt = trained
    model = tmp_path / f"model{suffix}"
    assert main(["export", "--ckpt", str(ckpt), "--format", fmt, "--out", str(model)]) == 0
    line = capsys.readouterr().out
    difference = float(line.rsplit(":", 1)[1])
    assert difference < 1e-4, line
    assert json.loads(model.with_name(model.name + ".json").read_text(encoding="utf-8"))["bias_field"] == "n4"
    case = str(root / "train" / "BraTS2021_00000")
    assert main(["predict", case, "--ckpt", str(ckpt), "--out", str(tmp_path / "torch"), "--precision", "fp32"]) == 0
    assert main(["predict", case, "--ckpt", str(model), "--out", str(tmp_path / "exported")]) == 0
    a = np.asarray(nib.load(str(tmp_path / "torch" / "BraTS2021_00000.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "exported" / "BraTS2021_00000.nii.gz")).dataobj)
    assert (a == b).mean() > 0.9999
