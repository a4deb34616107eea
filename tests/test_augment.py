"""Training augmentation (medseg.data.augment): presets, overrides, determinism, labels kept integer and
aligned with the image, the light preset equal to the transforms training had before, config parsing."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from medseg.cli import MedsegCLI
from medseg.data.augment import PRESETS, augment_spec, augmentations, crop_size
from medseg.data.datamodule import SegmentationDataModule
from medseg.data.transforms import preprocessing, train_transforms

CLASSES = {"name": "organs", "channels": [{"name": "CT", "kind": "CT", "window": [-100, 200]}],
           "labels": {"liver": 1, "spleen": 2}}  # fmt: skip
SPATIAL_ONLY = {"preset": "none", "rotate": {"prob": 1.0}, "scale": {"prob": 1.0}}
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _types(transforms) -> list[str]:
    return [type(t).__name__ for t in transforms]


def _smooth_volume(size: int, seed: int = 0) -> torch.Tensor:
    """A few broad Gaussian blobs [1, S, S, S] in [0, 1]: smooth, so a threshold of it is a blobby label."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij")).astype(np.float32)  # [3, S, S, S]
    volume = np.zeros((size,) * 3, np.float32)
    for _ in range(4):
        centre = rng.uniform(0.2 * size, 0.8 * size, 3)[:, None, None, None]
        volume += np.exp(-((grid - centre) ** 2).sum(0) / (2 * (size / 6) ** 2))
    return torch.from_numpy(volume / volume.max())[None]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("task", ["brats2021", CLASSES])
def test_every_preset_builds(preset, task):
    transforms = augmentations(preset, task, (32, 32, 32))
    assert all(hasattr(t, "set_random_state") for t in transforms)  # Randomizable: reseeded per step
    size = crop_size(augment_spec(preset), (32, 32, 32))
    data = {"image": torch.randn(2, *size), "label": (torch.rand(1, *size) > 0.5).float()}
    out = Compose(transforms)(data)
    assert out["image"].shape == (2, 32, 32, 32) and out["label"].shape == (1, 32, 32, 32)


def test_nnunet_preset_is_nnunets():
    transforms = _types(augmentations("nnunet", "brats2021", (64, 64, 64)))
    assert transforms == [
        "OneOf", "RandGaussianNoised", "RandGaussianSmoothd", "RandScaleIntensityd", "RandScaleIntensityFixedMeand",
        "RandSimulateLowResolutiond", "RandAdjustContrastd", "RandAdjustContrastd", *["RandFlipd"] * 3,
    ]  # fmt: skip
    spatial = augmentations("nnunet", "brats2021", (64, 64, 64))[0]
    assert sorted(np.round(spatial.weights, 4)) == [0.04, 0.16, 0.16, 0.64]  # rotation and scaling at 0.2 each
    assert "Rand3DElasticd" not in _types(spatial.transforms)  # elastic: off unless asked for
    assert crop_size(augment_spec("nnunet"), (64, 64, 64)) == (90, 90, 90)  # zoom out to 1.4
    assert crop_size(augment_spec("light"), (64, 64, 64)) == (64, 64, 64)


def test_anisotropic_roi_rotates_in_plane_only():
    spec = augment_spec({"preset": "none", "rotate": {"prob": 1.0}})
    assert crop_size(spec, (160, 160, 32)) == (227, 227, 32)  # +-180 degrees about the short axis: the diagonal
    rotation = augmentations(spec, "brats2021", (160, 160, 32))[0].transforms[0]
    assert np.allclose(rotation.rand_affine.rand_affine_grid.rotate_range, [0.0, 0.0, np.pi])


def test_dict_overrides_single_entries():
    spec = augment_spec({"preset": "nnunet", "elastic": {"prob": 0.2}, "gamma": {"range": [0.8, 1.2]}})
    assert spec["elastic"]["prob"] == 0.2 and spec["elastic"]["sigma"] == [9.0, 13.0]
    assert spec["gamma"] == {"prob": 0.3, "range": [0.8, 1.2]}
    assert spec["rotate"]["prob"] == 0.2  # the rest is the preset's
    assert augment_spec({"mirror": {"prob": 0.0}})["noise"]["prob"] == 0.1  # the preset defaults to nnunet
    assert augment_spec({"preset": "light", "noise": {"prob": 0.1}})["jitter"]["prob"] == 1.0
    spatial = augmentations({"elastic": {"prob": 0.2}}, "brats2021", (32, 32, 32))[0]
    assert _types(spatial.transforms).count("Rand3DElasticd") == 4 and abs(sum(spatial.weights) - 1) < 1e-6
    for bad, message in [
        ("heavy", "unknown preset 'heavy'"),
        ({"elastik": {"prob": 0.1}}, "unknown entry 'elastik'"),
        ({"gamma": {"p": 0.1}}, r"augment.gamma: unknown fields \['p'\]"),
        ({"blur": {"prob": 1.5}}, "augment.blur.prob must be within"),
        ({"blur": 0.5}, "augment.blur: expected a mapping"),
    ]:
        with pytest.raises(ValueError, match=message):
            augment_spec(bad)
    with pytest.raises(ValueError, match="elastik"):  # at construction, before any data is read
        SegmentationDataModule("/nowhere", augment={"elastik": {"prob": 0.1}})


def test_histogram_shift_is_an_opt_in_monotone_remap():
    assert "RandHistogramShiftd" not in _types(augmentations("nnunet", "brats2021", (32, 32, 32)))
    spec = {"preset": "none", "histogram_shift": {"prob": 1.0, "control_points": [6, 6]}}
    (shift,) = augmentations(spec, "brats2021", (32, 32, 32))
    shift.set_random_state(0)
    image = torch.linspace(-2.0, 3.0, 2 * 32**3).reshape(2, 32, 32, 32)
    out = shift({"image": image, "label": torch.zeros(1, 32, 32, 32)})
    values = torch.as_tensor(out["image"]).flatten()
    assert not torch.allclose(values, image.flatten())  # remapped
    assert bool((values.diff() >= -1e-6).all())  # but the intensities keep their order
    assert float(values.min()) == pytest.approx(-2.0) and float(values.max()) == pytest.approx(3.0)
    fixed = augmentations(
        {"preset": "none", "histogram_shift": {"prob": 1.0, "control_points": 6}}, "brats2021", (8,) * 3
    )
    assert fixed[0].shifter.num_control_points == (6, 6)


def test_classes_tasks_are_not_mirrored_by_default():
    assert _types(augmentations("nnunet", "brats2021", (32, 32, 32))).count("RandFlipd") == 3
    assert "RandFlipd" not in _types(augmentations("nnunet", CLASSES, (32, 32, 32)))
    assert "RandFlipd" not in _types(augmentations("light", CLASSES, (32, 32, 32)))
    flips = [t for t in augmentations({"mirror": {"axes": [2]}}, CLASSES, (32, 32, 32)) if isinstance(t, RandFlipd)]
    assert [f.flipper.spatial_axis for f in flips] == [2]  # asked for: along S only


def test_nnunet_preset_is_deterministic_under_set_random_state(tiny_case):
    transform = train_transforms("brats2021", (16, 16, 16), augment="nnunet")

    def sample(seed):
        transform.set_random_state(seed=seed)
        return transform(tiny_case)[0]

    outputs = [sample(seed) for seed in range(6)]
    again = [sample(seed) for seed in range(6)]
    for a, b in zip(outputs, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert len({float(o["image"].sum()) for o in outputs}) > 1  # and the seed matters


def test_spatial_augmentation_keeps_labels_integer():
    size = crop_size(augment_spec(SPATIAL_ONLY), (24, 24, 24))
    image = _smooth_volume(size[0])
    regions = torch.cat([image > 0.3, image > 0.6]).float()  # [2, S, S, S] nested, 0/1
    classes = (image > 0.3).float() + (image > 0.6).float()  # [1, S, S, S] indices 0, 1, 2
    for task, label in (("brats2021", regions), (CLASSES, classes)):
        transform = Compose(augmentations(SPATIAL_ONLY, task, (24, 24, 24)))
        for seed in range(4):
            transform.set_random_state(seed=seed)
            out = transform({"image": image.clone(), "label": label.clone()})["label"]
            assert set(torch.unique(out).tolist()) <= {0.0, 1.0, 2.0} and out.max() >= 1
            assert set(torch.unique(out).tolist()) <= set(torch.unique(label).tolist())


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("task", ["brats2021", CLASSES])
def test_image_and_label_stay_aligned(task):
    """The label is a threshold of the image; after rotation, scaling and mirroring it still is: closer than
    the same label moved by one voxel along any axis (nearest against linear interpolation differs at the
    boundary only)."""
    spec = {**SPATIAL_ONLY, "mirror": {"prob": 0.5, "axes": [0, 1, 2]}}
    size = crop_size(augment_spec(spec), (32, 32, 32))
    image = _smooth_volume(size[0], seed=1)
    centre = image[(slice(None), *[slice((s - 32) // 2, (s - 32) // 2 + 32) for s in size])]
    transform = Compose(augmentations(spec, task, (32, 32, 32)))
    for seed in range(5):
        transform.set_random_state(seed=seed)
        out = transform({"image": image.clone(), "label": (image > 0.5).float()})
        again, label = out["image"] > 0.5, out["label"].bool()
        moved = max(_dice(again, torch.roll(label, shift, axis)) for shift in (-1, 1) for axis in (1, 2, 3))
        assert label.sum() > 1000 and _dice(again, label) > max(0.94, moved + 0.03)
        assert not torch.allclose(out["image"], centre, atol=0.05)  # it did move


def _old_train_transforms(roi_size):
    """Training transforms of a regions task as they were before the presets (commit 4bb6bb3)."""
    keys = ["image", "label"]
    crop = RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=roi_size, pos=0.5, neg=0.5,
                                  num_samples=1, image_key="image", image_threshold=0.0)  # fmt: skip
    return Compose([
        *preprocessing("brats2021"), SpatialPadd(keys=keys, spatial_size=roi_size), crop,
        *[RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(3)],
        RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
        EnsureTyped(keys=keys, track_meta=False),
    ])  # fmt: skip


def test_light_preset_is_the_former_training_transforms(tiny_case):
    light, old = train_transforms("brats2021", (16, 16, 16), augment="light"), _old_train_transforms((16, 16, 16))
    for seed in range(4):
        light.set_random_state(seed=seed)
        old.set_random_state(seed=seed)
        a, b = light(tiny_case)[0], old(tiny_case)[0]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def _printed(tmp_path, monkeypatch, capsys, *args) -> dict:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        MedsegCLI(args=["fit", "--config", str(CONFIGS / "swin_unetr_demo.yaml"), *args, "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]


def test_config_takes_augment_as_a_name_or_a_dict(tmp_path, monkeypatch, capsys):
    assert _printed(tmp_path, monkeypatch, capsys)["augment"] == "light"  # the demo keeps its documented results
    assert _printed(tmp_path, monkeypatch, capsys, "--data.init_args.augment", "nnunet")["augment"] == "nnunet"
    override = "{preset: nnunet, elastic: {prob: 0.2}}"
    parsed = _printed(tmp_path, monkeypatch, capsys, "--data.init_args.augment", override)["augment"]
    assert parsed == {"preset": "nnunet", "elastic": {"prob": 0.2}}
    config = tmp_path / "augment.yaml"
    config.write_text("data:\n  init_args:\n    augment:\n      preset: light\n      gamma: {prob: 0.3}\n")
    parsed = _printed(tmp_path, monkeypatch, capsys, "--config", str(config))["augment"]
    assert parsed == {"preset": "light", "gamma": {"prob": 0.3}}
