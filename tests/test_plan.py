"""Fingerprint, planner and `medseg plan` on tiny CT and BraTS datasets written into tmp_path."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import blob_label, save, write_case
from monai.transforms import Compose, CropForegroundd, Orientationd

from medseg import cli
from medseg.commands import plan as plan_command
from medseg.data.datamodule import SegmentationDataModule
from medseg.data.fingerprint import (
    case_fingerprint,
    dataset_fingerprint,
    foreground_samples,
    measure_ct_channels,
)
from medseg.data.layouts import read_dataset
from medseg.data.transforms import ForegroundMask, LoadCased
from medseg.errors import LayoutError
from medseg.planning import needs_resampling, plan, plan_roi_size, target_spacing, voxel_budget, write_plan
from medseg.tasks import Channel, Task

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CT_TASK = Task("toyct", (Channel("CT", "CT"),), {"organ": 1, "lesion": 2})
Z_SPACINGS = (2.5, 3.0, 4.0, 5.0)  # anisotropic: x, y 0.8 mm (0.7 for the last case)


def lps(spacing) -> np.ndarray:
    return np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])


def ct_volumes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """24^3 CT: air -1000, a body box [2:22, 3:21, 2:22], an organ (label 1, 4x5x6 voxels) and lesions
    (label 2): a 2x2x2 cube with a voxel touching it at a corner (one 26-connected component) + one apart."""
    rng = np.random.default_rng(seed)
    image = np.full((24, 24, 24), -1000.0, np.float32)
    image[2:22, 3:21, 2:22] = 40 + 20 * rng.standard_normal((20, 18, 20))
    label = np.zeros(image.shape, np.uint8)
    label[5:9, 5:10, 5:11] = 1
    label[14:16, 14:16, 14:16] = 2
    label[16, 16, 16] = 2  # corner neighbour of (15, 15, 15)
    label[18, 6, 18] = 2
    image[label == 1] += 60
    image[label == 2] += 150
    return image, label


def make_ct(root: Path) -> Path:
    """MSD-style single-channel CT dataset: dataset.json, imagesTr/, labelsTr/, 4 LPS cases."""
    for i, z in enumerate(Z_SPACINGS):
        image, label = ct_volumes(i)
        affine = lps((0.7 if i == 3 else 0.8, 0.7 if i == 3 else 0.8, z))
        save(root / "imagesTr" / f"ct_{i}.nii.gz", image, affine)
        save(root / "labelsTr" / f"ct_{i}.nii.gz", label, affine)
    meta = {"name": "toyct", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ", "2": "lesion"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def ct_data(tmp_path) -> Path:
    return make_ct(tmp_path / "toyct")


@pytest.fixture
def ct_fingerprint(ct_data) -> tuple[dict, Task, list[dict]]:
    index = read_dataset(ct_data, task=CT_TASK.to_dict())
    return dataset_fingerprint(index.cases, index.task, progress=False), index.task, index.cases


# ------------------------------------------------------------------------------------------ fingerprint


def test_case_fingerprint_by_hand(ct_data):
    case = read_dataset(ct_data, task=CT_TASK.to_dict()).cases[1]  # spacing 0.8, 0.8, 3.0, stored LPS
    found = case_fingerprint(case, CT_TASK, np.random.default_rng(0))
    voxel_ml = 0.8 * 0.8 * 3.0 / 1000
    assert found["orientation"] == "LPS"
    assert found["shape"] == [24, 24, 24] and found["spacing"] == pytest.approx([0.8, 0.8, 3.0])
    assert found["cropped_shape"] == [20, 18, 20]  # the body box
    assert found["labels"]["organ"] == {"value": 1, "volume_ml": pytest.approx(120 * voxel_ml), "components": 1}
    assert found["labels"]["lesion"] == {"value": 2, "volume_ml": pytest.approx(10 * voxel_ml), "components": 2}
    image, label = ct_volumes(1)
    assert sorted(found["samples"][0]) == pytest.approx(sorted(image[label > 0]))  # 130 voxels: all of them


def test_case_fingerprint_in_ras_order_as_the_transforms_see_it(tmp_path):
    """Voxel axes stored as (S, L, P): shapes and spacings come out along R, A, S, as Orientationd gives them."""
    image, label = ct_volumes(0)
    image, label = image[:, :, :20], label[:, :, :20]  # 24 x 24 x 20 stored
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 3.0, -0.8, -0.9, 1.0  # i -> S, j -> L, k -> P
    case = {
        "case_id": "permuted",
        "image": [str(save(tmp_path / "im.nii.gz", image, affine))],
        "label": str(save(tmp_path / "lb.nii.gz", label, affine)),
    }
    found = case_fingerprint(case, CT_TASK, np.random.default_rng(0))
    reference = Compose(
        [
            LoadCased(CT_TASK),
            Orientationd(keys=["image", "label"], axcodes="RAS", labels=None),
            CropForegroundd(keys=["image"], source_key="image", select_fn=ForegroundMask(CT_TASK.channels)),
        ]
    )(case)
    assert found["orientation"] == "SLP"
    assert found["shape"] == [24, 20, 24] == list(reference["label"].shape[1:])
    assert found["spacing"] == pytest.approx([0.8, 0.9, 3.0])
    assert found["spacing"] == pytest.approx(reference["label"].pixdim.tolist())
    assert found["cropped_shape"] == list(reference["image"].shape[1:])


def test_dataset_fingerprint_pools_cases(ct_fingerprint):
    fingerprint, _, _ = ct_fingerprint
    assert fingerprint["n_cases"] == 4
    assert fingerprint["median_spacing"] == pytest.approx([0.8, 0.8, np.median(Z_SPACINGS)])
    lesion = fingerprint["labels"]["lesion"]
    assert (lesion["value"], lesion["median_components"], lesion["cases_present"]) == (2, 2, 4)
    volumes = [10 * (0.7 if i == 3 else 0.8) ** 2 * z / 1000 for i, z in enumerate(Z_SPACINGS)]
    assert lesion["median_volume_ml"] == pytest.approx(np.median(volumes))
    json.dumps(fingerprint)  # plain data


def test_dataset_without_labels_has_nothing_to_plan_from(ct_fingerprint):
    _, task, cases = ct_fingerprint
    with pytest.raises(LayoutError, match="none of the 4 case"):
        dataset_fingerprint([{**c, "label": None} for c in cases], task, progress=False)


def test_measure_ct_channels_is_nnunets_scheme(ct_fingerprint):
    fingerprint, task, cases = ct_fingerprint
    pooled = np.concatenate([ct_volumes(i)[0][ct_volumes(i)[1] > 0] for i in range(4)]).astype(np.float64)
    [channel] = measure_ct_channels(cases, task).channels
    assert channel.window == pytest.approx(tuple(np.percentile(pooled, [0.5, 99.5])))
    assert (channel.mean, channel.std) == (pytest.approx(pooled.mean()), pytest.approx(pooled.std()))
    stats = fingerprint["channels"][0]
    assert (stats["p0.5"], stats["p99.5"], stats["mean"]) == pytest.approx((*channel.window, channel.mean))


def test_measure_ct_channels_samples_are_seeded(ct_fingerprint):
    _, task, cases = ct_fingerprint
    [drawn] = foreground_samples(cases, task, seed=3, samples_per_case=50)
    [again] = foreground_samples(cases, task, seed=3, samples_per_case=50)
    [other] = foreground_samples(cases, task, seed=4, samples_per_case=50)
    assert drawn.size == 200 and np.array_equal(drawn, again) and not np.array_equal(drawn, other)
    [channel] = measure_ct_channels(cases, task, seed=3, samples_per_case=50).channels
    assert channel.window == pytest.approx(tuple(np.percentile(drawn.astype(np.float64), [0.5, 99.5])))
    assert channel.std == pytest.approx(drawn.astype(np.float64).std())


def test_measure_ct_channels_leaves_windowed_ct_and_mr_alone():
    task = Task("t", (Channel("CT", "CT", window=(-100, 200)), Channel("T2", "MR")), {"a": 1})
    missing = [{"case_id": "x", "image": ["/no/such.nii.gz", "/no/such2.nii.gz"], "label": "/no/l.nii.gz"}]
    assert measure_ct_channels(missing, task) is task  # nothing to measure: nothing read


# ------------------------------------------------------------------------------------------ planning rules


def test_target_spacing_median_and_anisotropy():
    assert target_spacing([[1, 1, 1], [1, 1, 1.2], [0.9, 1, 1.4]]) == pytest.approx((1, 1, 1.2))
    spacings = [[0.8, 0.8, z] for z in Z_SPACINGS]
    assert target_spacing(spacings) == pytest.approx((0.8, 0.8, np.percentile(Z_SPACINGS, 10)))  # 2.65, not 3.5
    clamped = [[0.5, 2.0, 1.0]] * 2 + [[0.5, 2.0, 6.0]] * 7  # 10th percentile of S (1.0) is finer than A
    assert target_spacing(clamped) == pytest.approx((0.5, 2.0, 2.0))


def test_roi_size_multiples_of_32_within_budget():
    assert plan_roi_size((40, 40, 20), "cpu") == (64, 32, 32)  # never all 32: one side 64
    assert plan_roi_size((106, 73, 44), "cpu") == (96, 64, 32)  # the CT demo: 44 slices are not padded to 64
    assert plan_roi_size((140, 170, 140), "cpu") == (64, 64, 64)
    assert plan_roi_size((150, 150, 30), "gpu", 24) == (160, 160, 32)  # the median, rounded to 32
    for median, memory in [((150, 150, 30), 8), ((300, 300, 300), 24), ((512, 512, 40), 80), ((90, 70, 100), 16)]:
        roi = plan_roi_size(median, "gpu", memory)
        assert all(s % 32 == 0 and s >= 32 for s in roi) and max(roi) >= 64, roi
        assert math.prod(roi) <= voxel_budget("gpu", memory)
        assert all(s <= max(64, 32 * round(m / 32)) for s, m in zip(roi, median))


def test_plan_for_ct_on_cpu(ct_fingerprint, ct_data):
    fingerprint, task, _ = ct_fingerprint
    config = plan(fingerprint, task, ct_data, "cpu", layout="msd")
    model, data, trainer = config["model"]["init_args"], config["data"]["init_args"], config["trainer"]
    net = model["net"]["init_args"]
    assert net == {"in_channels": 1, "out_channels": 3, "feature_size": 12, "use_checkpoint": False}  # classes
    assert model["roi_size"] == data["roi_size"] == [32, 32, 64]  # tiny cases: one side 64
    assert data["pixdim"] == pytest.approx([0.8, 0.8, 2.65]) and data["augment"] == "nnunet"
    assert data["bias_field"] is None  # CT: intensities in HU, no bias field
    assert data["data_dir"] == str(ct_data) and data["task"]["classes"] == ["organ", "lesion"]
    [channel] = data["task"]["channels"]
    stats = fingerprint["channels"][0]
    assert channel["window"] == pytest.approx([stats["p0.5"], stats["p99.5"]], rel=1e-5)
    assert (trainer["max_steps"], trainer["limit_val_batches"], trainer["precision"]) == (400, 0, "32-true")
    assert trainer["default_root_dir"] == trainer["logger"]["init_args"]["save_dir"] == "runs/swin_unetr_toyct"
    wandb = yaml.safe_load((CONFIGS / "logger" / "wandb.yaml").read_text(encoding="utf-8"))
    assert trainer["logger"] == {**wandb, "init_args": {**wandb["init_args"], "save_dir": "runs/swin_unetr_toyct"}}


def test_plan_for_gpu_and_no_resampling_when_spacings_agree(tmp_path):
    root = tmp_path / "brats"
    cases = [write_case(root, f"BraTS2021_0000{i}", blob_label(seed=i), seed=i) for i in range(2)]
    index = read_dataset(root)
    fingerprint = dataset_fingerprint(index.cases, index.task, progress=False)
    assert not needs_resampling([c["spacing"] for c in fingerprint["cases"]], fingerprint["median_spacing"])
    config = plan(fingerprint, index.task, root, "gpu", memory_gib=80, max_steps=2000, name="my run")
    model, data, trainer = config["model"]["init_args"], config["data"]["init_args"], config["trainer"]
    net = model["net"]["init_args"]
    assert net == {
        "in_channels": 4,
        "out_channels": 3,
        "feature_size": 48,
        "use_checkpoint": True,
        "deep_supervision": 3,
    }  # fmt: skip  (regions)
    assert data["pixdim"] is None and data["batch_size"] == 2 and len(cases) == 2
    assert data["bias_field"] == "n4"  # MR channels
    assert data["task"]["regions"] == {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}
    assert (trainer["precision"], trainer["val_check_interval"], trainer["max_steps"]) == ("bf16-mixed", 200, 2000)
    assert trainer["default_root_dir"] == "runs/my_run"


def test_plan_for_ct_on_gpu_trains_with_deep_supervision(ct_fingerprint, ct_data):
    """Classes at feature_size 48: the heads; at 12 (the CPU plan, above) none: a 12-channel last stage lost an
    organ under them on the CT demo."""
    fingerprint, task, _ = ct_fingerprint
    net = plan(fingerprint, task, ct_data, "gpu", memory_gib=80)["model"]["init_args"]["net"]["init_args"]
    assert (net["feature_size"], net["deep_supervision"], task.kind) == (48, 3, "classes")


def test_written_plan_reads_back(ct_fingerprint, ct_data, tmp_path):
    fingerprint, task, _ = ct_fingerprint
    config = plan(fingerprint, task, ct_data, "cpu")
    path = write_plan(config, tmp_path / "plans" / "ct.yaml", ["4 labelled cases"])
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Training plan written by `medseg plan` (medseg ")
    assert "# 4 labelled cases\n" in text and f"medseg fit --config {path}" in text
    assert "roi_size: [32, 32, 64]" in text
    assert yaml.safe_load(text) == config


# ------------------------------------------------------------------------------------------ the command


def test_plan_command_writes_the_config(ct_data, tmp_path, capsys):
    out = tmp_path / "ct.yaml"
    assert plan_command.main([str(ct_data), "--out", str(out), "--device", "cpu", "--max-steps", "50"]) == 0
    printed = capsys.readouterr().out
    assert "ct_0" in printed and "LPS" in printed and "organ" in printed
    assert f"medseg fit --config {out}" in printed
    config = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert config["trainer"]["max_steps"] == 50
    assert config["data"]["init_args"]["layout"] == "msd"
    assert cli.main(["plan", str(ct_data), "--out", str(out)]) == 1  # exists: never overwrites edits unasked
    assert "--force" in capsys.readouterr().err


def test_plan_command_missing_folder(tmp_path, capsys):
    with pytest.raises(LayoutError, match=r"nope: no such folder"):
        plan_command.main([str(tmp_path / "nope"), "--out", str(tmp_path / "p.yaml")])
    assert cli.main(["plan", str(tmp_path / "nope"), "--out", str(tmp_path / "p.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medseg: error: ") and "nope" in err and err.count("\n") == 1
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_lightning_parses_the_plan(ct_fingerprint, ct_data, tmp_path, monkeypatch, capsys, device):
    """The written file is a valid `medseg fit` config (parsed with --print_config; nothing trains)."""
    fingerprint, task, _ = ct_fingerprint
    config = plan(fingerprint, task, ct_data, device)
    if "task" not in inspect.signature(SegmentationDataModule.__init__).parameters:
        del config["data"]["init_args"]["task"]  # a datamodule before tasks: parse the rest
    path = write_plan(config, tmp_path / "plan.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli.MedsegCLI(args=["fit", "--config", str(path), "--print_config"])
    parsed = yaml.safe_load(capsys.readouterr().out)
    assert parsed["model"]["init_args"]["roi_size"] == config["model"]["init_args"]["roi_size"]
    assert parsed["trainer"]["max_steps"] == config["trainer"]["max_steps"]
    assert parsed["data"]["init_args"]["augment"] == "nnunet"
