"""extent="real": generated brains span what a skull-stripped BraTS brain does (crop ~146 x 174 x 148 mm at 1 mm).

Checked at 4 mm (60 x 60 x 39 voxels: the 240 x 240 x 156 mm of a BraTS volume) through the preprocessing
``medseg predict`` runs, so the crop is the one window planning sees; a voxel of 4 mm is the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from medseg.commands import demo_data
from medseg.data.demo import generate_case, write_case
from medseg.data.transforms import eval_transforms

COARSE = {"shape": (60, 60, 39), "spacing": (4.0, 4.0, 4.0)}  # BraTS's field of view, 4 mm voxels


def _crop_mm(tmp_path, extent: str, index: int) -> np.ndarray:
    case = generate_case(f"BraTS2021_{index:05d}", seed=(0, index), extent=extent, **COARSE)
    folder = write_case(case, tmp_path)
    files = [str(folder / f"{case.case_id}_{m}.nii.gz") for m in ("t1", "t1ce", "t2", "flair")]
    image = eval_transforms("brats2021", with_label=False)({"case_id": case.case_id, "image": files})["image"]
    return np.array(image.shape[1:]) * 4.0  # [3] mm, RAS: LR, AP, SI


def test_real_extent_crop_is_a_brats_brain(tmp_path):
    crop = _crop_mm(tmp_path, "real", 1)
    assert (crop >= (136, 164, 140)).all() and (crop <= (152, 184, 160)).all(), crop
    small = _crop_mm(tmp_path, "small", 0)
    assert small[2] < 125  # the default head fills the volume: too flat a brain at BraTS's field of view


def test_real_extent_needs_a_field_of_view_that_holds_it():
    with pytest.raises(ValueError, match="field of view"):
        generate_case("x", seed=0, shape=(48, 48, 32), spacing=(2.0, 2.0, 2.5), extent="real")
    with pytest.raises(ValueError, match="extent"):
        generate_case("x", seed=0, extent="huge")


def test_cli_real_extent_defaults_to_the_brats_grid(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(demo_data, "generate_dataset", lambda root, n, **kw: seen.update(kw) or [])
    assert demo_data.main(["--out", str(tmp_path / "a"), "--cases", "1", "--extent", "real"]) == 0
    assert seen["extent"] == "real" and seen["shape"] == [240, 240, 155] and seen["spacing"] == [1.0, 1.0, 1.0]
    assert demo_data.main(["--out", str(tmp_path / "b"), "--extent", "real", "--shape", "60", "60", "39"]) == 0
    assert seen["shape"] == [60, 60, 39] and seen["spacing"] == [1.0, 1.0, 1.0]
    assert demo_data.main(["--out", str(tmp_path / "c")]) == 0
    assert seen["extent"] == "small" and seen["shape"] == [96, 96, 64] and seen["spacing"] == [2, 2, 2.5]
