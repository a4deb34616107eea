"""Tasks: presets, the dict form, label maps <-> targets, and tasks read from dataset.json labels."""

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.cases import dataset_channels
from medseg.data.guess_convention import task_from_labels
from medseg.errors import LayoutError
from medseg.tasks import MODALITIES, PRESETS, Channel, get_task, guess_kind, task_for_checkpoint

SOURCE = Path("dataset.json")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_label_maps(name):
    task = get_task(name)
    assert task.channel_names == MODALITIES and task.kind == "regions"
    rng = np.random.default_rng(0)
    label = torch.as_tensor(rng.choice(task.values, size=(6, 5, 4)))
    masks = task.to_masks(label)  # [R, 6, 5, 4]
    for i, region in enumerate(task.outputs):  # each region is the set of its values, brute force
        assert torch.equal(masks[i], torch.as_tensor(np.isin(label.numpy(), task.regions[region])))
    # writing the masks back gives a label map with the same masks (painting may merge sub-labels of one region)
    assert torch.equal(task.to_masks(task.from_masks(masks)), masks)
    assert get_task(task.to_dict()) == task


def test_brats_paint_orders_are_the_datasets_values():
    assert PRESETS["brats2021"].paint == (("WT", 2), ("TC", 1), ("ET", 4))
    assert PRESETS["msd"].paint == (("WT", 1), ("TC", 2), ("ET", 3))
    post = PRESETS["brats2024-gli-post"]
    assert post.outputs == ("WT", "TC", "ET", "RC") and post.paint == (("WT", 2), ("TC", 1), ("ET", 3), ("RC", 4))
    label = torch.tensor([0, 1, 2, 3, 4])
    assert post.from_masks(post.to_masks(label)).tolist() == [0, 1, 2, 3, 4]  # every value survives, 4 included


def test_classes_map_values_to_indices_and_back():
    task = get_task({"name": "abdomen", "channels": ["CT"], "labels": {"liver": 1, "spleen": 6, "aorta": 300}})
    assert task.kind == "classes" and task.classes == ("liver", "spleen", "aorta") and task.out_channels == 4
    assert task.channels == (Channel("CT", "CT"),)
    label = torch.tensor([0, 1, 6, 300, 6])
    index = task.to_class_index(label)
    assert index.tolist() == [0, 1, 2, 3, 2]
    assert task.from_class_index(index).tolist() == label.tolist()  # int16: 300 does not fit uint8
    assert task.to_masks(label).int().tolist() == [[0, 1, 0, 0, 0], [0, 0, 1, 0, 1], [0, 0, 0, 1, 0]]
    assert task.unexpected_values(torch.tensor([0, 2, 6])) == [2]


def test_bad_tasks_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown task 'brats1999'.*brats2021"):
        get_task("brats1999")
    with pytest.raises(ValueError, match="region WT holds \\[7\\]"):
        get_task({"channels": ["t1"], "labels": {"a": 1}, "regions": {"WT": [7]}})
    with pytest.raises(ValueError, match="kind 'PET'"):
        get_task({"channels": [{"name": "x", "kind": "PET"}], "labels": {"a": 1}})
    with pytest.raises(ValueError, match="distinct values > 0"):
        get_task({"channels": ["CT"], "labels": {"a": 1, "b": 1}})
    with pytest.raises(ValueError, match="unknown keys \\['organs'\\]"):
        get_task({"channels": ["CT"], "labels": {"a": 1}, "organs": []})


def test_checkpoints_without_a_task_read_as_their_convention():
    assert task_for_checkpoint({"label_convention": "brats2023"}) is PRESETS["brats2023"]
    assert task_for_checkpoint({}) is PRESETS["brats2021"]
    custom = get_task({"name": "x", "channels": ["CT"], "labels": {"liver": 1}})
    assert task_for_checkpoint({"task": custom.to_dict(), "label_convention": None}) == custom


def test_channel_kinds():
    assert [guess_kind(n) for n in ("CT", "ct", "CT_arterial", "T1", "ADC", "act")] == [
        "CT",
        "CT",
        "CT",
        "MR",
        "MR",
        "MR",
    ]


def test_tasks_from_dataset_json_labels():
    ct, order = dataset_channels({"0": "CT"}, SOURCE, "modality")
    msd = task_from_labels({"0": "background", "1": "liver", "2": "tumour"}, ct, "Task03_Liver", SOURCE)
    assert msd.kind == "classes" and msd.labels == {"liver": 1, "tumour": 2} and msd.channels[0].kind == "CT"
    nnunet = task_from_labels({"background": 0, "spleen": 1}, ct, "Dataset009", SOURCE)
    assert nnunet.classes == ("spleen",) and order == [0]
    # brain-tumour channels in MSD order are reordered to MODALITIES; their labels are the msd preset
    mr, order = dataset_channels({"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}, SOURCE, "modality")
    assert [c.name for c in mr] == list(MODALITIES) and order == [1, 2, 3, 0]
    labels = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
    assert task_from_labels(labels, mr, "Task01", SOURCE) is PRESETS["msd"]
    # nnU-Net region-based labels of another dataset: regions with the painting order nnU-Net gives
    labels = {"background": 0, "whole": [1, 2], "inner": [2]}
    regions = task_from_labels(labels, ct, "d", SOURCE, {"regions_class_order": [1, 2]})
    assert regions.kind == "regions" and regions.regions == {"whole": (1, 2), "inner": (2,)}
    assert regions.paint == (("whole", 1), ("inner", 2))
    with pytest.raises(LayoutError, match="no 'labels'"):
        task_from_labels(None, ct, "d", SOURCE)
