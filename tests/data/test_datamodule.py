import json

import pytest
from conftest import blob_label, write_case

from medseg.data.datamodule import BratsDataModule
from medseg.errors import LayoutError


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    cases = [write_case(root, f"BraTS2021_0000{i}", blob_label(seed=i), seed=i) for i in range(4)]
    return root, cases


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_cache_modes_give_the_same_batches(dataset, tmp_path, cache):
    root, _ = dataset
    dm = BratsDataModule(
        str(root), roi_size=(16, 16, 16), cache=cache, cache_dir=str(tmp_path / "cache"), val_fraction=0.25
    )
    dm.setup("fit")
    assert len(dm.splits["train"]) == 3 and len(dm.splits["val"]) == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (1, 4, 16, 16, 16) and batch["label"].shape == (1, 3, 16, 16, 16)
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[1] == 4 and val["label"].shape[1] == 3
    if cache == "disk":
        assert any((tmp_path / "cache").iterdir())


def test_datalist_folds_choose_the_validation_cases(dataset, tmp_path):
    root, cases = dataset
    datalist = {"training": [{"image": c["image"], "label": c["label"], "fold": i % 2} for i, c in enumerate(cases)]}
    path = root / "folds.json"
    path.write_text(json.dumps(datalist))
    dm = BratsDataModule(str(root), layout="datalist", datalist=str(path), fold=1, roi_size=(16, 16, 16))
    dm.setup("fit")
    assert [c["case_id"] for c in dm.splits["val"]] == ["BraTS2021_00001", "BraTS2021_00003"]
    with pytest.raises(LayoutError, match="fold 5 not found"):
        BratsDataModule(str(root), layout="datalist", datalist=str(path), fold=5).setup("fit")


def test_disk_cache_needs_a_folder(dataset):
    with pytest.raises(ValueError, match="cache_dir"):
        BratsDataModule(str(dataset[0]), cache="disk")


def test_bias_field_setting_checked_at_construction_and_stored(dataset):
    with pytest.raises(ValueError, match="bias_field must be one of"):
        BratsDataModule(str(dataset[0]), bias_field="N4")
    dm = BratsDataModule(str(dataset[0]), bias_field="n4")
    dm.setup("fit")
    assert dm.hparams.bias_field == "n4"  # in the checkpoint's datamodule hyper-parameters, for medseg predict
    names = [type(t).__name__ for t in dm.transform(train=False).transforms]
    assert names[:3] == ["LoadCased", "Orientationd", "BiasFieldCorrectiond"]


def test_disk_cache_entries_differ_with_the_bias_field_setting(dataset, tmp_path):
    hashes = []
    for bias_field in ("n4", None):
        dm = BratsDataModule(str(dataset[0]), cache="disk", cache_dir=str(tmp_path), bias_field=bias_field)
        dm.setup("fit")
        hashes.append(dm._dataset(dm.splits["train"], dm.transform(train=False)).transform_hash)
    assert hashes[0] != hashes[1]
