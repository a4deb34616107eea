"""The demo generator's difficulty: the default stays byte for byte what it was; ``difficulty="hard"`` is
seeded and has what real scans have (weak, textured, variable lesions; unlabelled mimics; satellites; blur)."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.commands.demo_data import main
from medseg.data.cases import MODALITIES
from medseg.data.demo import _CONTRAST, generate_case, generate_dataset
from medseg.data.demo_anatomy import EDEMA, ENHANCING, NON_ENHANCING, WM
from medseg.data.demo_hard import CHOROID, VESSEL, WM_LESION
from medseg.data.demo_hard_render import SLICE_BLUR, edema_taper, render_hard
from medseg.data.labels import BRATS2021

SHAPE = (48, 48, 32)

# sha256 of the default generator's arrays (t1, t1ce, t2, flair, label, affine), computed before the hard
# mode existed: the default must never change. Floating point through numpy/scipy on x86-64 (numpy 2).
DEFAULT_SHA256 = {
    (0, 0): "03bc875bdccc10d2b5671878a987a2c6a5d30f29261479e6c0c55533293a55ad",
    (0, 1): "3151cee1555c777da523f85db0c4793742721244469bc3d8b4d57a910b64cd3b",
}
SEVERAL_SHA256 = "f98d14b4cb8a7813ee8a9d8c41677a557cc9cdbb16b9aad265714b67287b3662"  # seed (3, 1), non-default knobs


def _sha256(case) -> str:
    digest = hashlib.sha256()
    for array in (*(case.images[m] for m in MODALITIES), case.label, case.affine):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def test_default_is_unchanged():
    for seed, expected in DEFAULT_SHA256.items():
        assert _sha256(generate_case("c", seed=seed, shape=SHAPE)) == expected, f"default case {seed} changed"
    assert _sha256(generate_case("c", seed=(0, 0), shape=SHAPE, difficulty="easy")) == DEFAULT_SHA256[0, 0]
    case = generate_case("c", seed=(3, 1), shape=SHAPE, n_lesions=(1, 3), p_enhancing=0.5, skull_stripped=False)
    assert _sha256(case) == SEVERAL_SHA256


# ----------------------------------------------------------------------------------------------- hard mode

N_CASES = 4  # hard cases are compared with the easy ones drawn from the same seeds


@pytest.fixture(scope="module")
def pairs():
    """(easy, hard) cases from the seeds (0, i): the same head and tumours, drawn twice."""
    return [
        (generate_case("e", seed=(0, i), shape=SHAPE), generate_case("h", seed=(0, i), shape=SHAPE, difficulty="hard"))
        for i in range(N_CASES)
    ]


def _local(image: np.ndarray) -> np.ndarray:
    """Intensity over the mean of its 5 x 5 x 5 neighbourhood: contrast free of bias and gain."""
    return image / np.maximum(ndimage.uniform_filter(image, 5), 1e-6)


def test_hard_is_seeded_and_shares_the_easy_head():
    a, b = (generate_case("h", seed=(7, 3), shape=SHAPE, difficulty="hard") for _ in range(2))
    assert _sha256(a) == _sha256(b)
    np.testing.assert_array_equal(a.mimics, b.mimics)
    assert a.knobs == b.knobs and a.lesions == b.lesions
    c = generate_case("h", seed=(7, 4), shape=SHAPE, difficulty="hard")
    assert not np.array_equal(a.label, c.label) and a.knobs != c.knobs

    easy = generate_case("e", seed=(7, 3), shape=SHAPE)
    np.testing.assert_array_equal(a.affine, easy.affine)
    satellites = np.isin(a.tissue, (EDEMA, ENHANCING)) & (easy.tissue < EDEMA)
    assert (a.tissue == easy.tissue)[~satellites].all()  # the same anatomy and main tumours


def test_hard_arrays_follow_the_contract(pairs):
    for _, case in pairs:
        assert case.label.shape == SHAPE and case.label.dtype == np.uint8
        assert set(np.unique(case.label)) <= set(BRATS2021.values)
        brain = case.images["t1"] > 0
        assert (brain[case.label > 0]).all()  # labels stay inside the skull-stripped brain
        for m in MODALITIES:
            assert case.images[m].dtype == np.float32 and case.images[m].min() >= 0
        assert case.mimics.shape == SHAPE and not case.mimics[case.label > 0].any()  # mimics are unlabelled
        json.dumps(case.lesions), json.dumps(case.knobs)


def test_hard_has_more_lesions_than_easy(pairs):
    def components(label):
        return ndimage.label(label > 0, np.ones((3, 3, 3), bool))[1]

    easy, hard = ([components(c.label) for c in cases] for cases in zip(*pairs))
    assert np.mean(hard) > np.mean(easy) + 0.5
    for _, case in pairs:  # satellites are listed, labelled lesions
        assert sum(lesion["satellite"] for lesion in case.lesions) == case.knobs["satellites"]
        assert len(case.lesions) == components(case.label)


def test_lesion_contrast_is_weak_and_varies(pairs):
    def enhancing_ratio(case):
        wm = (case.tissue == WM) & (case.label == 0)
        return case.images["t1ce"][case.label == 4].mean() / np.median(case.images["t1ce"][wm])

    easy, hard = ([enhancing_ratio(c) for c in cases] for cases in zip(*pairs))
    assert np.mean(hard) < np.mean(easy) - 0.2 and min(hard) < 1.2  # weaker, now and then barely there ...
    assert max(hard) / min(hard) > 1.2
    drawn = [lesion["contrast"]["edema_flair"] for _, case in pairs for lesion in case.lesions]
    assert max(drawn) / min(drawn) > 1.5  # ... and drawn from wide ranges, per case and per lesion
    enhancing = {lesion["contrast"]["enhancing_t1ce"] for _, case in pairs for lesion in case.lesions}
    assert min(enhancing) < 1.3 and len(enhancing) == sum(len(case.lesions) for _, case in pairs)


def test_edema_fades_towards_the_label_boundary(pairs):
    def near_over_edge(case):  # flair of edema next to the core / at the label's edge
        core, edema = np.isin(case.label, (1, 4)), case.label == 2
        near = edema & ndimage.binary_dilation(core)
        edge = edema & ~ndimage.binary_erosion(case.label > 0)
        return case.images["flair"][near].mean() / case.images["flair"][edge].mean()

    easy, hard = ([near_over_edge(c) for c in cases] for cases in zip(*pairs))
    assert np.mean(hard) > np.mean(easy) + 0.03, (easy, hard)


def test_tumour_core_is_textured_not_uniform():
    """One uniform core class in white matter: inside it the (noise-smoothed) image varies far more than in
    an equal block of white matter beside it."""
    shape, spacing = (48, 48, 40), (2.0, 2.0, 2.0)
    base = np.full(shape, WM, np.uint8)
    tissue, lesion_map = base.copy(), np.zeros(shape, np.uint8)
    core, beside = (slice(4, 24), slice(14, 34), slice(10, 30)), (slice(27, 47), slice(14, 34), slice(10, 30))
    tissue[core], lesion_map[core] = NON_ENHANCING, 1
    none = np.zeros(shape, np.float32)
    ratios = []
    for seed in range(3):
        images, _, _ = render_hard(
            np.random.default_rng(seed), base, tissue, lesion_map, none, none, none, _CONTRAST, spacing
        )
        for image in images.values():
            smooth = ndimage.gaussian_filter(image, 1.0)
            cv = [(v := smooth[box][3:-3, 3:-3, 3:-3]).std() / v.mean() for box in (core, beside)]
            ratios.append(cv[0] / cv[1])
    assert min(ratios) > 1.2 and np.mean(ratios) > 1.6, ratios


def test_unlabelled_mimics_are_bright(pairs):
    for easy, hard in pairs:
        enhancing = np.isin(hard.mimics, (VESSEL, CHOROID))
        assert enhancing.sum() > 20 and _local(hard.images["t1ce"])[enhancing].mean() > 1.3
        wml = hard.mimics == WM_LESION
        assert ndimage.label(wml)[1] >= 2 and _local(hard.images["flair"])[wml].mean() > 1.1
        assert hard.label[enhancing | wml].max() == 0

        # without the ground truth: unlabelled bright spots in white matter far from the tumour
        far = ~ndimage.binary_dilation(hard.label > 0, iterations=3) & (hard.tissue == WM)
        far &= ndimage.binary_erosion(hard.images["t1"] > 0, iterations=3)  # away from the brain's edge
        spots = [(_local(c.images["flair"]) > 1.2) & far for c in (easy, hard)]
        assert spots[1].sum() > 3 * max(spots[0].sum(), 1), (spots[0].sum(), spots[1].sum())


def test_label_noise_moves_the_boundary_by_a_voxel_in_places(pairs):
    for _, case in pairs:
        clean = case.tissue >= EDEMA  # the label the images were drawn from
        changed = clean ^ (case.label > 0)
        boundary = clean ^ ndimage.binary_erosion(clean)
        assert 0.1 < changed.sum() / boundary.sum() < 0.7
        near = ndimage.binary_dilation(boundary, np.ones((3, 3, 3), bool), iterations=2)
        assert not (changed & ~near).any()  # within two voxels of the true boundary


def test_thick_slice_blur_is_along_the_drawn_axis(pairs):
    def neighbour_correlation(image, brain, axis):  # of the fine detail, between neighbours along ``axis``
        detail = np.moveaxis(image - ndimage.gaussian_filter(image, 2), axis, 0)
        inside = np.moveaxis(brain, axis, 0)
        both = inside[1:] & inside[:-1]
        return np.corrcoef(detail[1:][both], detail[:-1][both])[0, 1]

    axes = []
    for _, case in pairs:
        axis, sigma = case.knobs["blur_axis"], case.knobs["blur_sigma_voxels"]
        assert all(SLICE_BLUR[0] * 0.5 <= s <= SLICE_BLUR[1] + 0.5 for s in sigma.values())
        brain = case.images["t1"] > 0
        corr = [neighbour_correlation(case.images["t1"], brain, a) for a in range(3)]
        assert corr[axis] == max(corr)
        axes.append(axis)
    assert len(set(axes)) > 1  # the axis varies per case


def test_edema_taper_crosses_its_threshold_on_the_label_boundary():
    spacing = (2.0, 2.0, 2.5)
    grid = np.indices((24, 24, 20)) * np.reshape(spacing, (3, 1, 1, 1))  # mm
    radius = np.linalg.norm(grid - np.reshape((23.0, 23.0, 25.0), (3, 1, 1, 1)), axis=0)
    core, wt = radius < 6, radius < 16
    lesion_map = wt.astype(np.uint8)
    taper, nearest = edema_taper(wt, core, lesion_map, 0.4, 4.0, spacing)
    assert (taper[wt] >= 0.4 - 1e-6).all() and (taper[~wt] < 0.4).all()
    assert taper[core].min() == pytest.approx(1.0) and (nearest == 1).all()
    shells = [taper[(radius >= r) & (radius < r + 2)].mean() for r in range(6, 30, 2)]
    assert all(a > b for a, b in zip(shells, shells[1:]))  # fades with distance to the core
    edema_only, _ = edema_taper(wt, np.zeros_like(wt), lesion_map, 0.4, 4.0, spacing)
    assert edema_only[radius < 3].min() == pytest.approx(1.0) and (edema_only[wt] >= 0.4 - 1e-6).all()


def test_dataset_and_cli_write_hard_cases(tmp_path, capsys):
    generate_dataset(tmp_path / "train", 2, seed=5, shape=SHAPE, difficulty="hard")
    generate_dataset(tmp_path / "held_out", 1, seed=5, start_index=1, shape=SHAPE, difficulty="hard")
    flair = "BraTS2021_00001/BraTS2021_00001_flair.nii.gz"
    same = [nib.load(tmp_path / folder / flair).get_fdata() for folder in ("train", "held_out")]
    np.testing.assert_array_equal(*same)  # case i from (seed, i) alone
    truth = json.loads((tmp_path / "train" / "demo_truth.json").read_text(encoding="utf-8"))
    assert all("hard" in entry and "satellite" in entry["lesions"][0] for entry in truth.values())

    out = tmp_path / "cli"
    args = ["--out", str(out), "--cases", "1", "--shape", *map(str, SHAPE)]
    assert main([*args, "--difficulty", "hard"]) == 0
    assert " hard " in capsys.readouterr().out
    assert "hard" in json.loads((out / "demo_truth.json").read_text(encoding="utf-8"))["BraTS2021_00000"]
    assert main([*args, "--overwrite"]) == 0  # the default: easy, as before
    assert "hard" not in json.loads((out / "demo_truth.json").read_text(encoding="utf-8"))["BraTS2021_00000"]
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "ct"), "--kind", "ct", "--difficulty", "hard"])
    assert "--kind mri only" in capsys.readouterr().err


def test_demo_command_takes_difficulty_for_mri_only(tmp_path, capsys):
    from medseg.commands import demo

    with pytest.raises(SystemExit):
        demo.main(["--kind", "ct", "--difficulty", "hard"])
    assert "--kind mri only" in capsys.readouterr().err
    assert demo.build_parser().parse_args([]).difficulty is None  # mri then generates easy cases, as before
    root = tmp_path / "train"
    generate_dataset(root, 1, shape=SHAPE)
    demo._generate(root, 1, 0, 0, "easy")  # reuses what is there
    assert "using the 1 cases" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="holds easy cases"):
        demo._generate(root, 1, 0, 0, "hard")
