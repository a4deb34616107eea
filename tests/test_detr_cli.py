"""3-D DETR end to end: boxes from labels and from a boxes file, `predict_boxes` in world mm, CLI fit then detect
(tiny sizes)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.boxes import (
    box_cxcyczwhd_to_xyzxyz,
    box_xyzxyz_to_cxcyczwhd,
    boxes_voxel_to_world,
)
from medseg.cli import main
from medseg.data.demo import generate_dataset
from medseg.data.detection import (
    DetectionDataModule,
    RandFlipBoxesd,
    detection_transforms,
    label_to_boxes,
)
from medseg.data.layouts import read_dataset
from medseg.inference.detect import BoxDetector, predict_boxes
from medseg.losses.detr import SetCriterion3d
from medseg.modules.detection import DetectionModule

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- data


def test_label_to_boxes_and_flip():
    mask = np.zeros((12, 10, 8), bool)
    mask[1:4, 2:6, 3:5] = True  # 24 voxels
    mask[8:11, 7:9, 0:2] = True  # 12 voxels
    mask[6, 0, 7] = True  # 1 voxel: below min_voxels
    assert label_to_boxes(mask, min_voxels=5).tolist() == [[1, 2, 3, 4, 6, 5], [8, 7, 0, 11, 9, 2]]

    image = torch.as_tensor(mask[None].astype(np.float32))
    boxes = box_xyzxyz_to_cxcyczwhd(
        torch.as_tensor(label_to_boxes(mask, 5) / np.tile(mask.shape, 2), dtype=torch.float32)
    )
    for axis in range(3):
        flipped = RandFlipBoxesd(spatial_axis=axis, prob=1.0)({"image": image, "boxes": boxes})
        again = label_to_boxes(flipped["image"][0].numpy(), 5) / np.tile(mask.shape, 2)
        expected = box_cxcyczwhd_to_xyzxyz(flipped["boxes"]).numpy()
        assert np.allclose(sorted(again.tolist()), sorted(expected.tolist()), atol=1e-6)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detr_demo")
    generate_dataset(root / "train", 3, seed=1, shape=(56, 56, 40), n_lesions=(1, 2))
    generate_dataset(root / "test", 1, seed=1, start_index=500, shape=(56, 56, 40), n_lesions=2)
    return root


def truth_world_boxes(root: Path) -> dict[str, np.ndarray]:
    """World boxes of the demo's own lesion bounding boxes (original LPS grid, inclusive indices)."""
    truth = json.loads((root / "demo_truth.json").read_text(encoding="utf-8"))
    out = {}
    for case_id, t in truth.items():
        voxel = np.array(
            [[*les["bbox_voxel"]["min"], *np.add(les["bbox_voxel"]["max"], 1)] for les in t["lesions"]], float
        )
        out[case_id] = boxes_voxel_to_world(voxel, np.array(t["affine"]))
    return out


def test_boxes_from_label_and_from_json_agree_with_demo_truth(demo_data, tmp_path):
    truth = truth_world_boxes(demo_data / "train")
    from_label = DetectionDataModule(str(demo_data / "train"), roi_size=(32, 32, 32), val_fraction=0, min_voxels=1)
    boxes_json = tmp_path / "boxes.json"
    boxes_json.write_text(
        json.dumps({c: [{"box_mm": b.tolist(), "label": 0} for b in boxes] for c, boxes in truth.items()})
    )
    from_json = DetectionDataModule(
        str(demo_data / "train"), roi_size=(32, 32, 32), val_fraction=0, boxes_json=str(boxes_json)
    )
    batches = []
    for dm in (from_label, from_json):
        dm.setup("fit")
        dm.hparams.flip_prob = 0.0
        batches.append(next(iter(dm._eval_loader(dm.splits["train"]))))
    by_label, by_json = batches
    assert by_label["image"].shape == (3, 4, 32, 32, 32)
    for i, case_id in enumerate(by_label["case_id"]):
        shape = by_label["grid_shape"][i].numpy()
        voxel = box_cxcyczwhd_to_xyzxyz(by_label["boxes"][i]).double().numpy() * np.tile(shape, 2)
        world = boxes_voxel_to_world(voxel, by_label["grid_affine"][i].numpy())
        assert len(world) == len(truth[case_id])
        assert np.abs(np.sort(world, 0) - np.sort(truth[case_id], 0)).max() < 1e-3  # same boxes, in mm
        # the same world boxes read from a JSON give the same normalised boxes
        j = by_json["case_id"].index(case_id)
        a, b = by_label["boxes"][i], by_json["boxes"][j]
        assert torch.allclose(a[a[:, 0].argsort()], b[b[:, 0].argsort()], atol=1e-4)


def test_boxes_json_naming_an_unknown_case_is_a_user_error(demo_data, tmp_path):
    boxes_json = tmp_path / "boxes.json"
    boxes_json.write_text(json.dumps({"nope": [{"box_mm": [0, 0, 0, 1, 1, 1]}]}))
    dm = DetectionDataModule(str(demo_data / "train"), boxes_json=str(boxes_json))
    with pytest.raises(Exception, match="not in"):
        dm.setup("fit")
    boxes_json.write_text(json.dumps({"BraTS2021_00000": [{"box_mm": [0, 0, 0, 1, -1, 1]}]}))
    with pytest.raises(Exception, match="BraTS2021_00000.*y0 >= y1"):
        DetectionDataModule(str(demo_data / "train"), boxes_json=str(boxes_json)).setup("fit")


# ---------------------------------------------------------------------------------------------- predict, CLI


class OracleNet(torch.nn.Module):
    """Answers with given normalised boxes, whatever the image: checks the way back to world mm."""

    n_classes = 1

    def __init__(self, boxes: torch.Tensor) -> None:
        super().__init__()
        self.boxes = boxes  # [N, 6] cxcyczwhd
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, image):
        logits = torch.tensor([[4.0, -4.0]]).repeat(len(self.boxes), 1)
        return {"pred_logits": logits[None] * self.scale, "pred_boxes": self.boxes[None]}


def test_predict_boxes_in_world_mm_and_mask_on_input_grid(demo_data, tmp_path):
    case = read_dataset(demo_data / "test").cases[0]
    data = detection_transforms("brats2021", (32, 32, 32), min_voxels=1)(case)  # boxes from the label map
    module = DetectionModule(OracleNet(data["boxes"]), SetCriterion3d())
    out = tmp_path / "boxes"
    written, failures = predict_boxes(BoxDetector(module, (32, 32, 32), device="cpu"), [case], out, mask_score=0.5)
    assert failures == [] and [p.name for p in written] == ["BraTS2021_00500.json"]
    result = json.loads(written[0].read_text(encoding="utf-8"))
    assert result["space"] == "RAS" and len(result["boxes"]) == 2
    predicted = np.array([b["box_mm"] for b in result["boxes"]])
    expected = truth_world_boxes(demo_data / "test")["BraTS2021_00500"]
    assert np.abs(np.sort(predicted, 0) - np.sort(expected, 0)).max() < 1e-2
    # the mask is on the input (LPS, rotated) grid and covers every lesion voxel
    mask = nib.load(out / "BraTS2021_00500_boxes.nii.gz")
    label = nib.load(case["label"])
    assert np.allclose(mask.affine, label.affine) and mask.shape == label.shape
    assert (np.asarray(mask.dataobj)[np.asarray(label.dataobj) > 0] > 0).all()
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1, 2}


def test_python_api_detect_raises_the_case_error_naming_the_file(demo_data, tmp_path):
    """BoxDetector.detect on a damaged scan: medseg's CaseError, not MONAI's wrapping RuntimeError."""
    from medseg.errors import CaseError

    case = dict(read_dataset(demo_data / "test").cases[0])
    damaged = tmp_path / Path(case["image"][1]).name
    damaged.write_bytes(Path(case["image"][1]).read_bytes()[:200])
    case["image"] = [case["image"][0], str(damaged), *case["image"][2:]]
    module = DetectionModule(OracleNet(torch.zeros(1, 6)), SetCriterion3d())
    with pytest.raises(CaseError, match=r"BraTS2021_00500.*cannot be read"):
        BoxDetector(module, (32, 32, 32), device="cpu").detect(case)


def test_cli_fit_then_detect(demo_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "fit",
        "--config", str(ROOT / "configs" / "detr_demo.yaml"),
        "--data.init_args.data_dir", str(demo_data / "train"),
        "--data.init_args.roi_size", "[32, 32, 32]",
        "--data.init_args.batch_size", "1",
        "--data.init_args.val_fraction", "0.34",
        "--model.init_args.net.init_args.backbone.init_args.channels", "[4, 8]",
        "--model.init_args.net.init_args.hidden_dim", "12",
        "--model.init_args.net.init_args.n_heads", "2",
        "--model.init_args.net.init_args.ff_dim", "16",
        "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.max_steps", "3",
        "--trainer.log_every_n_steps", "1",
        "--trainer.check_val_every_n_epoch", "1",
    ]  # fmt: skip
    assert main(args) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 3  # stopped mid-epoch, after validation
    metrics = (run / "lightning_logs" / "version_0" / "metrics.csv").read_text(encoding="utf-8").splitlines()[0]
    for name in (
        "train/loss_ce",
        "train/loss_bbox",
        "train/loss_giou",
        "val/map_10",
        "val/map_25",
        "val/map_50",
        "val/froc",
    ):
        assert name in metrics

    out = tmp_path / "boxes"
    assert (
        main(["detect", str(demo_data / "test"), "--ckpt", str(ckpt), "--out", str(out), "--mask", "--min-score", "0"])
        == 0
    )
    result = json.loads((out / "BraTS2021_00500.json").read_text(encoding="utf-8"))
    assert len(result["boxes"]) == 8 and all(len(b["box_mm"]) == 6 for b in result["boxes"])
    assert (out / "BraTS2021_00500_boxes.nii.gz").exists()
    assert "wrote 1 box file" in capsys.readouterr().out
    assert main(["detect", str(demo_data / "test"), "--ckpt", str(run / "nope.ckpt"), "--out", str(out)]) == 1
    assert "nope.ckpt" in capsys.readouterr().err
