"""data.random_roi: a crop size per batch, drawn from (seed, step), the same for every item of a batch;
off by default; the largest side reaches predict's window plan through the checkpoint."""

from __future__ import annotations

import pytest
import torch
from conftest import blob_label, write_case

from medseg.data.datamodule import SegmentationDataModule
from medseg.data.random_roi import draw_roi, roi_sides


def test_sides_are_the_multiples_of_32_in_the_range():
    assert roi_sides([64, 192]) == (64, 96, 128, 160, 192)
    assert roi_sides([70, 130]) == (96, 128)
    for bad, match in (([32, 96], "at least 64"), ([100, 120], "no multiple"), ([128, 64], "min <= max")):
        with pytest.raises(ValueError, match=match):
            roi_sides(bad)


def test_draw_depends_on_seed_and_step_alone():
    sides = roi_sides([64, 192])
    draws = [draw_roi(0, step, sides) for step in range(40)]
    assert draws == [draw_roi(0, step, sides) for step in range(40)]
    assert all(s in sides for roi in draws for s in roi)
    assert len(set(draws)) > 20 and {s for roi in draws for s in roi} == set(sides)  # every side, per axis
    assert draws != [draw_roi(1, step, sides) for step in range(40)]


def _batches(root, n: int, passes: int = 1, **kwargs) -> list[dict]:
    """The first ``n`` batches of the training stream, ``passes`` times over the same datamodule."""
    dm = SegmentationDataModule(str(root), batch_size=2, val_fraction=0.0, augment="light", **kwargs)
    dm.setup("fit")
    loader = dm.train_dataloader()
    return [batch for _ in range(passes) for batch, _ in zip(loader, range(n))]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("random_roi")
    for i in range(4):  # two batches of two per epoch
        write_case(root, f"BraTS2021_0000{i}", blob_label(shape=(40, 30, 20), seed=i), seed=i)
    return root


def test_each_batch_has_its_drawn_size(dataset):
    batches = _batches(dataset, 2, roi_size=(16, 16, 16), random_roi=(64, 96), cache="none")
    sides = roi_sides([64, 96])
    for step, batch in enumerate(batches):
        roi = draw_roi(0, step, sides)
        assert batch["image"].shape == (2, 4, *roi) and batch["label"].shape == (2, 3, *roi)
    assert any(b["label"].sum() > 0 for b in batches)  # crops still find the tumour


def test_cached_and_uncached_streams_agree(dataset):
    """The memory cache hands out its item itself: the crops must not change it (two passes agree)."""
    none = _batches(dataset, 1, roi_size=(16, 16, 16), random_roi=(64, 96), cache="none")
    memory = _batches(dataset, 1, passes=2, roi_size=(16, 16, 16), random_roi=(64, 96), cache="memory")
    for a, b in zip(none + none, memory):
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["label"], b["label"])


def test_off_by_default(dataset):
    dm = SegmentationDataModule(str(dataset), roi_size=(16, 16, 16))
    assert dm.hparams.random_roi is None
    [batch] = _batches(dataset, 1, roi_size=(16, 16, 16))
    assert batch["image"].shape == (2, 4, 16, 16, 16)
    with pytest.raises(ValueError, match="random_roi"):
        SegmentationDataModule(str(dataset), random_roi=(16, 32))


def test_predict_plans_up_to_the_training_roi_even_after_random_crops(monkeypatch):
    from medseg.inference import segment
    from medseg.modules.segmentation import SegmentationModule

    def loaded(checkpoints):
        module = SegmentationModule(net=torch.nn.Conv3d(4, 3, 1), roi_size=(64, 64, 64))
        return [module], {"label_convention": "brats2021", "random_roi": [64, 160]}

    monkeypatch.setattr(segment, "load_ensemble", loaded)
    assert segment.Predictor.from_checkpoints(["x.ckpt"], device="cpu").max_window is None  # the roi
    given = segment.Predictor.from_checkpoints(["x.ckpt"], device="cpu", max_window=96)
    assert given.max_window == (96, 96, 96)
