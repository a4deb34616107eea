"""N4 bias-field correction (medseg.data.bias_field) against the field a test multiplies in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from medseg.data.bias_field import BiasFieldCorrectiond, check_bias_field, n4_correct
from medseg.errors import CaseError

SPACING = (2.0, 2.0, 2.5)


def head(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured ellipsoid of two tissues [48, 48, 40] (0 outside) and a smooth log field of std ~0.2."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (48, 48, 40)], indexing="ij"))  # [3, X, Y, Z]
    inside = (grid**2).sum(0) < 0.8
    tissue = np.where(ndimage.gaussian_filter(rng.standard_normal(inside.shape), 3) > 0, 1.0, 1.4)
    image = inside * tissue * (1 + 0.03 * rng.standard_normal(inside.shape))
    field = 0.5 * (0.8 * grid[0] - 0.5 * grid[1] + 0.4 * grid[2] ** 2)  # smooth over the whole head
    return image.astype(np.float32), field.astype(np.float32)


def residual(corrected: np.ndarray, clean: np.ndarray) -> float:
    """Std of the log ratio inside the head: 0 when ``corrected`` is ``clean`` up to a constant gain."""
    inside = clean > 0
    return float(np.log(corrected[inside] / clean[inside]).std())


def test_n4_removes_most_of_a_smooth_field():
    clean, field = head()
    biased = clean * np.exp(field)
    corrected = n4_correct(biased, SPACING)
    before, after = residual(biased, clean), residual(corrected, clean)
    assert before > 0.15
    assert after < before / 2, (before, after)
    assert corrected.dtype == np.float32 and corrected.shape == clean.shape
    np.testing.assert_array_equal(corrected[biased == 0], 0)  # outside the head stays 0


def test_n4_leaves_an_image_normalised_already_alone_and_keeps_a_few_negative_voxels():
    clean, field = head()
    biased = clean * np.exp(field)
    scored = (biased - biased[biased > 0].mean()) / biased[biased > 0].std() * (biased > 0)  # about half negative
    np.testing.assert_array_equal(n4_correct(scored, SPACING), scored)
    ringing = biased.copy()
    ringing[0, 0, :5] = -0.01  # interpolation ringing outside the head
    corrected = n4_correct(ringing, SPACING)
    np.testing.assert_array_equal(corrected[0, 0, :5], ringing[0, 0, :5])
    assert residual(corrected, clean) < residual(biased, clean) / 2


def test_n4_leaves_an_empty_channel_alone():
    empty = np.zeros((16, 16, 16), np.float32)
    np.testing.assert_array_equal(n4_correct(empty, SPACING), empty)


def test_dictionary_transform_corrects_mr_channels_only_and_keeps_the_geometry():
    clean, field = head()
    biased = clean * np.exp(field)
    affine = np.diag([*SPACING, 1.0])
    image = MetaTensor(torch.from_numpy(np.stack([biased, biased - 1000])), affine=torch.from_numpy(affine))
    out = BiasFieldCorrectiond(keys="image", mr=[True, False])({"image": image})["image"]
    assert isinstance(out, MetaTensor)
    np.testing.assert_allclose(out.affine.numpy(), affine)
    assert residual(out[0].numpy(), clean) < residual(biased, clean) / 2
    torch.testing.assert_close(out[1], image[1])  # a CT channel passes unchanged


def test_unknown_method_is_refused():
    assert check_bias_field(None) is None and check_bias_field("n4") == "n4"
    with pytest.raises(ValueError, match="bias_field must be one of"):
        check_bias_field("n3")


def test_a_volume_too_thin_to_fit_names_the_case():
    thin = MetaTensor(torch.ones(1, 64, 64, 2))
    with pytest.raises(CaseError, match=r"case BraTS2021_00007: .*3 voxels or more along each axis, found 64x64x2"):
        BiasFieldCorrectiond(keys="image", mr=[True])({"image": thin, "case_id": "BraTS2021_00007"})
