"""BraTS 2024 post-treatment glioma: label 4 (resection cavity) is a fourth region, trained, written back."""

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from conftest import TINY_NET

from medseg.cli import main
from medseg.data.demo import generate_dataset
from medseg.inference import Predictor

ROOT = Path(__file__).resolve().parents[1]
FOUR_REGIONS = [*TINY_NET[:5], "4", *TINY_NET[6:]]


def with_cavity(root: Path) -> None:
    """Add a resection cavity (label 4) to every label file of a BraTS 2023-layout folder."""
    for seg in sorted(root.glob("*/*-seg.nii.gz")):
        image = nib.load(seg)
        label = np.asarray(image.dataobj).copy()
        label[4:9, 4:9, 4:8] = 4
        nib.save(nib.Nifti1Image(label, image.affine, image.header), str(seg))


def fit_args(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"), "--data.init_args.data_dir", str(data),
        "--data.init_args.roi_size", "[32, 32, 32]", "--model.init_args.roi_size", "[32, 32, 32]",
        "--trainer.default_root_dir", str(run), "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(run), "--trainer.max_steps", "2", *extra,
    ]  # fmt: skip


def test_post_treatment_case_trains_predicts_and_writes_label_4(tmp_path, capsys):
    data = tmp_path / "train"
    generate_dataset(data, 2, seed=3, layout="brats2023", shape=(40, 40, 32))
    with_cavity(data)
    # read as plain BraTS 2023, label 4 is an error that names the file and the preset to use
    assert main(fit_args(data, tmp_path / "plain", *TINY_NET)) == 1
    err = capsys.readouterr().err
    assert "-seg.nii.gz" in err and "values [4]" in err and "brats2024-gli-post" in err

    run = tmp_path / "run"
    assert main(fit_args(data, run, *FOUR_REGIONS, "--data.init_args.task", "brats2024-gli-post")) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    task = torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"]["task"]
    assert list(task["regions"]) == ["WT", "TC", "ET", "RC"]

    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    with torch.no_grad():  # make the RC output win everywhere: the label map must then hold 4
        predictor.module.net.bias.copy_(torch.tensor([-20.0, -20.0, -20.0, 20.0]))
    case = sorted(data.iterdir())[0]
    result = predictor.predict(case, out_dir=tmp_path / "pred")[0]
    written = nib.load(tmp_path / "pred" / f"{case.name}.nii.gz")
    given = nib.load(next(case.glob("*-t1n.nii.gz")))
    assert written.shape == given.shape and np.allclose(written.affine, given.affine)
    assert 4 in np.unique(result.label) and set(np.unique(result.label).tolist()) <= {0, 4}
