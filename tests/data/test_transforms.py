import numpy as np
import pytest
import torch
from conftest import blob_label, save, write_case

from medseg.data.transforms import LoadCased, eval_transforms, train_transforms
from medseg.errors import CaseError


def test_eval_transforms_give_ras_cropped_regions(tiny_case):
    data = eval_transforms("brats2021")(tiny_case)
    image, label = data["image"], data["label"]
    assert image.shape[0] == 4 and label.shape[0] == 3
    assert image.shape[1:] == label.shape[1:]
    assert image.shape[1:] == (20, 16, 10)  # the head box, background cropped
    raw = blob_label()
    assert int(label[1].sum()) == int((raw > 0).sum())  # WT
    assert int(label[2].sum()) == int((raw == 4).sum())  # ET
    assert int(label[0].sum()) == int(np.isin(raw, (1, 4)).sum())  # TC
    # RAS: the affine's diagonal is positive after Orientationd
    assert (torch.diagonal(image.affine[:3, :3]) > 0).all()
    # non-zero, channel-wise normalisation
    head = image[3] != 0
    assert abs(float(image[3][head].mean())) < 1e-3


def test_train_transforms_crop_roi(tiny_case):
    samples = train_transforms("brats2021", roi_size=(16, 16, 16))(tiny_case)
    sample = samples[0]
    assert sample["image"].shape == (4, 16, 16, 16) and sample["label"].shape == (3, 16, 16, 16)


def test_et_written_as_3_is_refused_not_silently_empty(tmp_path):
    label = blob_label()
    label[label == 4] = 3  # a BraTS 2023 label read as BraTS 2021
    case = write_case(tmp_path, "BraTS2021_00002", label)
    with pytest.raises(CaseError, match=r"values \[3\].*brats2021") as info:
        LoadCased("brats2021")(case)
    assert "BraTS2021_00002_seg.nii.gz" in str(info.value)


@pytest.mark.parametrize("value, message", [(np.nan, "NaN/Inf"), (np.inf, "NaN/Inf"), (0.0, "every voxel is 0")])
def test_bad_voxels_are_case_errors(tmp_path, value, message):
    case = write_case(tmp_path, "BraTS2021_00003", blob_label())
    array = np.ones(blob_label().shape, np.float32)
    if value == 0.0:
        array[:] = 0
    else:
        array[3, 3, 3] = value
    save(tmp_path / "BraTS2021_00003" / "BraTS2021_00003_flair.nii.gz", array)
    with pytest.raises(CaseError, match=message) as info:
        LoadCased("brats2021")(case)
    assert "flair.nii.gz" in str(info.value) and "BraTS2021_00003" in str(info.value)


def test_wrong_number_of_modalities(tiny_case):
    case = dict(tiny_case, image=tiny_case["image"][:3])
    with pytest.raises(CaseError, match="3 image files; expected 4"):
        LoadCased("brats2021")(case)
