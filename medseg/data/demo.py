"""Synthetic BraTS-style cases: a head with brain tumours, four MRI contrasts and a label map.

Nothing is downloaded. A case is drawn from a seed in a fraction of a second, at the volume's own
resolution, so that tests, the end-to-end demo and the detection / image-report models all have data:

- anatomy: an ellipsoidal head with an irregular outline, scalp, skull, CSF (outer layer, sulci,
  interhemispheric fissure, lateral and third ventricles), a folded grey-matter cortex, deep grey matter
  and white matter;
- lesions: each a tumour core (an irregular ellipsoid) that is either a necrotic centre inside an
  enhancing rim 2-3 voxels thick, a solid enhancing core, or a non-enhancing core, inside edema;
- contrasts ``t1``, ``t1ce``, ``t2``, ``flair`` from a per-case jittered tissue table, then tissue
  texture, partial-volume blur, a multiplicative bias field, Gaussian noise and a per-case gain;
- geometry: the arrays are stored as BraTS files are, x and y flipped (LPS-like, ``aff2axcodes`` gives
  ``('L', 'P', 'S')``), with anisotropic spacing, a rotation of a few degrees and a non-zero origin. The
  head is upright in world (RAS mm) space with its midline on the plane x = 0, so a lesion with world
  x > 0 lies in the patient's right hemisphere;
- ``difficulty="hard"``: the same heads and tumours made to look like real scans (weak, variable, textured
  lesions with fading edema, unlabelled mimics, labelled satellites, thick-slice blur, strong bias, Rician
  noise, label-boundary noise): :mod:`medseg.data.demo_hard`, :mod:`medseg.data.demo_hard_render`.

Labels follow BraTS 2021 in memory (1 necrotic / non-enhancing core, 2 edema, 4 enhancing);
:func:`write_case` writes BraTS 2021 or BraTS 2023 (ET = 3) files.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from medseg.data.cases import MODALITIES
from medseg.data.demo_anatomy import (
    BG,
    EDEMA,
    add_lesions,
    anatomy,
    describe,
    make_affine,
    smooth_field,
    world_grid,
)
from medseg.data.demo_hard import harden
from medseg.data.labels import BRATS2021, get_convention
from medseg.io import write_atomic

# Mean intensity of each tissue (columns, TISSUES order) per modality (rows, MODALITIES order), before
# texture, bias, noise and gain; relative to t1 white matter. t1: WM > GM > CSF; t2: CSF bright, GM > WM;
# flair: CSF suppressed, GM > WM, edema bright; t1ce: like t1 with a bright enhancing rim, dark necrosis.
_CONTRAST = np.array([
    # bg  scalp skull CSF   GM    WM    dGM   edema ET    NCR   NET
    [0.0, 0.90, 0.10, 0.25, 0.65, 1.00, 0.75, 0.55, 0.70, 0.30, 0.45],  # t1
    [0.0, 0.95, 0.10, 0.28, 0.68, 1.00, 0.78, 0.58, 1.90, 0.30, 0.47],  # t1ce
    [0.0, 0.75, 0.08, 1.80, 0.95, 0.60, 0.85, 1.35, 1.05, 1.65, 1.45],  # t2
    [0.0, 0.80, 0.08, 0.15, 0.95, 0.70, 0.85, 1.50, 1.15, 0.85, 1.35],  # flair
])  # fmt: skip

# File names per layout: case folder name from the case index, and modality -> file suffix.
LAYOUTS = {
    "brats2021": {
        "case_id": "BraTS2021_{index:05d}",
        "sep": "_",
        "files": {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "label": "seg"},
    },
    "brats2023": {
        "case_id": "BraTS-GLI-{index:05d}-000",
        "sep": "-",
        "files": {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "label": "seg"},
    },
}

_REF_HEAD_MM = (75.0, 86.0, 72.0)  # head semi-axes (LR, AP, SI) in mm at the default shape and spacing
# extent="real": head semi-axes in mm whose skull-stripped brain has the extent of a BraTS brain at 1 mm
# (its foreground crop about 146 x 174 x 148 mm, LR x AP x SI; 145-147 x 173-177 x 146-151 at 1 mm over 3 seeds)
_REAL_HEAD_MM = (87.5, 104.0, 90.5)
REAL_FOV_MM = (150.0, 178.0, 150.0)  # the least field of view that holds such a brain
_MIN_SHAPE = 32
DIFFICULTIES = ("easy", "hard")
EXTENTS = ("small", "real")


@dataclass
class DemoCase:
    """One synthetic case.

    Attributes:
        case_id: folder / file prefix, e.g. ``BraTS2021_00003``.
        images: modality (``t1``, ``t1ce``, ``t2``, ``flair``) -> float32 [X, Y, Z], >= 0, 0 outside the head.
        label: uint8 [X, Y, Z], BraTS 2021 values (0 background, 1 necrotic/non-enhancing, 2 edema, 4 enhancing).
        affine: float64 [4, 4], voxel index -> world RAS mm (nibabel convention), shared by all arrays.
        lesions: one JSON-serialisable dict per lesion, see :func:`generate_case`.
        tissue: uint8 [X, Y, Z], index into ``TISSUES`` (ground-truth anatomy; not written to disk).
        mimics: hard mode only: uint8 [X, Y, Z], index into ``demo_hard.MIMICS`` (unlabelled vessels, choroid
            plexus, white-matter lesions; not written to disk).
        knobs: hard mode only: this case's draws (blur axis and sigma, bias, noise, taper, ...), JSON-ready.
    """

    case_id: str
    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    lesions: list[dict]
    tissue: np.ndarray | None = None
    mimics: np.ndarray | None = None
    knobs: dict | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def generate_case(
    case_id: str,
    seed: int | Sequence[int],
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (2.0, 2.0, 2.5),
    n_lesions: int | tuple[int, int] = 1,
    p_enhancing: float = 1.0,
    p_necrosis: float = 0.8,
    skull_stripped: bool = True,
    difficulty: str = "easy",
    extent: str = "small",
) -> DemoCase:
    """Draw one case; the same ``seed`` (an int or a tuple of ints) always gives the same arrays.

    Args:
        case_id: stored on the case; :func:`write_case` names the folder and files after it.
        seed: seeds ``numpy.random.default_rng``; :func:`generate_dataset` passes ``(seed, case_index)``.
        shape: volume size in voxels, at least 32 along each axis. The head fills the field of view and
            lesions scale with it, keeping the rim 2-3 voxels thick and a necrotic centre >= 2 voxels.
        spacing: voxel size in mm along the array axes.
        n_lesions: lesions per case, or an inclusive (min, max) range to draw from. Lesions never touch.
        p_enhancing: probability that a lesion has an enhancing rim / core (label 4).
        p_necrosis: probability that a lesion has a necrotic centre (label 1); for a non-enhancing lesion,
            the probability that it has a non-enhancing core (also label 1 in BraTS) besides edema.
        skull_stripped: zero every voxel outside the brain, as BraTS distributes its scans; False keeps
            scalp, skull and the outer CSF layer.
        difficulty: ``easy`` (uniform tissue classes, strong contrast) or ``hard``: the same head and tumours
            (the same draws come first), then labelled satellite lesions, unlabelled mimics, weak textured
            lesions with fading edema, thick-slice blur, a strong bias field, Rician noise and about a voxel
            of label-boundary noise (:mod:`medseg.data.demo_hard`, :mod:`medseg.data.demo_hard_render`).
        extent: ``small`` (the default, what the demo figures used): the head fills the field of view, so
            its size follows ``shape`` x ``spacing`` (a 240 x 240 x 155 mm volume gets a brain of about
            161 x 182 x 108 mm: too flat for a real one); ``real``: a head of fixed size in mm whose brain
            has a real BraTS brain's extent (foreground crop about 146 x 174 x 148 mm, see ``_REAL_HEAD_MM``)
            whatever the volume; the field of view must hold it (``REAL_FOV_MM``).

    Each entry of ``lesions`` holds: ``centre_voxel`` (WT centroid, array index), ``centre_mm`` (the same
    point in world RAS mm), ``hemisphere`` (``left``/``right``, from the sign of world x: x > 0 is the
    patient's right), ``lobe`` (``frontal``/``parietal``/``temporal``/``occipital``, a rough guess from
    position), ``volume_ml`` (whole tumour), ``core_volume_ml`` (TC), ``enhancing_volume_ml``,
    ``necrotic_volume_ml``, ``edema_volume_ml``, ``enhancing`` and ``necrotic`` (bool: label 4 / label 1
    present), ``edema_extent`` (edema share of the whole tumour: ``minimal`` < 0.45 <= ``moderate`` < 0.75
    <= ``extensive``) and ``bbox_voxel`` ``{"min": [x, y, z], "max": [x, y, z]}`` (inclusive indices). Hard
    mode adds ``satellite`` (bool) and ``contrast`` (``enhancing_t1ce``, ``edema_flair``, ``edema_t2``,
    ``edema_t1``: intensity / white matter before texture, blur, bias and noise).

    Raises:
        ValueError: on a bad argument, or when the lesions asked for do not fit the volume apart.
    """
    shape, spacing = tuple(int(s) for s in shape), tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < _MIN_SHAPE:
        raise ValueError(f"shape must be 3 sizes of at least {_MIN_SHAPE} voxels, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive sizes in mm, got {spacing}")
    for name, p in (("p_enhancing", p_enhancing), ("p_necrosis", p_necrosis)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {p}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if extent not in EXTENTS:
        raise ValueError(f"extent must be one of {', '.join(EXTENTS)}, got {extent!r}")
    fov = np.array(shape) * spacing  # mm
    if extent == "real" and (fov < REAL_FOV_MM).any():
        raise ValueError(
            f"extent 'real' needs a field of view of at least {' x '.join(f'{s:g}' for s in REAL_FOV_MM)} mm "
            f"to hold a brain of BraTS size; shape x spacing gives {' x '.join(f'{s:g}' for s in fov)} mm"
        )
    lo, hi = (n_lesions, n_lesions) if np.isscalar(n_lesions) else tuple(n_lesions)
    if not 0 <= lo <= hi:
        raise ValueError(f"n_lesions must be an int >= 0 or a range (min, max) with min <= max, got {n_lesions}")

    rng = np.random.default_rng(seed)
    affine, head_world = make_affine(rng, shape, spacing)
    if extent == "real":
        semi = np.array(_REAL_HEAD_MM)  # head semi-axes (LR, AP, SI), mm
    else:
        semi = fov * (0.39, 0.45, 0.45)
    scale = float(np.prod(semi / _REF_HEAD_MM) ** (1 / 3))  # anatomy size relative to the default head
    pos = world_grid(affine, shape, head_world)  # 3 x [X, Y, Z], mm from the head centre, RAS
    tissue, brain = anatomy(rng, pos, semi, scale, spacing)  # [X, Y, Z] uint8, bool

    count = int(rng.integers(lo, hi + 1))
    base = tissue
    label, lesion_map, tissue = add_lesions(rng, count, p_enhancing, p_necrosis, tissue, brain, spacing, scale)
    brain_semi = semi - 13.5 * scale  # inside the scalp, skull and CSF layers
    if difficulty == "hard":
        hard = harden(rng, count, base, label, lesion_map, tissue, brain, pos, spacing, scale, _CONTRAST)
        images, label, lesion_map = hard["images"], hard["label"], hard["lesion_map"]
    else:
        images = _render(rng, tissue, spacing)
    if skull_stripped:
        images = {name: np.where(brain, image, 0).astype(np.float32) for name, image in images.items()}
    where = (label, affine, head_world, brain_semi, spacing)
    if difficulty == "easy":
        lesions = [describe(lesion_map == n, *where) for n in range(1, count + 1)]
        return DemoCase(case_id, images, label, affine, lesions, tissue)
    numbers = [n for n in range(1, int(lesion_map.max()) + 1) if (lesion_map == n).any()]
    extra = {n: {"satellite": n in hard["satellites"], "contrast": hard["lesion_contrast"][n]} for n in numbers}
    lesions = [describe(lesion_map == n, *where) | extra[n] for n in numbers]
    return DemoCase(case_id, images, label, affine, lesions, tissue, hard["mimics"], hard["knobs"])


def write_case(case: DemoCase, root: str | os.PathLike, layout: str = "brats2021") -> Path:
    """Write a case as ``root/<case_id>/<case_id><sep><suffix>.nii.gz`` and return its folder.

    ``brats2021``: suffixes ``flair``, ``t1``, ``t1ce``, ``t2``, ``seg`` joined by ``_``, labels 1/2/4.
    ``brats2023``: suffixes ``t1n``, ``t1c``, ``t2w``, ``t2f``, ``seg`` joined by ``-``, labels 1/2/3.
    Every file is written atomically (``medseg.io.atomic_path``), so a reader never sees a half-written
    NIfTI. Files are gzip'd with a fixed timestamp: the same case gives the same bytes.
    """
    spec = _layout(layout)
    folder = Path(root) / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    target = get_convention(layout)
    label = case.label.copy()  # [X, Y, Z] uint8
    for name, value in BRATS2021.labels.items():
        label[case.label == value] = target.labels[name]
    arrays = {**{m: case.images[m].astype(np.float32) for m in MODALITIES}, "label": label}
    for key, array in arrays.items():
        write_nifti(folder / f"{case.case_id}{spec['sep']}{spec['files'][key]}.nii.gz", array, case.affine)
    return folder


def write_nifti(target: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` [X, Y, Z] (its own dtype) with ``affine`` (qform = sform, code 1, mm) as ``.nii.gz``.

    Atomic (``medseg.io.write_atomic``) and reproducible: gzip'd with a fixed timestamp, so the same array
    gives the same bytes. Returns ``target``.
    """
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return write_atomic(target, gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def generate_dataset(
    root: str | os.PathLike,
    n_cases: int,
    seed: int = 0,
    start_index: int = 0,
    layout: str = "brats2021",
    **case_kwargs,
) -> list[Path]:
    """Write ``n_cases`` cases numbered from ``start_index`` and return their folders.

    Case ``i`` is drawn from the seed ``(seed, i)`` alone, so a held-out set made with another
    ``start_index`` (or ``seed``) never repeats a training case, and case ``i`` is the same whatever
    ``n_cases`` was. Also writes ``root/demo_truth.json``, ``{case_id: {"lesions": [...], "affine":
    [[4 x 4]], "spacing": [3]}}``, merged into the file a previous run left there. ``case_kwargs`` go to
    :func:`generate_case` (``shape``, ``spacing``, ``n_lesions``, ``p_enhancing``, ``p_necrosis``,
    ``skull_stripped``, ``difficulty``, ``extent``); a hard case's entry also holds ``"hard"``: its knobs.
    """
    spec = _layout(layout)
    if n_cases < 0 or seed < 0 or start_index < 0:
        raise ValueError(f"n_cases, seed and start_index must be >= 0, got {n_cases}, {seed}, {start_index}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    truth_path = root / "demo_truth.json"
    truth = json.loads(truth_path.read_text(encoding="utf-8")) if truth_path.exists() else {}
    folders = []
    for index in tqdm(range(start_index, start_index + n_cases), desc="demo cases", unit="case", disable=None):
        case = generate_case(spec["case_id"].format(index=index), seed=(seed, index), **case_kwargs)
        folders.append(write_case(case, root, layout))
        truth[case.case_id] = {"lesions": case.lesions, "affine": case.affine.tolist(), "spacing": list(case.spacing)}
        if case.knobs is not None:
            truth[case.case_id]["hard"] = case.knobs
    write_atomic(truth_path, json.dumps(truth, indent=1))
    return folders


# ----------------------------------------------------------------------------------------------- geometry


# ----------------------------------------------------------------------------------------------- anatomy


# ----------------------------------------------------------------------------------------------- lesions


# ----------------------------------------------------------------------------------------------- images


def _render(rng: np.random.Generator, tissue: np.ndarray, spacing: tuple) -> dict[str, np.ndarray]:
    """Tissue map [X, Y, Z] -> modality -> float32 image [X, Y, Z] (>= 0, 0 outside the head).

    Per modality: jittered tissue table, tissue texture (3 %) and tumour heterogeneity (10 %), Gaussian
    blur of 0.4 in-plane voxels (partial volume), smooth bias field (about +-25 %), Gaussian noise, then a
    gain of 150-1500.
    """
    shape = tissue.shape
    head = tissue != BG
    tumour = tissue >= EDEMA
    contrast = _CONTRAST * np.clip(1 + 0.04 * rng.standard_normal(_CONTRAST.shape), 0.9, 1.1)
    images = {}
    for m, name in enumerate(MODALITIES):
        img = contrast[m].astype(np.float32)[tissue]  # [X, Y, Z]
        texture = 0.03 * smooth_field(rng, shape, spacing, 8.0)
        img *= 1 + texture + 0.10 * tumour * smooth_field(rng, shape, spacing, 12.0)
        img = ndimage.gaussian_filter(img, sigma=0.4 * min(spacing) / np.asarray(spacing))
        img *= np.exp(0.12 * smooth_field(rng, shape, spacing, 120.0))
        img += 0.03 * rng.standard_normal(shape, dtype=np.float32)
        gain = np.exp(rng.uniform(np.log(150), np.log(1500)))
        images[name] = (np.clip(img, 0, None) * head * gain).astype(np.float32)
    return images


# ----------------------------------------------------------------------------------------------- files


def _layout(layout: str) -> dict:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    return LAYOUTS[layout]


def holds_cases(folder: Path) -> bool:
    """Whether ``folder`` already holds NIfTI cases (``*/*.nii*``: case folders, ``imagesTr/``, ...) or a
    demo's metadata file (``demo_truth.json``, or ``dataset.json`` / ``dataset_0.json`` of the CT demo)."""
    names = ("demo_truth.json", "dataset.json", "dataset_0.json")
    return any((folder / name).exists() for name in names) or any(folder.glob("*/*.nii*"))
