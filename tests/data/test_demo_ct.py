"""The CT demo generator: seeded, LPS-stored HU volumes, five organs where they belong, phases, layouts, CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.commands.demo_data import main
from medseg.data import demo_ct_anatomy as anat
from medseg.data.demo_ct import LABELS, PHASES, generate_ct_case, generate_ct_dataset

ORGAN = {name: value for value, name in enumerate(anat.ORGANS, start=1)}


@pytest.fixture(scope="module")
def cases():
    return [generate_ct_case(f"abdomen_{i:03d}", seed=(0, i)) for i in range(3)]


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, np.argwhere(mask).mean(axis=0))


def test_same_seed_same_case_other_index_other_case():
    a, b = (generate_ct_case("a", seed=(7, 3)) for _ in range(2))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.phase == b.phase and a.hu == b.hu

    c = generate_ct_case("a", seed=(7, 4))
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.affine, c.affine)


def test_geometry_is_lps_anisotropic_and_small(cases):
    for case in cases:
        assert nib.aff2axcodes(case.affine) == ("L", "P", "S")
        np.testing.assert_allclose(case.affine[:3, :3], np.diag([-1, -1, 1]) * case.spacing)  # diag(-sx, -sy, sz)
        assert np.abs(case.affine[:3, 3]).max() > 1  # a non-zero origin
        sx, sy, sz = case.spacing
        assert sx == pytest.approx(sy) and 2.4 <= sx <= 3.2 and 4.0 <= sz <= 6.0
        assert case.image.shape[:2] == (120, 96) and 40 <= case.image.shape[2] <= 50
        assert case.image.shape == case.label.shape
        assert case.image.dtype == np.int16 and case.label.dtype == np.uint8
        fov = np.array(case.image.shape) * case.spacing
        assert 280 < fov[0] < 390 and 220 < fov[1] < 310 and 190 < fov[2] < 250
    assert len({c.spacing for c in cases}) == len(cases)  # spacing varies per case


def test_hounsfield_units(cases):
    for case in cases:
        img, tissue = case.image, case.tissue
        assert img.min() >= -1024
        assert np.all(img[[0, -1]] == -1000) and np.all(img[:, [0, -1]] == -1000)  # air at the edges
        assert (img == -1000).mean() > 0.1
        bone = img[np.isin(tissue, (anat.CORTICAL, anat.CANCELLOUS))]
        assert np.median(bone) > 250 and img.max() > 500
        assert -130 < np.median(img[tissue == anat.FAT]) < -70
        assert 30 < np.median(img[tissue == anat.MUSCLE]) < 80
        assert np.median(img[tissue == anat.LUNG]) < -700
        assert (img[tissue == anat.GAS] < -500).any()  # a few gas pockets in the bowel
        assert 8 <= case.noise_hu <= 20
    assert {c.phase for c in cases} <= set(PHASES)


def test_contrast_phases_change_organ_hu_not_anatomy():
    by_phase = {p: generate_ct_case("p", seed=(0, 5), phase=p) for p in PHASES}
    labels = [c.label for c in by_phase.values()]
    np.testing.assert_array_equal(labels[0], labels[1])
    np.testing.assert_array_equal(labels[0], labels[2])

    def mean(phase, organ):  # inside the organ, one voxel in from its edge, away from partial volume
        case = by_phase[phase]
        inside = ndimage.binary_erosion(case.label == ORGAN[organ], np.ones((3, 3, 1), bool))
        return float(case.image[inside].mean())

    for organ in anat.ORGANS:  # without contrast every organ is 40-60 HU, give or take blur and noise
        assert 25 < mean("non_contrast", organ) < 70, organ
    assert mean("portal_venous", "liver") > mean("non_contrast", "liver") + 30
    assert mean("arterial", "aorta") > mean("portal_venous", "aorta") > mean("non_contrast", "aorta") + 70
    for kidney in ("kidney_right", "kidney_left"):
        assert min(mean("arterial", kidney), mean("portal_venous", kidney)) > mean("non_contrast", kidney) + 70
    assert mean("arterial", "spleen") > mean("non_contrast", "spleen") + 40
    spleen = labels[0] == ORGAN["spleen"]
    assert by_phase["arterial"].image[spleen].std() > by_phase["portal_venous"].image[spleen].std()  # heterogeneous
    with pytest.raises(ValueError, match="phase"):
        generate_ct_case("p", seed=0, phase="delayed")


def test_every_case_has_five_organs_liver_largest(cases):
    for case in cases:
        ml = np.bincount(case.label.ravel(), minlength=6) * np.prod(case.spacing) / 1000
        assert set(np.unique(case.label)) == set(range(6)), case.case_id
        assert ml[1] == ml[1:].max()
        assert 250 < ml[1] < 2500 and 20 < ml[2] < 600 and 30 < ml[5] < 250
        assert 40 < ml[3] < 300 and 40 < ml[4] < 300
        organs = case.label > 0
        assert np.isin(case.tissue[organs], (anat.LIVER, anat.SPLEEN, anat.CORTEX, anat.MEDULLA, anat.AORTA)).all()


def test_liver_on_the_patients_right_spleen_on_the_left(cases):
    # nibabel's world is RAS+: +x points to the patient's Right (the identity affine reads as R, A, S).
    assert nib.aff2axcodes(np.eye(4))[0] == "R"
    for case in cases:
        world = {name: _world_centroid(case.label == value, case.affine) for name, value in ORGAN.items()}
        body = _world_centroid(case.image > -500, case.affine)
        assert world["liver"][0] > 0 and world["liver"][0] > body[0] + 20  # the patient's right
        assert world["spleen"][0] < 0 and world["spleen"][0] < body[0] - 40  # the patient's left
        assert world["kidney_right"][0] > body[0] > world["kidney_left"][0]
        assert world["aorta"][0] < body[0]  # left of the midline ...
        assert world["aorta"][1] > world["kidney_left"][1]  # ... and in front of the kidneys
        top = max(world["liver"][2], world["spleen"][2])
        assert max(world["kidney_right"][2], world["kidney_left"][2]) < top
        # independently: in nibabel's canonical (RAS) array the liver has the larger first index
        canonical = nib.as_closest_canonical(nib.Nifti1Image(case.label, case.affine))
        label = np.asarray(canonical.dataobj)
        assert np.argwhere(label == 1)[:, 0].mean() > np.argwhere(label == 2)[:, 0].mean()


def test_msd_layout_and_held_out_cases(tmp_path):
    out = tmp_path / "msd"
    images = generate_ct_dataset(out, 2, seed=0, held_out=1)
    assert [p.relative_to(out).as_posix() for p in images] == [
        "imagesTr/abdomen_000.nii.gz", "imagesTr/abdomen_001.nii.gz", "imagesTs/abdomen_002.nii.gz"
    ]  # fmt: skip
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["name"] == "DemoAbdomenCT" and meta["modality"] == {"0": "CT"}
    assert meta["labels"] == LABELS == {
        "0": "background", "1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left", "5": "aorta"
    }  # fmt: skip
    assert meta["numTraining"] == 2
    assert meta["training"][0] == {"image": "./imagesTr/abdomen_000.nii.gz", "label": "./labelsTr/abdomen_000.nii.gz"}
    assert meta["test"] == ["./imagesTs/abdomen_002.nii.gz"]
    for entry in meta["training"]:
        assert (out / entry["image"]).is_file() and (out / entry["label"]).is_file()
    assert (out / "labelsTs" / "abdomen_002.nii.gz").is_file() and not (out / "dataset_0.json").exists()

    img = nib.load(out / "imagesTr" / "abdomen_001.nii.gz")
    case = generate_ct_case("abdomen_001", seed=(0, 1))
    assert img.get_data_dtype() == np.int16 and nib.aff2axcodes(img.affine) == ("L", "P", "S")
    np.testing.assert_array_equal(np.asarray(img.dataobj), case.image)
    np.testing.assert_allclose(img.affine, case.affine, atol=1e-4)
    assert nib.load(out / "labelsTs" / "abdomen_002.nii.gz").get_data_dtype() == np.uint8

    # a case depends on (seed, index) alone: held-out abdomen_002 is training case abdomen_002 of another run
    generate_ct_dataset(tmp_path / "other", 1, seed=0, start_index=2)
    other = tmp_path / "other" / "imagesTr" / "abdomen_002.nii.gz"
    assert other.read_bytes() == (out / "imagesTs" / "abdomen_002.nii.gz").read_bytes()


def test_btcv_layout_moves_a_validation_split(tmp_path):
    generate_ct_dataset(tmp_path, 3, seed=1, layout="btcv", held_out=1)
    meta = json.loads((tmp_path / "dataset_0.json").read_text(encoding="utf-8"))
    assert not (tmp_path / "dataset.json").exists()
    assert meta["labels"] == LABELS and meta["modality"] == {"0": "CT"} and meta["description"]
    assert len(meta["validation"]) == 1 and len(meta["training"]) == 2
    train = {e["image"] for e in meta["training"]}
    assert train.isdisjoint(e["image"] for e in meta["validation"])
    for entry in meta["training"] + meta["validation"]:
        assert entry["image"].startswith("imagesTr/") and entry["label"].startswith("labelsTr/")
        assert (tmp_path / entry["image"]).is_file() and (tmp_path / entry["label"]).is_file()
    assert meta["test"] == ["imagesTs/abdomen_003.nii.gz"] and (tmp_path / meta["test"][0]).is_file()
    with pytest.raises(ValueError, match="layout"):
        generate_ct_dataset(tmp_path, 1, layout="brats2021")


def test_cli_writes_ct_and_checks_kind_and_layout(tmp_path, capsys):
    out = tmp_path / "ct"
    args = ["--kind", "ct", "--out", str(out), "--cases", "1", "--held-out", "1", "--seed", "3"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "labelsTs"]
    assert str(out.resolve()) in capsys.readouterr().out
    assert main(args) != 0 and "--overwrite" in capsys.readouterr().err  # the folder holds cases
    assert main([*args, "--overwrite", "--layout", "btcv", "--cases", "0", "--start-index", "7"]) == 0
    meta = json.loads((out / "dataset_0.json").read_text(encoding="utf-8"))
    assert len(meta["training"]) + len(meta["validation"]) == 1 and len(meta["test"]) == 2

    for bad, message in (
        (["--layout", "brats2021"], "is for --kind mri; --kind ct takes msd, btcv"),
        (["--shape", "48", "48", "32"], "--shape apply to --kind mri only"),
        (["--with-skull"], "--with-skull"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--overwrite", *bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "mri"), "--layout", "msd"])  # an mri run with a ct layout
    assert "--layout msd is for --kind ct" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "mri"), "--held-out", "2"])
    assert "--held-out applies to --kind ct only" in capsys.readouterr().err


def test_cli_help_mentions_ct(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--kind" in text and "--held-out" in text and "msd" in text and "btcv" in text and "liver" in text
