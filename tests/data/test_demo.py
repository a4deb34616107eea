"""The demo generator: seeded, nested labels, separate lesions, the contrasts it promises, files and CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.commands.demo_data import main
from medseg.data.cases import MODALITIES
from medseg.data.demo import generate_case, generate_dataset, write_case
from medseg.data.demo_anatomy import CSF, GM, WM
from medseg.data.labels import BRATS2021

SHAPE = (48, 48, 32)
FULL = np.ones((3, 3, 3), bool)  # 26-connectivity


@pytest.fixture(scope="module")
def cases():
    """Three tiny default cases (one lesion, enhancing, necrotic with p = 0.8) and one with necrosis forced."""
    # with the skull, so every tissue of the story is visible
    out = [generate_case(f"case{i}", seed=(0, i), shape=SHAPE, skull_stripped=False) for i in range(3)]
    return [*out, generate_case("necrotic", seed=(0, 99), shape=SHAPE, p_necrosis=1.0, skull_stripped=False)]


def test_same_seed_same_case_other_seed_other_case():
    a, b = (generate_case("a", seed=(7, 3), shape=SHAPE) for _ in range(2))
    for m in MODALITIES:
        np.testing.assert_array_equal(a.images[m], b.images[m])
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.lesions == b.lesions

    c = generate_case("a", seed=(7, 4), shape=SHAPE)
    assert not np.array_equal(a.label, c.label)
    assert not np.allclose(a.images["t1"], c.images["t1"])


def test_arrays_follow_the_contract(cases):
    for case in cases:
        assert case.label.shape == SHAPE and case.label.dtype == np.uint8
        assert set(np.unique(case.label)) <= set(BRATS2021.values)
        for m in MODALITIES:
            img = case.images[m]
            assert img.shape == SHAPE and img.dtype == np.float32
            assert img.min() >= 0 and np.all(img[case.tissue == 0] == 0)  # background 0 outside the head
        json.dumps(case.lesions)  # JSON-serialisable


def test_default_lesion_is_one_enhancing_nested_tumour(cases):
    for case in cases:
        assert len(case.lesions) == 1
        lesion = case.lesions[0]
        assert lesion["enhancing"]
        regions = BRATS2021.to_regions(case.label).numpy().astype(bool)  # [3, X, Y, Z] TC, WT, ET
        tc, wt, et = regions
        assert et.any() and tc.sum() < wt.sum() and not (et & ~tc).any() and not (tc & ~wt).any()
        assert lesion["necrotic"] == bool((case.label == 1).any())
        # The enhancing rim encloses the necrosis: no necrotic voxel touches edema or healthy tissue.
        necrosis = case.label == 1
        assert not (ndimage.binary_dilation(necrosis, FULL) & ~tc).any()
    assert cases[-1].lesions[0]["necrotic"]


def test_necrosis_and_rim_are_thick_enough_to_learn():
    case = generate_case("n", seed=(1, 2), p_necrosis=1.0)  # default shape and spacing
    spacing = np.array(case.spacing)
    necrosis, tc = case.label == 1, case.label != 0
    tc &= case.label != 2
    assert ndimage.distance_transform_edt(necrosis, sampling=spacing).max() >= 2 * spacing.max()
    # Every necrotic voxel lies at least 2 voxels (along the coarsest axis) inside the tumour core.
    depth_in_core = ndimage.distance_transform_edt(tc, sampling=spacing)
    assert depth_in_core[necrosis].min() > 2 * spacing.max() - 1e-6


def test_several_lesions_stay_apart():
    case = generate_case("multi", seed=(2, 0), shape=(64, 64, 48), n_lesions=3, p_enhancing=0.5)
    assert len(case.lesions) == 3
    parts, n = ndimage.label(case.label > 0, FULL)
    assert n == 3  # never touching, not even diagonally
    ml = np.prod(case.spacing) / 1000
    found = {}
    for part in range(1, n + 1):
        where = np.argwhere(parts == part)
        found[(*where.min(0), *where.max(0))] = len(where) * ml
    for lesion in case.lesions:
        box = (*lesion["bbox_voxel"]["min"], *lesion["bbox_voxel"]["max"])
        assert lesion["volume_ml"] == pytest.approx(found.pop(box), rel=1e-3)
    assert not found


def test_lesion_count_range_and_crowding():
    cases = [generate_case("r", seed=(3, i), shape=SHAPE, n_lesions=(0, 2), p_necrosis=0) for i in range(6)]
    counts = {len(case.lesions) for case in cases}
    assert counts <= {0, 1, 2} and len(counts) > 1
    with pytest.raises(ValueError, match="ask for fewer lesions"):
        generate_case("crowded", seed=0, shape=(32, 32, 32), n_lesions=12)


def test_contrasts_match_the_tissue_story(cases):
    for case in cases:
        t1, t1ce, t2, flair = (case.images[m] for m in MODALITIES)
        wm, gm, csf = (case.tissue == t for t in (WM, GM, CSF))
        edema, enhancing, necrosis = (case.label == v for v in (2, 4, 1))
        assert t1[wm].mean() > t1[gm].mean() > t1[csf].mean()
        assert t2[csf].mean() > t2[gm].mean() > t2[wm].mean()
        assert flair[gm].mean() > flair[wm].mean() > flair[csf].mean()
        assert flair[edema].mean() > 1.3 * flair[wm].mean()
        assert t2[edema].mean() > 1.3 * t2[wm].mean()
        assert t1ce[enhancing].mean() > 1.3 * t1ce[wm].mean()
        if necrosis.any():
            assert t1ce[necrosis].mean() < t1ce[wm].mean()
            assert t2[necrosis].mean() > t2[wm].mean()


def test_intensities_need_normalisation(cases):
    wm_means = [case.images[m][case.tissue == WM].mean() for case in cases for m in MODALITIES]  # per-case gains
    assert max(wm_means) / min(wm_means) > 2


def test_affine_is_brats_like(cases):
    case = cases[0]
    affine = case.affine
    assert affine.shape == (4, 4) and not np.allclose(affine, np.eye(4))
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, (2.0, 2.0, 2.5))
    assert np.abs(affine[:3, 3]).max() > 1  # non-zero origin
    directions = affine[:3, :3] / spacing
    tilt = np.degrees(np.arccos(np.clip(np.abs(np.diag(directions)), 0, 1)))
    assert tilt.max() > 0.5 and tilt.max() < 10  # rotated by a few degrees, not axis-aligned


def test_lesion_metadata_agrees_with_the_arrays(cases):
    for case in cases:
        lesion = case.lesions[0]
        ml = np.prod(case.spacing) / 1000
        assert lesion["volume_ml"] == pytest.approx((case.label > 0).sum() * ml, rel=1e-3)
        assert lesion["core_volume_ml"] == pytest.approx(np.isin(case.label, (1, 4)).sum() * ml, rel=1e-3)
        assert lesion["enhancing_volume_ml"] == pytest.approx((case.label == 4).sum() * ml, rel=1e-3)
        world = case.affine @ np.array([*lesion["centre_voxel"], 1.0])
        np.testing.assert_allclose(world[:3], lesion["centre_mm"], atol=0.05)
        assert lesion["hemisphere"] == ("right" if lesion["centre_mm"][0] > 0 else "left")  # RAS: +x = right
        assert lesion["lobe"] in {"frontal", "parietal", "temporal", "occipital"}
        assert lesion["edema_extent"] in {"minimal", "moderate", "extensive"}
        lo, hi = lesion["bbox_voxel"]["min"], lesion["bbox_voxel"]["max"]
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        assert (case.label[box] > 0).sum() == (case.label > 0).sum()


@pytest.mark.parametrize(
    ("layout", "suffixes", "values"),
    [
        ("brats2021", {"seg": "_seg", "t1ce": "_t1ce", "others": ["_flair", "_t1", "_t2"]}, {0, 1, 2, 4}),
        ("brats2023", {"seg": "-seg", "t1ce": "-t1c", "others": ["-t1n", "-t2f", "-t2w"]}, {0, 1, 2, 3}),
    ],
)
def test_written_files_load_with_the_case_affine(cases, tmp_path, layout, suffixes, values):
    case = cases[0]
    path = write_case(case, tmp_path, layout)
    assert path == tmp_path / "case0"
    expected_names = {f"case0{s}.nii.gz" for s in [suffixes["seg"], suffixes["t1ce"], *suffixes["others"]]}
    assert {p.name for p in path.iterdir()} == expected_names

    seg = nib.load(path / f"case0{suffixes['seg']}.nii.gz")
    assert seg.get_data_dtype() == np.uint8
    assert int(seg.header["qform_code"]) == 1 and int(seg.header["sform_code"]) == 1
    assert seg.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(seg.affine, case.affine, atol=1e-5)
    label = np.asarray(seg.dataobj)
    assert set(np.unique(label)) == values
    np.testing.assert_array_equal(label > 0, case.label > 0)
    ml = np.prod(seg.header.get_zooms()) / 1000
    assert case.lesions[0]["volume_ml"] == pytest.approx((label > 0).sum() * ml, rel=1e-3)

    t1ce = nib.load(path / f"case0{suffixes['t1ce']}.nii.gz")
    np.testing.assert_allclose(t1ce.affine, case.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(t1ce.dataobj), case.images["t1ce"])


def test_dataset_case_depends_only_on_seed_and_index(tmp_path):
    generate_dataset(tmp_path / "train", 2, seed=5, shape=SHAPE)
    generate_dataset(tmp_path / "held_out", 1, seed=5, start_index=1, shape=SHAPE)
    flair = "BraTS2021_00001/BraTS2021_00001_flair.nii.gz"
    same = [nib.load(tmp_path / folder / flair).get_fdata() for folder in ("train", "held_out")]
    np.testing.assert_array_equal(*same)
    truth = json.loads((tmp_path / "train" / "demo_truth.json").read_text(encoding="utf-8"))
    assert sorted(truth) == ["BraTS2021_00000", "BraTS2021_00001"]
    assert truth["BraTS2021_00000"]["spacing"] == pytest.approx([2.0, 2.0, 2.5])
    assert np.array(truth["BraTS2021_00000"]["affine"]).shape == (4, 4)
    other = nib.load(tmp_path / "train" / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz").get_fdata()
    assert not np.allclose(other, same[0])


def test_cli_writes_a_dataset_and_refuses_an_occupied_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--cases", "2", "--shape", *map(str, SHAPE), "--layout", "brats2023"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000", "demo_truth.json"]
    assert str(out.resolve()) in capsys.readouterr().out

    assert main(args) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--start-index", "5", "--cases", "1"]) == 0
    assert len(json.loads((out / "demo_truth.json").read_text(encoding="utf-8"))) == 3


def test_cli_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--overwrite" in text and "BraTS" in text


def test_default_is_skull_stripped_like_brats():
    case = generate_case("s", seed=(5, 1), shape=SHAPE)
    from medseg.data.demo_anatomy import SCALP, SKULL

    outside = np.isin(case.tissue, (SCALP, SKULL))
    assert outside.any()
    for image in case.images.values():
        assert not image[outside].any()  # zero outside the brain
    assert (case.images["t1"][case.label > 0] > 0).all()  # the tumour stays inside what is kept
