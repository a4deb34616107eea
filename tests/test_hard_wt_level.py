"""scripts/hard_wt_level.py: the best single cut of a case's normalised FLAIR, per normalisation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import load_script


def write_case(folder, name: str, radius: float, level: float) -> None:
    """A brain of FLAIR 95-105 (median 100) with an edema adding up to 100 at its centre; the label ends
    where the edema adds ``level - 1`` x 100."""
    grid = np.indices((32, 32, 32)).astype(np.float32)
    distance = np.sqrt(((grid - 16) ** 2).sum(0))
    edema = 100 * np.clip(1 - distance / radius, 0, 1)
    flair = 95 + 10 * grid[1] / 31 + edema
    flair[:2] = 0  # background outside the brain
    case = folder / name
    case.mkdir(parents=True)
    affine = np.eye(4)
    nib.save(nib.Nifti1Image(flair.astype(np.float32), affine), case / f"{name}_flair.nii.gz")
    nib.save(nib.Nifti1Image((edema > (level - 1) * 100).astype(np.uint8) * 2, affine), case / f"{name}_seg.nii.gz")


def test_best_cut_finds_where_the_label_ends():
    script = load_script("hard_wt_level")
    flair = np.linspace(0, 2, 1000, dtype=np.float32).reshape(10, 10, 10)
    wt = flair > 1.5
    assert script.best_cut(flair, wt, np.ones_like(wt)) == pytest.approx(1.5, abs=0.03)


def test_main_prints_each_case_and_the_spread(tmp_path, monkeypatch, capsys):
    write_case(tmp_path, "BraTS2021_00000", radius=6, level=1.5)
    write_case(tmp_path, "BraTS2021_00001", radius=10, level=1.2)
    monkeypatch.setattr("sys.argv", ["hard_wt_level.py", str(tmp_path)])
    load_script("hard_wt_level").main()
    out = capsys.readouterr().out
    median_cuts = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("BraTS2021_")]
    assert median_cuts == pytest.approx([1.5, 1.2], abs=0.05)  # FLAIR / median: the median is the brain's 100
    assert "z: the best cut over 2 cases" in out and "robust: " in out and "median: " in out
