"""Layout readers on tiny fake datasets (8x8x8 images written into tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.cases import MODALITIES, MODALITY_ALIASES
from medseg.data.labels import BRATS2021, BRATS2023, MSD
from medseg.data.layouts import detect_layout, read_dataset
from medseg.data.predict_inputs import find_predict_cases
from medseg.errors import CaseError, LayoutError

MSD_MODALITY = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}  # MSD Task01's own order
MSD_ORDER = [1, 2, 3, 0]  # where t1, t1ce, t2, flair sit in an MSD image


def write_image(path: Path, shape=(8, 8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".nii", ".nii.gz")):
        nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)).to_filename(str(path))
    else:
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.uint8)), str(path))
    return path


def make_brats(root: Path, year: int = 2021, ids=None, seg=True, skip=()) -> Path:
    """BraTS case folders; ``skip`` leaves out file suffixes (``t1ce``, ``seg``...)."""
    sep, suffixes = ("_", ("t1", "t1ce", "t2", "flair")) if year == 2021 else ("-", ("t1n", "t1c", "t2w", "t2f"))
    default = ["BraTS2021_00000", "BraTS2021_00001"] if year == 2021 else ["BraTS-GLI-00000-000", "BraTS-GLI-00002-000"]
    ids = ids or default
    for case in ids:
        for suffix in (*suffixes, "seg") if seg else suffixes:
            if suffix not in skip:
                write_image(root / case / f"{case}{sep}{suffix}.nii.gz")
    return root


def make_msd(root: Path, training_list=True, modality=MSD_MODALITY) -> Path:
    labels = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
    meta = {"name": "BRATS", "labels": labels}
    if modality is not None:
        meta["modality"] = modality
    for case in ("BRATS_001", "BRATS_002"):
        write_image(root / "imagesTr" / f"{case}.nii.gz", (8, 8, 8, 4))
        write_image(root / "labelsTr" / f"{case}.nii.gz")
    write_image(root / "imagesTs" / "BRATS_485.nii.gz", (8, 8, 8, 4))
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\0")  # macOS archive residue
    if training_list:
        meta["training"] = [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("BRATS_001", "BRATS_002")
        ]
        meta["test"] = ["./imagesTs/BRATS_485.nii.gz"]
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


NNUNET_LABELS = {"background": 0, "edema": 1, "non_enhancing_and_necrosis": 2, "enhancing_tumor": 3}


def make_nnunet(root: Path, channel_names=None, labels=None, test=("BraTS2021_00005",)) -> Path:
    """nnU-Net raw folder; channels by default in the order FLAIR, T1, T1ce, T2 (not canonical)."""
    channel_names = channel_names or {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    cases = ("BraTS2021_00000", "BraTS2021_00001")
    meta = {"channel_names": channel_names, "labels": labels or NNUNET_LABELS, "file_ending": ".nii.gz"}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for folder, ids in (("imagesTr", cases), ("imagesTs", test)):
        for case in ids:
            for channel in range(len(channel_names)):
                write_image(root / folder / f"{case}_{channel:04d}.nii.gz")
            if folder == "imagesTr":
                write_image(root / "labelsTr" / f"{case}.nii.gz")
    return root


def make_datalist(root: Path, entries=None, name="folds.json") -> Path:
    """MONAI brats21_folds.json style: images listed [flair, t1ce, t1, t2]."""
    if entries is None:
        make_brats(root / "TrainingData", ids=["BraTS2021_00000", "BraTS2021_00001"])
        entries = []
        for fold, case in enumerate(["BraTS2021_00000", "BraTS2021_00001"]):
            images = [f"TrainingData/{case}/{case}_{m}.nii.gz" for m in ("flair", "t1ce", "t1", "t2")]
            entries.append({"fold": fold, "image": images, "label": f"TrainingData/{case}/{case}_seg.nii.gz"})
    path = root / name
    path.write_text(json.dumps({"training": entries}, indent=1))
    return path


def names(case) -> list[str]:
    return [Path(p).name for p in case["image"]]


# ---------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "make, layout",
    [
        (lambda r: make_brats(r, 2021), "brats2021"),
        (lambda r: make_brats(r, 2023), "brats2023"),
        (make_msd, "msd"),
        (make_nnunet, "nnunet"),
        (make_datalist, "datalist"),
    ],
)
def test_detect_each_layout(tmp_path, make, layout):
    made = make(tmp_path / "data")
    assert detect_layout(made) == layout
    assert read_dataset(made).layout == layout


def test_aliases_map_to_canonical():
    assert set(MODALITY_ALIASES.values()) == set(MODALITIES)
    for name, canonical in {"t1n": "t1", "t1c": "t1ce", "t1gd": "t1ce", "t2w": "t2", "t2f": "flair"}.items():
        assert MODALITY_ALIASES[name] == canonical


# ---------------------------------------------------------------------------------------------- each layout


def test_brats2021_cases_in_canonical_order(tmp_path):
    root = make_brats(tmp_path, 2021)
    make_brats(tmp_path, 2021, ids=["BraTS2021_00099"], seg=False)  # validation case: no label
    index = read_dataset(root)
    assert index.convention is BRATS2021 and index.folds() == []
    assert [c["case_id"] for c in index.cases] == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00099"]
    first = index.cases[0]
    assert names(first) == [f"BraTS2021_00000_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
    assert Path(first["label"]).name == "BraTS2021_00000_seg.nii.gz" and Path(first["label"]).is_absolute()
    assert index.cases[2]["label"] is None


def test_brats2023_labels_et_as_3_and_other_cohorts(tmp_path):
    root = make_brats(tmp_path, 2023, ids=["BraTS-GLI-00000-000", "BraTS-MEN-00004-000"])
    index = read_dataset(root)
    assert index.convention is BRATS2023 and index.convention.regions["ET"] == (3,)
    assert names(index.cases[1]) == [f"BraTS-MEN-00004-000-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f")]


@pytest.mark.parametrize("training_list", [True, False])
def test_msd_4d_images_with_channel_order(tmp_path, training_list):
    index = read_dataset(make_msd(tmp_path, training_list=training_list))
    assert index.convention is MSD
    assert [c["case_id"] for c in index.cases] == ["BRATS_001", "BRATS_002", "BRATS_485"]  # no ._BRATS_001
    case = index.cases[0]
    assert Path(case["image"]).name == "BRATS_001.nii.gz" and case["channel_order"] == MSD_ORDER
    assert Path(case["label"]).name == "BRATS_001.nii.gz"
    assert index.cases[2]["label"] is None


def test_nnunet_channels_reordered_and_labels_named(tmp_path):
    index = read_dataset(make_nnunet(tmp_path))  # channels FLAIR, T1, T1ce, T2
    assert index.convention is MSD  # nnU-Net's BraTS conversion: 1 edema, 2 necrosis, 3 enhancing
    case = index.cases[0]
    assert names(case) == ["BraTS2021_00000_0001.nii.gz", "BraTS2021_00000_0002.nii.gz",
                           "BraTS2021_00000_0003.nii.gz", "BraTS2021_00000_0000.nii.gz"]  # fmt: skip
    assert Path(case["label"]).name == "BraTS2021_00000.nii.gz"
    assert [c["label"] is None for c in index.cases] == [False, False, True]  # imagesTs


def test_nnunet_region_based_labels(tmp_path):
    labels = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
    assert read_dataset(make_nnunet(tmp_path, labels=labels)).convention is MSD


def test_nnunet_other_labels_are_classes(tmp_path):
    root = make_nnunet(tmp_path, labels={"background": 0, "lesion": 1})
    task = read_dataset(root).task
    assert task.kind == "classes" and task.classes == ("lesion",) and task.channel_names == MODALITIES
    assert read_dataset(root, label_convention="brats2023").convention is BRATS2023


def test_nnunet_other_channels_keep_their_order(tmp_path):
    root = make_nnunet(tmp_path / "a", channel_names={"0": "T1", "1": "T1ce", "2": "T2", "3": "ADC"})
    index = read_dataset(root)  # not the four brain-tumour modalities: the dataset's own channels, no preset
    assert index.task.channel_names == ("T1", "T1ce", "T2", "ADC") and index.task.kind == "classes"
    assert names(index.cases[0]) == [f"BraTS2021_00000_{n:04d}.nii.gz" for n in range(4)]
    root = make_nnunet(tmp_path / "b", channel_names={"0": "T1", "1": "T1ce", "2": "T2"})
    assert read_dataset(root).task.in_channels == 3
    with pytest.raises(LayoutError, match=r"3 channel\(s\).*brats2021 takes 4"):
        read_dataset(root, label_convention="brats2021")
    root = make_nnunet(tmp_path / "c", channel_names={"0": "T1", "2": "T2"})
    with pytest.raises(LayoutError, match=r"numbered \[0, 2\]"):
        read_dataset(root)


def test_datalist_reordered_to_canonical_with_folds(tmp_path):
    path = make_datalist(tmp_path)
    by_name = read_dataset(tmp_path, datalist="folds.json")  # relative to the data root
    for index in (read_dataset(path), by_name, read_dataset(tmp_path, datalist=path)):
        assert index.layout == "datalist" and index.convention is BRATS2021 and index.root == tmp_path
        assert index.folds() == [0, 1]
        assert [c["case_id"] for c in index.cases] == ["BraTS2021_00000", "BraTS2021_00001"]
        assert names(index.cases[0]) == [f"BraTS2021_00000_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]


def test_datalist_paths_relative_to_given_root(tmp_path):
    make_brats(tmp_path / "data", ids=["BraTS2021_00000"])
    case = "BraTS2021_00000"
    entry = {"image": [f"{case}/{case}_{m}.nii.gz" for m in ("flair", "t1ce", "t1", "t2")], "fold": 2}
    (tmp_path / "lists").mkdir()
    path = make_datalist(tmp_path / "lists", [entry])
    index = read_dataset(tmp_path / "data", datalist=path)
    assert index.cases[0]["label"] is None and index.folds() == [2]
    assert index.cases[0]["image"][0] == str(tmp_path / "data" / case / f"{case}_t1.nii.gz")


def test_datalist_brats2023_names(tmp_path):
    make_brats(tmp_path, 2023, ids=["BraTS-SSA-00001-000"])
    case = "BraTS-SSA-00001-000"
    images = [f"{case}/{case}-{s}.nii.gz" for s in ("t2f", "t1c", "t1n", "t2w")]
    entry = {"image": images, "label": f"{case}/{case}-seg.nii.gz"}
    index = read_dataset(make_datalist(tmp_path, [entry]))
    assert index.convention is BRATS2023 and names(index.cases[0])[0] == f"{case}-t1n.nii.gz"


# ---------------------------------------------------------------------------------------------- forcing, overrides


def test_layout_forced_and_mismatch(tmp_path):
    root = make_brats(tmp_path, 2021)
    assert read_dataset(root, layout="brats2021").layout == "brats2021"
    with pytest.raises(LayoutError, match=r"brats2023 naming.*looks like brats2021"):
        read_dataset(root, layout="brats2023")
    with pytest.raises(LayoutError, match=r"no dataset\.json.*looks like brats2021"):
        read_dataset(root, layout="msd")
    with pytest.raises(LayoutError, match=r"unknown layout 'bids'"):
        read_dataset(root, layout="bids")


def test_label_convention_overrides_layout_default(tmp_path):
    assert read_dataset(make_brats(tmp_path / "a", 2021), label_convention="brats2023").convention is BRATS2023
    assert read_dataset(make_msd(tmp_path / "b"), label_convention="brats2021").convention is BRATS2021


# ---------------------------------------------------------------------------------------------- errors


def test_empty_folder(tmp_path):
    with pytest.raises(LayoutError, match=rf"{tmp_path}: the folder is empty"):
        read_dataset(tmp_path)


def test_folder_matching_no_layout_says_what_was_tried_and_found(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "scans").mkdir()
    with pytest.raises(LayoutError, match=r"tried brats2021.*msd.*found 1 folder \(scans/\) and 1 file \(notes\.txt\)"):
        detect_layout(tmp_path)


def test_missing_modality_names_case_and_file(tmp_path):
    make_brats(tmp_path, 2021, ids=["BraTS2021_00000"])
    make_brats(tmp_path, 2021, ids=["BraTS2021_00007"], skip=("t1ce",))
    with pytest.raises(CaseError, match=r"case BraTS2021_00007: .*missing the t1ce image BraTS2021_00007_t1ce\.nii"):
        read_dataset(tmp_path)


def test_mixed_brats_years(tmp_path):
    make_brats(tmp_path, 2021, ids=["BraTS2021_00000"])
    make_brats(tmp_path, 2023, ids=["BraTS-GLI-00000-000"])
    with pytest.raises(LayoutError, match=r"mixes brats2021 .*BraTS2021_00000.*BraTS-GLI-00000-000"):
        read_dataset(tmp_path)


def test_datalist_missing_file(tmp_path):
    path = make_datalist(tmp_path)
    (tmp_path / "TrainingData" / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").unlink()
    expected = r"case BraTS2021_00001: .*folds\.json: training\[1\]: .*BraTS2021_00001_t2\.nii\.gz' not found"
    with pytest.raises(CaseError, match=expected):
        read_dataset(path)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd"])
def test_datalist_path_escaping_root(tmp_path, bad):
    path = make_datalist(tmp_path)
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["training"][1]["label"] = bad
    path.write_text(json.dumps(meta))
    with pytest.raises(CaseError, match=rf"case BraTS2021_00001: .*training\[1\]: '{bad}' leads outside the data root"):
        read_dataset(path)


def test_datalist_4d_image_without_modality(tmp_path):
    write_image(tmp_path / "BRATS_001.nii.gz", (8, 8, 8, 4))
    with pytest.raises(LayoutError, match=r"folds\.json: no 'modality' naming the input channels"):
        read_dataset(make_datalist(tmp_path, [{"image": "BRATS_001.nii.gz"}]))


def test_msd_without_modality(tmp_path):
    with pytest.raises(LayoutError, match=r"dataset\.json: no 'modality' naming the input channels"):
        read_dataset(make_msd(tmp_path, modality=None), layout="msd")


def test_same_case_twice(tmp_path):
    path = make_datalist(tmp_path)
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["validation"] = [meta["training"][1]]
    path.write_text(json.dumps(meta))
    with pytest.raises(LayoutError, match=r"folds\.json: case BraTS2021_00001 appears twice"):
        read_dataset(path)
    root = make_nnunet(tmp_path / "nn", test=("BraTS2021_00001",))  # in imagesTr and imagesTs
    with pytest.raises(LayoutError, match=r"case BraTS2021_00001 appears twice"):
        read_dataset(root)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "folds.json"
    path.write_text('{"training": [\n  {"image": "a"},\n  oops\n]}')
    with pytest.raises(LayoutError, match=rf"{path}: invalid JSON at line 3"):
        read_dataset(path)


def test_datalist_convention_not_inferable(tmp_path):
    for m in ("flair", "t1ce", "t1", "t2"):
        write_image(tmp_path / "pat1" / f"pat1_{m}.nii.gz")
    entry = {"image": [f"pat1/pat1_{m}.nii.gz" for m in ("flair", "t1ce", "t1", "t2")]}
    path = make_datalist(tmp_path, [entry])
    with pytest.raises(LayoutError, match=r"folds\.json: cannot tell the task from the case names.*pat1.*data\.task"):
        read_dataset(path)
    assert read_dataset(path, label_convention="msd").cases[0]["case_id"] == "pat1"


# ---------------------------------------------------------------------------------------------- predict inputs


def test_predict_four_files_and_case_folder(tmp_path):
    root = make_brats(tmp_path / "d", 2021, ids=["BraTS2021_00000"])
    files = sorted((root / "BraTS2021_00000").glob("*_[tf]*.nii.gz"))  # the four modalities, no seg
    by_files = find_predict_cases(files)
    by_folder = find_predict_cases([root / "BraTS2021_00000"])
    assert by_files == by_folder
    assert by_files[0]["label"] is None and names(by_files[0])[1] == "BraTS2021_00000_t1ce.nii.gz"


def test_predict_folder_of_case_folders(tmp_path):
    cases = find_predict_cases([make_brats(tmp_path, 2023)])
    assert [c["case_id"] for c in cases] == ["BraTS-GLI-00000-000", "BraTS-GLI-00002-000"]
    assert names(cases[0])[3] == "BraTS-GLI-00000-000-t2f.nii.gz"


def test_predict_nnunet_flat_folder(tmp_path):
    for channel in range(4):
        write_image(tmp_path / "plain" / f"case7_{channel:04d}.nii.gz")
    assert names(find_predict_cases([tmp_path / "plain"])[0])[0] == "case7_0000.nii.gz"  # assumed canonical
    root = make_nnunet(tmp_path / "nn")  # dataset.json above imagesTs/: FLAIR, T1, T1ce, T2
    cases = find_predict_cases([root / "imagesTs"])
    assert names(cases[0]) == [f"BraTS2021_00005_{c:04d}.nii.gz" for c in (1, 2, 3, 0)]


def test_predict_4d_files(tmp_path):
    image = write_image(tmp_path / "x" / "subject.nii.gz", (8, 8, 8, 4))
    assert find_predict_cases([image])[0]["channel_order"] == [0, 1, 2, 3]
    root = make_msd(tmp_path / "msd")
    case = find_predict_cases([root / "imagesTs"])[0]
    assert case["case_id"] == "BRATS_485" and case["channel_order"] == MSD_ORDER


def test_predict_other_formats_and_mix(tmp_path):
    for ext, m in zip((".nrrd", ".mha", ".nii", ".nii.gz"), ("t1", "t1ce", "t2", "flair")):
        write_image(tmp_path / "a" / f"pat_{m}{ext}")
    write_image(tmp_path / "b.mha", (8, 8, 8, 4))  # SimpleITK writes a 4-component (vector) image
    make_brats(tmp_path / "c", 2021, ids=["BraTS2021_00003"])
    cases = find_predict_cases([tmp_path / "a", tmp_path / "b.mha", tmp_path / "c", tmp_path / "c" / "BraTS2021_00003"])
    assert [c["case_id"] for c in cases] == ["BraTS2021_00003", "b", "pat"]
    assert names(cases[2]) == ["pat_t1.nrrd", "pat_t1ce.mha", "pat_t2.nii", "pat_flair.nii.gz"]


def test_predict_errors(tmp_path):
    make_brats(tmp_path / "one", 2021, ids=["BraTS2021_00001"])
    make_brats(tmp_path / "two", 2021, ids=["BraTS2021_00001"])
    with pytest.raises(LayoutError, match=r"case BraTS2021_00001 appears twice"):
        find_predict_cases([tmp_path / "one", tmp_path / "two"])
    make_brats(tmp_path / "three", 2021, ids=["BraTS2021_00002"], skip=("flair",))
    with pytest.raises(CaseError, match=r"case BraTS2021_00002: .*missing the flair image"):
        find_predict_cases([tmp_path / "three"])
    plain = write_image(tmp_path / "scan.nii.gz")
    with pytest.raises(CaseError, match=r"case scan: .*scan\.nii\.gz: cannot tell its modality .*shape \(8, 8, 8\)"):
        find_predict_cases([plain])
    with pytest.raises(LayoutError, match=r"nope: no such file or folder"):
        find_predict_cases([tmp_path / "nope"])
