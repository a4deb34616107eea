"""Synthetic abdominal CT cases: a body with spine, ribs and bowel, five labelled organs, three contrast phases.

Nothing is downloaded; a case is drawn from a seed in a fraction of a second, small enough to train on a CPU:

- anatomy (:mod:`medseg.data.demo_ct_anatomy`): an elliptical body whose outline varies along z, skin,
  subcutaneous fat and a muscle wall with ribs in the upper slices, lung bases above the diaphragm,
  bowel loops (some gas) in visceral fat, the spine (vertebral bodies and discs, arch, spinous
  processes) with paraspinal and psoas muscles, the inferior vena cava, and the labelled organs:
  1 liver, 2 spleen, 3 right kidney, 4 left kidney, 5 aorta, each with its own size and position;
- intensities in Hounsfield units from a per-case jittered table for one of three contrast phases
  (``non_contrast``, ``arterial``, ``portal_venous``), tissue texture, liver vessels, a heterogeneous
  spleen in the arterial phase, partial-volume blur and Gaussian noise (sigma 8-20 HU); air is -1000;
- geometry: 120 x 96 x 40-50 voxels, in-plane spacing 2.4-3.2 mm following the patient's width, slices
  4-6 mm; stored LPS (``aff2axcodes`` gives ``('L', 'P', 'S')``) with a non-zero origin. In world (RAS
  mm, nibabel's convention) +x is the patient's Right: the liver's centroid has world x > 0 (right of
  the body's midline), the spleen's x < 0.

:func:`generate_ct_dataset` writes ``imagesTr/abdomen_000.nii.gz`` (int16 HU) and ``labelsTr/abdomen_000.nii.gz``
(uint8) with an MSD ``dataset.json`` or a MONAI BTCV-style ``dataset_0.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from medseg.data import demo_ct_anatomy as anat
from medseg.data.demo import write_nifti
from medseg.data.demo_anatomy import smooth_field
from medseg.io import write_atomic

PHASES = ("non_contrast", "arterial", "portal_venous")
CT_LAYOUTS = ("msd", "btcv")
LABELS = {"0": "background", **{str(i): name for i, name in enumerate(anat.ORGANS, start=1)}}
CASE_ID = "abdomen_{index:03d}"  # not <case>_0000: that is nnU-Net channel naming

# A case's mean HU per tissue, drawn uniformly from (low, high) for its phase:
# (non-contrast, arterial, portal venous). Tissues missing here are air (-1000).
_HU = {
    anat.FAT: ((-115, -85),) * 3,
    anat.MUSCLE: ((45, 55), (48, 60), (55, 70)),
    anat.BOWEL: ((5, 30), (10, 35), (15, 40)),
    anat.GAS: ((-940, -860),) * 3,
    anat.LUNG: ((-880, -820),) * 3,
    anat.CORTICAL: ((650, 850),) * 3,
    anat.CANCELLOUS: ((260, 360),) * 3,
    anat.DISC: ((70, 100),) * 3,
    anat.CANAL: ((5, 20),) * 3,
    anat.LIVER: ((52, 62), (65, 85), (100, 130)),
    anat.SPLEEN: ((44, 52), (100, 130), (110, 130)),
    anat.CORTEX: ((38, 46), (180, 250), (150, 200)),
    anat.MEDULLA: ((36, 44), (70, 100), (140, 190)),
    anat.AORTA: ((38, 45), (200, 300), (140, 165)),
    anat.IVC: ((36, 44), (60, 90), (115, 140)),
}
# Standard deviation (HU) of fine tissue texture; bone marrow and lung are the coarsest.
_TEXTURE = {
    anat.FAT: 6, anat.MUSCLE: 6, anat.BOWEL: 10, anat.LUNG: 25, anat.CORTICAL: 80, anat.CANCELLOUS: 50, anat.DISC: 6,
    anat.LIVER: 5, anat.SPLEEN: 5, anat.CORTEX: 6, anat.MEDULLA: 6, anat.AORTA: 3, anat.IVC: 4,
}  # fmt: skip
_VESSELS_HU = (-12.0, 10.0, 40.0)  # hepatic vessels relative to the liver, per phase
_BLUR_VOXELS = (0.6, 0.6, 0.35)  # partial volume, Gaussian sigma in voxels along x, y, z


@dataclass
class CTCase:
    """One synthetic CT case.

    Attributes:
        case_id: file stem, e.g. ``abdomen_003``.
        image: int16 [X, Y, Z], Hounsfield units, -1000 in the air around the body.
        label: uint8 [X, Y, Z], 0 background, 1 liver, 2 spleen, 3 right kidney, 4 left kidney, 5 aorta.
        affine: float64 [4, 4], voxel index -> world RAS mm (nibabel convention), ``diag(-sx, -sy, sz)``.
        phase: one of ``PHASES``.
        noise_hu: standard deviation of the Gaussian noise added, HU.
        hu: tissue name -> the case's mean HU before texture, blur and noise.
        tissue: uint8 [X, Y, Z], index into ``demo_ct_anatomy.TISSUES`` (not written to disk).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    phase: str
    noise_hu: float
    hu: dict[str, float] = field(default_factory=dict)
    tissue: np.ndarray | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def generate_ct_case(case_id: str, seed: int | Sequence[int], phase: str | None = None) -> CTCase:
    """Draw one case; the same ``seed`` (an int or a tuple of ints) always gives the same arrays.

    Args:
        case_id: stored on the case; :func:`write_ct_case` names the files after it.
        seed: seeds ``numpy.random.default_rng``; :func:`generate_ct_dataset` passes ``(seed, case_index)``.
        phase: force a contrast phase (one of ``PHASES``); None draws one (each 1/3). Forcing it keeps the
            anatomy and geometry the seed gives: only the intensities change.

    Raises:
        ValueError: on an unknown phase.
    """
    if phase is not None and phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; choose one of {PHASES}")
    rng = np.random.default_rng(seed)
    drawn = PHASES[int(rng.integers(len(PHASES)))]
    phase = phase or drawn
    shape, spacing, affine, body = anat.ct_geometry(rng)
    pos = anat.axes_mm(affine, shape, body["centre_world"])  # x [X,1,1], y [1,Y,1], z [1,1,Z], mm RAS
    tissue, label, depth = anat.ct_anatomy(rng, pos, spacing, body)
    image, noise, hu = _render(rng, tissue, depth, spacing, phase)
    return CTCase(case_id, image, label, affine, phase, noise, hu, tissue)


def _render(
    rng: np.random.Generator, tissue: np.ndarray, depth: np.ndarray, spacing: tuple, phase: str
) -> tuple[np.ndarray, float, dict[str, float]]:
    """Tissue map [X, Y, Z] -> (int16 HU image [X, Y, Z], noise sigma, tissue name -> mean HU).

    Per-case HU table for the phase, fine texture (one shared field, per-tissue amplitude), hepatic vessels
    (darker than liver without contrast, brighter in the portal venous phase), an arciform spleen in the
    arterial phase (+-35 HU), Gaussian blur (partial volume), noise of sigma 8-20 HU; exactly -1000 more
    than two voxels outside the skin.
    """
    p = PHASES.index(phase)
    means = np.full(len(anat.TISSUES), -1000.0, np.float32)
    for t, ranges in _HU.items():
        means[t] = rng.uniform(*ranges[p])
    amp = np.zeros(len(anat.TISSUES), np.float32)
    for t, value in _TEXTURE.items():
        amp[t] = value
    shape = tissue.shape
    img = means[tissue] + amp[tissue] * smooth_field(rng, shape, spacing, 6.0)  # [X, Y, Z]
    liver = tissue == anat.LIVER
    vessels = liver & (np.abs(smooth_field(rng, shape, spacing, 30.0)) < 0.12)
    img[vessels] += _VESSELS_HU[p]
    bowel = tissue == anat.BOWEL
    img[bowel] += 12.0 * smooth_field(rng, shape, spacing, 20.0)[bowel]  # loop to loop: fluid, food, stool
    if phase == "arterial":
        spleen = tissue == anat.SPLEEN
        img[spleen] += 35.0 * np.clip(smooth_field(rng, shape, spacing, 14.0)[spleen], -2, 2)
    img = ndimage.gaussian_filter(img, sigma=_BLUR_VOXELS)
    noise = float(rng.uniform(8.0, 20.0))
    img += noise * rng.standard_normal(shape, dtype=np.float32)
    img[depth < -2 * max(spacing[:2])] = -1000.0
    image = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    return image, noise, {anat.TISSUES[t]: round(float(means[t]), 1) for t in range(len(anat.TISSUES))}


# ----------------------------------------------------------------------------------------------- files


def write_ct_case(case: CTCase, root: str | os.PathLike, split: str = "Tr") -> tuple[Path, Path]:
    """Write ``root/images<split>/<case_id>.nii.gz`` (int16 HU) and ``root/labels<split>/<case_id>.nii.gz``
    (uint8) atomically, with the case's affine; ``split`` is ``Tr`` or ``Ts``. Returns (image, label)."""
    if split not in ("Tr", "Ts"):
        raise ValueError(f"split must be 'Tr' or 'Ts', got {split!r}")
    root = Path(root)
    for kind in ("images", "labels"):
        (root / f"{kind}{split}").mkdir(parents=True, exist_ok=True)
    image = write_nifti(root / f"images{split}" / f"{case.case_id}.nii.gz", case.image, case.affine)
    label = write_nifti(root / f"labels{split}" / f"{case.case_id}.nii.gz", case.label, case.affine)
    return image, label


def generate_ct_dataset(
    out_dir: str | os.PathLike,
    n_cases: int,
    seed: int = 0,
    start_index: int = 0,
    layout: str = "msd",
    held_out: int = 0,
) -> list[Path]:
    """Write ``n_cases`` training cases numbered from ``start_index``, then ``held_out`` more; return the
    image paths (training first).

    Case ``i`` (id ``abdomen_{i:03d}``) is drawn from the seed ``(seed, i)`` alone, so a held-out set made with
    another ``start_index`` never repeats a training case, and case ``i`` is the same whatever ``n_cases``.
    Training cases go to ``imagesTr/`` + ``labelsTr/``, held-out ones (indices ``start_index + n_cases``
    onwards) to ``imagesTs/`` + ``labelsTs/``. Then the datalist is rewritten from what those folders hold
    (so cases a previous run left there stay listed):

    - ``msd``: ``dataset.json`` (Medical Segmentation Decathlon): ``name``, ``modality`` ``{"0": "CT"}``,
      ``labels``, ``numTraining``, ``training`` ``[{"image": "./imagesTr/abdomen_000.nii.gz", "label":
      "./labelsTr/abdomen_000.nii.gz"}, ...]`` and ``test`` (image paths under ``./imagesTs/``);
    - ``btcv``: ``dataset_0.json`` (MONAI's BTCV datalist): the same keys with paths without ``./``, and
      about 20 % of the training cases (at least one when there are two or more) moved to ``validation``.

    Raises:
        ValueError: on a negative count, seed or index, or an unknown layout.
    """
    if layout not in CT_LAYOUTS:
        raise ValueError(f"unknown CT layout {layout!r}; choose one of {CT_LAYOUTS}")
    if min(n_cases, seed, start_index, held_out) < 0:
        raise ValueError(
            f"n_cases, seed, start_index and held_out must be >= 0, got {n_cases}, {seed}, {start_index}, {held_out}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(i, "Tr") for i in range(start_index, start_index + n_cases)]
    jobs += [(i, "Ts") for i in range(start_index + n_cases, start_index + n_cases + held_out)]
    images = []
    for index, split in tqdm(jobs, desc="demo CT cases", unit="case", disable=None):
        case = generate_ct_case(CASE_ID.format(index=index), seed=(seed, index))
        images.append(write_ct_case(case, out, split)[0])
    write_datalist(out, layout)
    return images


def write_datalist(root: str | os.PathLike, layout: str = "msd") -> Path:
    """Write ``dataset.json`` (``msd``) or ``dataset_0.json`` (``btcv``) listing the cases under ``root``;
    see :func:`generate_ct_dataset`. A training image without its label is left out. Returns its path."""
    root = Path(root)
    prefix = "./" if layout == "msd" else ""

    def stems(folder: str) -> list[str]:
        return sorted(p.name[: -len(".nii.gz")] for p in (root / folder).glob("*.nii.gz"))

    labelled = set(stems("labelsTr"))
    training = [
        {"image": f"{prefix}imagesTr/{s}.nii.gz", "label": f"{prefix}labelsTr/{s}.nii.gz"}
        for s in stems("imagesTr")
        if s in labelled
    ]
    test = [f"{prefix}imagesTs/{s}.nii.gz" for s in stems("imagesTs")]
    meta = {
        "name": "DemoAbdomenCT",
        "description": "synthetic abdominal CT (medseg demo-data --kind ct): liver, spleen, kidneys, aorta",
        "reference": "medseg.data.demo_ct, drawn from a seed; no patient data",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": dict(LABELS),
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    if layout == "btcv":
        n_val = max(1, round(0.2 * len(training))) if len(training) >= 2 else 0
        picks = {int((j + 0.5) * len(training) / n_val) for j in range(n_val)}  # spread over the cases
        meta["validation"] = [c for i, c in enumerate(training) if i in picks]
        meta["training"] = [c for i, c in enumerate(training) if i not in picks]
        meta["numTraining"] = len(meta["training"])
        meta["numValidation"] = len(meta["validation"])
    name = {"msd": "dataset.json", "btcv": "dataset_0.json"}.get(layout)
    if name is None:
        raise ValueError(f"unknown CT layout {layout!r}; choose one of {CT_LAYOUTS}")
    return write_atomic(root / name, json.dumps(meta, indent=1))
