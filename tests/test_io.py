import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import LPS_AFFINE, blob_label, save, write_case

from medseg.data.transforms import LoadCased
from medseg.errors import CaseError
from medseg.io import atomic_path, check_case_files, read_header, write_like


def test_simpleitk_formats_load_like_nifti(tmp_path, tiny_case):
    """The same volume as .nii.gz and as .nrrd/.mha gives the same array and RAS affine."""
    nifti = tiny_case["image"][0]
    image = sitk.ReadImage(nifti)  # SimpleITK converts NIfTI's RAS to ITK's LPS on read
    for suffix in (".nrrd", ".mha"):
        other = str(tmp_path / f"t1{suffix}")
        sitk.WriteImage(image, other)
        a = LoadCased("brats2021")({"case_id": "c", "image": [other] * 4})["image"]
        b = LoadCased("brats2021")({"case_id": "c", "image": [nifti] * 4})["image"]
        np.testing.assert_allclose(a.numpy(), b.numpy())
        np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-5)
        shape, affine = read_header(other)
        assert shape == nib.load(nifti).shape
        np.testing.assert_allclose(affine, LPS_AFFINE, atol=1e-5)


def test_write_like_keeps_geometry_nifti_and_nrrd(tmp_path, tiny_case):
    label = blob_label()
    out = write_like(label, tiny_case["image"][0], tmp_path / "out.nii.gz")
    written = nib.load(str(out))
    assert written.shape == label.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, LPS_AFFINE, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)
    nrrd = tmp_path / "ref.nrrd"
    sitk.WriteImage(sitk.ReadImage(tiny_case["image"][0]), str(nrrd))
    out = write_like(label, nrrd, tmp_path / "from_nrrd.nii.gz")
    np.testing.assert_allclose(nib.load(str(out)).affine, LPS_AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), label)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "case.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "damage, message",
    [
        ("shape", "has shape"),
        ("affine", "affine differs"),
        ("2d", "is 2-D"),
        ("5d", "is 5-D"),
        ("missing", "file not found"),
        ("random", "cannot be read"),
    ],
)
def test_check_case_files_names_case_file_and_problem(tmp_path, damage, message):
    case = write_case(tmp_path, "BraTS2021_00007", blob_label())
    bad = case["image"][2]
    if damage == "shape":
        save(tmp_path / "x.nii.gz", np.ones((5, 5, 5), np.float32)).replace(bad)
    elif damage == "affine":
        shifted = LPS_AFFINE.copy()
        shifted[0, 3] += 1.0
        save(tmp_path / "x.nii.gz", np.ones(blob_label().shape, np.float32), shifted).replace(bad)
    elif damage == "2d":
        save(tmp_path / "x.nii.gz", np.ones((24, 20), np.float32)).replace(bad)
    elif damage == "5d":
        save(tmp_path / "x.nii.gz", np.ones((24, 20, 12, 1, 2), np.float32)).replace(bad)
    elif damage == "missing":
        (tmp_path / "BraTS2021_00007" / "BraTS2021_00007_t2.nii.gz").unlink()
    elif damage == "random":
        with open(bad, "wb") as f:
            f.write(np.random.default_rng(0).bytes(2000))
    with pytest.raises(CaseError, match=message) as info:
        check_case_files(case)
    assert "BraTS2021_00007" in str(info.value) and "t2.nii.gz" in str(info.value)


def test_truncated_file_is_a_case_error(tmp_path):
    case = write_case(tmp_path, "BraTS2021_00008", blob_label())
    path = case["image"][1]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # header intact, voxels cut
    with pytest.raises(CaseError, match="cannot be read") as info:
        LoadCased("brats2021")(case)
    assert "t1ce.nii.gz" in str(info.value)


def test_output_check_passes_over_a_temporary_file_another_run_just_renamed(tmp_path, monkeypatch):
    """Two runs into one folder: a temporary file listed, then renamed onto its output by the other run before
    it is looked at, is no error."""
    from pathlib import Path

    from medseg.io import check_output_dir

    gone = tmp_path / ".BraTS2021_00000.k3j2.partial.nii.gz"
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter([gone]))
    check_output_dir(tmp_path, [])
