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
  x > 0 lies in the patient's right hemisphere.

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
from medseg.data.labels import BRATS2021, get_convention
from medseg.io import write_atomic

# Tissue classes of DemoCase.tissue; index into _CONTRAST's columns.
TISSUES = (
    "background", "scalp", "skull", "csf", "grey_matter", "white_matter", "deep_grey_matter",
    "edema", "enhancing", "necrosis", "non_enhancing",
)  # fmt: skip
BG, SCALP, SKULL, CSF, GM, WM, DEEP_GM, EDEMA, ENHANCING, NECROSIS, NON_ENHANCING = range(len(TISSUES))

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
_EDEMA_EXTENTS = {"minimal": (0.05, 0.18), "moderate": (0.28, 0.45), "extensive": (0.7, 1.3)}  # margin / core radius
_MIN_SHAPE = 32


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
    """

    case_id: str
    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    lesions: list[dict]
    tissue: np.ndarray | None = None

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

    Each entry of ``lesions`` holds: ``centre_voxel`` (WT centroid, array index), ``centre_mm`` (the same
    point in world RAS mm), ``hemisphere`` (``left``/``right``, from the sign of world x: x > 0 is the
    patient's right), ``lobe`` (``frontal``/``parietal``/``temporal``/``occipital``, a rough guess from
    position), ``volume_ml`` (whole tumour), ``core_volume_ml`` (TC), ``enhancing_volume_ml``,
    ``necrotic_volume_ml``, ``edema_volume_ml``, ``enhancing`` and ``necrotic`` (bool: label 4 / label 1
    present), ``edema_extent`` (edema share of the whole tumour: ``minimal`` < 0.45 <= ``moderate`` < 0.75
    <= ``extensive``) and ``bbox_voxel`` ``{"min": [x, y, z], "max": [x, y, z]}`` (inclusive indices).

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
    lo, hi = (n_lesions, n_lesions) if np.isscalar(n_lesions) else tuple(n_lesions)
    if not 0 <= lo <= hi:
        raise ValueError(f"n_lesions must be an int >= 0 or a range (min, max) with min <= max, got {n_lesions}")

    rng = np.random.default_rng(seed)
    affine, head_world = _make_affine(rng, shape, spacing)
    semi = np.array(shape) * spacing * (0.39, 0.45, 0.45)  # head semi-axes (LR, AP, SI), mm
    scale = float(np.prod(semi / _REF_HEAD_MM) ** (1 / 3))  # anatomy size relative to the default head
    pos = _world_grid(affine, shape, head_world)  # 3 x [X, Y, Z], mm from the head centre, RAS
    tissue, brain = _anatomy(rng, pos, semi, scale, spacing)  # [X, Y, Z] uint8, bool

    count = int(rng.integers(lo, hi + 1))
    label, lesion_map, tissue = _add_lesions(rng, count, p_enhancing, p_necrosis, tissue, brain, spacing, scale)
    images = _render(rng, tissue, spacing)
    if skull_stripped:
        images = {name: np.where(brain, image, 0).astype(np.float32) for name, image in images.items()}
    brain_semi = semi - 13.5 * scale  # inside the scalp, skull and CSF layers
    lesions = [_describe(lesion_map == n, label, affine, head_world, brain_semi, spacing) for n in range(1, count + 1)]
    return DemoCase(case_id, images, label, affine, lesions, tissue)


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
        img = nib.Nifti1Image(array, case.affine)
        img.set_qform(case.affine, code=1)
        img.set_sform(case.affine, code=1)
        img.header.set_xyzt_units("mm")
        data = gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)  # fixed mtime: same case, same bytes
        write_atomic(folder / f"{case.case_id}{spec['sep']}{spec['files'][key]}.nii.gz", data)
    return folder


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
    :func:`generate_case` (``shape``, ``spacing``, ``n_lesions``, ``p_enhancing``, ``p_necrosis``).
    """
    spec = _layout(layout)
    if n_cases < 0 or seed < 0 or start_index < 0:
        raise ValueError(f"n_cases, seed and start_index must be >= 0, got {n_cases}, {seed}, {start_index}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    truth_path = root / "demo_truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    folders = []
    for index in tqdm(range(start_index, start_index + n_cases), desc="demo cases", unit="case", disable=None):
        case = generate_case(spec["case_id"].format(index=index), seed=(seed, index), **case_kwargs)
        folders.append(write_case(case, root, layout))
        truth[case.case_id] = {"lesions": case.lesions, "affine": case.affine.tolist(), "spacing": list(case.spacing)}
    write_atomic(truth_path, json.dumps(truth, indent=1))
    return folders




# ----------------------------------------------------------------------------------------------- geometry


def _make_affine(rng: np.random.Generator, shape: tuple, spacing: tuple) -> tuple[np.ndarray, np.ndarray]:
    """A BraTS-like voxel -> world affine and the world position of the head centre (on x = 0).

    x and y are flipped (LPS-like storage), the axes rotated by 2-5 degrees about a random axis; the head
    centre sits near, not at, the middle of the volume.
    """
    centre = (np.array(shape) - 1) / 2 + rng.uniform(-1.5, 1.5, 3) * (1.0, 1.0, 0.5)  # voxel index
    axis = rng.normal(size=3)
    rotation = _rotation(axis / np.linalg.norm(axis), np.deg2rad(rng.uniform(2.0, 5.0)))
    linear = rotation @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)  # [3, 3]
    head_world = np.array([0.0, rng.uniform(-25.0, -10.0), rng.uniform(5.0, 20.0)])  # mm
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = head_world - linear @ centre
    return affine, head_world


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix [3, 3] about a unit axis (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _world_grid(affine: np.ndarray, shape: tuple, origin: np.ndarray) -> list[np.ndarray]:
    """World RAS coordinates (mm) of every voxel, minus ``origin``: 3 float32 arrays [X, Y, Z]."""
    idx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    offset = affine[:3, 3] - origin
    return [sum(np.float32(affine[r, c]) * idx[c] for c in range(3)) + np.float32(offset[r]) for r in range(3)]


def _smooth_field(rng: np.random.Generator, shape: tuple, spacing: tuple, wavelength_mm: float) -> np.ndarray:
    """Smooth random field [X, Y, Z] (float32, mean 0, std 1) with features about ``wavelength_mm`` apart.

    A lattice of Gaussian bumps with random weights, evaluated as a separable tensor product: cheap at
    any resolution.
    """
    bases = []
    for n, step in zip(shape, spacing):
        k = max(2, int(np.ceil(n * step / wavelength_mm)))  # knots inside the volume
        width = max(n - 1, 1) / (k - 1)
        knots = np.arange(-1, k + 1) * width  # one more knot beyond each edge
        bases.append(np.exp(-0.5 * ((np.arange(n)[:, None] - knots) / width) ** 2))  # [n, k + 2]
    weights = rng.standard_normal([b.shape[1] for b in bases])
    field = np.einsum("ia,jb,kc,abc->ijk", *bases, weights, optimize=True)  # [X, Y, Z]
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- anatomy


def _anatomy(
    rng: np.random.Generator, pos: list[np.ndarray], semi: np.ndarray, scale: float, spacing: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map [X, Y, Z] (uint8, TISSUES index) and the brain mask [X, Y, Z] lesions may occupy.

    Layers are laid by depth below an irregular ellipsoidal scalp surface (mm, scaled with the head):
    scalp 0-5, skull 5-11, CSF 11-13.5, cortex to a wavy 17-21 (deeper along sulci), then white matter;
    the interhemispheric fissure is a second surface at x = 0 above the corpus callosum.
    """
    x, y, z = pos
    shape = x.shape
    s = scale
    outline = _smooth_field(rng, shape, spacing, 60.0 * s)
    rho = np.sqrt((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2)  # 1 on the ellipsoid
    radius = np.sqrt(x * x + y * y + z * z)
    with np.errstate(divide="ignore", invalid="ignore"):
        surface = radius / rho / (1.0 + 0.03 * outline)  # distance from the centre to the scalp along the ray
    depth = np.where(rho > 1e-6, surface - radius, semi.min())  # [X, Y, Z] mm below the scalp

    # Interhemispheric fissure: the depth to the midline plane, vanishing smoothly below the callosum.
    fissure_gate = 3.0 * np.maximum(18.0 * s - z, 0) * np.maximum(1.0 - np.abs(y) / (0.6 * semi[1]), 0)
    depth = np.minimum(depth, 12.5 * s + np.abs(x) + fissure_gate)

    gyri = _smooth_field(rng, shape, spacing, 16.0 * s)
    sulci = np.abs(_smooth_field(rng, shape, spacing, 14.0 * s))  # sulci lie along its zero surfaces
    white_from = (18.0 + 2.0 * gyri + 5.0 * (sulci < 0.4)) * s  # depth where white matter begins

    tissue = np.zeros(shape, np.uint8)  # [X, Y, Z]
    tissue[depth >= 0] = SCALP
    tissue[depth >= 5.0 * s] = SKULL
    tissue[depth >= 11.0 * s] = CSF
    brain = depth >= 13.5 * s
    tissue[brain] = GM
    tissue[brain & (depth < white_from) & (sulci < 0.12)] = CSF  # sulci
    tissue[brain & (depth >= white_from)] = WM

    deep = np.zeros(shape, bool)
    for side in (-1, 1):  # basal ganglia / thalamus, lateral to the ventricles
        deep |= ((x - side * 17 * s) / (8 * s)) ** 2 + ((y + 2 * s) / (13 * s)) ** 2 + ((z + s) / (8 * s)) ** 2 < 1
    tissue[deep & (tissue == WM)] = DEEP_GM
    ventricles = (x / (1.5 * s)) ** 2 + (y / (9 * s)) ** 2 + ((z + 2 * s) / (6 * s)) ** 2 < 1  # third ventricle
    arch = 10 * s - 12 * s * (y / (24 * s)) ** 2  # lateral ventricles bend down at both ends
    for side in (-1, 1):
        ventricles |= ((x - side * 7 * s) / (4.5 * s)) ** 2 + (y / (24 * s)) ** 2 + ((z - arch) / (6 * s)) ** 2 < 1
    tissue[ventricles & brain] = CSF
    return tissue, brain


# ----------------------------------------------------------------------------------------------- lesions


def _add_lesions(
    rng: np.random.Generator,
    count: int,
    p_enhancing: float,
    p_necrosis: float,
    anatomy: np.ndarray,
    brain: np.ndarray,
    spacing: tuple,
    scale: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint ``count`` separate lesions: label (BraTS 2021), lesion number (1-based), tissue, all [X, Y, Z]."""
    brain_depth = ndimage.distance_transform_edt(brain, sampling=spacing)  # [X, Y, Z] mm to non-brain
    size = scale / max(count, 1) ** (1 / 3)  # several lesions share the brain
    for _ in range(4):  # early lesions can leave no room for the last: start over
        label = np.zeros(anatomy.shape, np.uint8)  # [X, Y, Z]
        lesion_map = np.zeros(anatomy.shape, np.uint8)  # [X, Y, Z]
        tissue = anatomy.copy()
        for number in range(1, count + 1):
            enhancing, necrotic = rng.random() < p_enhancing, rng.random() < p_necrosis
            apart = ndimage.distance_transform_edt(label == 0, sampling=spacing) if number > 1 else None  # mm
            maps = (label, lesion_map, tissue)
            if not _place_lesion(rng, number, enhancing, necrotic, *maps, brain, brain_depth, apart, spacing, size):
                break
        else:
            return label, lesion_map, tissue
    raise ValueError(
        f"could not place {count} separate lesions inside the brain of a {anatomy.shape} volume; "
        "ask for fewer lesions or a larger shape"
    )


def _place_lesion(
    rng: np.random.Generator,
    number: int,
    enhancing: bool,
    necrotic: bool,
    label: np.ndarray,
    lesion_map: np.ndarray,
    tissue: np.ndarray,
    brain: np.ndarray,
    brain_depth: np.ndarray,
    apart: np.ndarray | None,
    spacing: tuple,
    scale: float,
) -> bool:
    """Draw one lesion inside the brain, apart from earlier ones, paint it into the maps; False if none fits.

    Sizes: whole-tumour radius 6-16 voxels (scaled with the head), edema margin by extent class, a rim
    of 2-3 voxels along every axis, a necrotic centre whose deepest voxel is >= 2 voxels from its edge.
    Centres are drawn where ``brain_depth`` (mm to the brain's edge) fits the core and ``apart`` (mm to
    earlier lesions, None for the first) the whole tumour. Retries elsewhere, then smaller, when a lesion
    would touch another or its core leave the brain.
    """
    inplane, coarse = float(np.mean(spacing[:2])), max(spacing)
    with_rim = enhancing and necrotic
    rim_mm = rng.uniform(2 * coarse, max(2 * coarse, 3 * min(spacing)))
    extent = rng.choice(list(_EDEMA_EXTENTS), p=(0.2, 0.4, 0.4))
    margin = rng.uniform(*_EDEMA_EXTENTS[extent])
    core_mm = rng.uniform(6, 16) * inplane * scale / (1 + margin)  # whole tumour radius / (1 + margin)
    min_seed = 3 * coarse if with_rim else 3 * inplane
    seed_mm = core_mm - rim_mm if with_rim else core_mm  # the shape the rest grows around

    for attempt in range(40):
        seed = max(seed_mm * 0.85 ** (attempt // 8), min_seed)
        reach = 1.2 * seed + (rim_mm if with_rim else 0)  # typical core radius, mm
        edema_mm = max(margin * reach, 1.5 * inplane)
        fits = brain_depth >= reach
        if apart is not None:
            fits &= apart >= reach + edema_mm
        candidates = np.flatnonzero(fits)
        if candidates.size == 0:
            continue
        centre = np.array(np.unravel_index(rng.choice(candidates), label.shape))
        masks = _lesion_masks(rng, centre, seed, rim_mm, edema_mm, enhancing, necrotic, label.shape, spacing)
        if masks is None:
            continue
        box, wt, core, centre_mask, seed_mask = masks
        if (core & ~brain[box]).any():
            continue  # the core would leave the brain; edema may reach its edge and is cut there
        wt = _connected_to(wt & brain[box], seed_mask)
        if (ndimage.binary_dilation(wt, np.ones((3, 3, 3), bool)) & (label[box] > 0)).any():
            continue  # would touch an earlier lesion
        lab, tis, ids = label[box], tissue[box], lesion_map[box]  # views: painting them paints the case
        lab[wt], tis[wt], ids[wt] = BRATS2021.labels["edema"], EDEMA, number
        if enhancing:
            lab[core], tis[core] = BRATS2021.labels["enhancing"], ENHANCING
        else:
            lab[core], tis[core] = BRATS2021.labels["necrotic"], NON_ENHANCING
        lab[centre_mask], tis[centre_mask] = BRATS2021.labels["necrotic"], NECROSIS
        return True
    return False


def _lesion_masks(
    rng: np.random.Generator,
    centre: np.ndarray,
    seed_mm: float,
    rim_mm: float,
    edema_mm: float,
    enhancing: bool,
    necrotic: bool,
    shape: tuple,
    spacing: tuple,
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Masks of one lesion in a box around ``centre``: (box, whole tumour, core, necrotic centre, seed).

    The seed is an ellipsoid (random axes and orientation) whose radius is perturbed by smooth noise.
    Enhancing + necrotic: seed = necrosis, core = seed grown by the (nodular) rim. Otherwise the seed is
    the core and the centre mask is empty; a non-enhancing lesion without necrosis has no core at all.
    Edema grows from the core by a patchy margin. Returns None when the necrosis comes out too thin.
    """
    spacing = np.asarray(spacing)
    grow = (rim_mm + 1.5 * spacing.max() if enhancing and necrotic else 0) + edema_mm * 1.8  # rim, nodules, edema
    half = np.ceil((seed_mm * 1.6 * 1.44 + grow) / spacing).astype(int) + 2  # longest axis, widest wobble
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = tuple(int(b - a) for a, b in zip(lo, hi))

    axes = np.clip(np.exp(rng.normal(0, 0.18, 3)), 0.72, 1.4)
    axes /= np.prod(axes) ** (1 / 3)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    offsets = np.meshgrid(*((np.arange(a, b) - c) * d for a, b, c, d in zip(lo, hi, centre, spacing)), indexing="ij")
    d = np.stack(offsets, axis=-1) @ rotation / axes  # [x, y, z, 3], mm in the ellipsoid's frame
    radius = np.linalg.norm(d, axis=-1)  # [x, y, z]
    wobble = np.clip(_smooth_field(rng, crop, spacing, 0.6 * seed_mm), -2.0, 2.0)
    seed = radius < seed_mm * (1 + 0.22 * wobble)  # [x, y, z]

    if enhancing and necrotic:
        coarse = spacing.max()
        if ndimage.distance_transform_edt(seed, sampling=spacing).max() < 2 * coarse:
            return None
        nodules = np.clip(_smooth_field(rng, crop, spacing, 10.0), 0, 1.5) * coarse
        core = ndimage.distance_transform_edt(~seed, sampling=spacing) <= rim_mm + nodules
        centre_mask = seed
    else:
        core, centre_mask = seed, np.zeros(crop, bool)
        if not enhancing and not necrotic:
            core = np.zeros(crop, bool)  # edema only, grown from where the core would be
    patchy = np.clip(1 + 0.6 * _smooth_field(rng, crop, spacing, 1.2 * seed_mm), 0.3, 1.8)
    edema = ndimage.distance_transform_edt(~(core | seed), sampling=spacing) <= edema_mm * patchy
    return box, core | seed | edema, core, centre_mask, seed


def _connected_to(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` (26-connected) that touch ``seed``: drops stray islands of edema."""
    parts, _ = ndimage.label(mask, np.ones((3, 3, 3), bool))
    return np.isin(parts, np.unique(parts[seed & mask])) & mask


def _describe(
    mask: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    head_world: np.ndarray,
    brain_semi: np.ndarray,
    spacing: tuple,
) -> dict:
    """JSON-serialisable metadata of the lesion in ``mask`` [X, Y, Z] (see :func:`generate_case`)."""
    ml = float(np.prod(spacing)) / 1000.0
    values = label[mask]
    counts = {name: int((values == v).sum()) for name, v in BRATS2021.labels.items()}
    core = counts["necrotic"] + counts["enhancing"]
    centre = np.argwhere(mask).mean(axis=0)  # voxel index
    world = affine[:3, :3] @ centre + affine[:3, 3]
    u, v, w = (world - head_world) / brain_semi  # position in the brain, about -1..1 (RAS)
    if v < -0.55:
        lobe = "occipital"
    elif w < -0.05 and abs(u) > 0.3 and v < 0.35:
        lobe = "temporal"
    elif v > -0.05:
        lobe = "frontal"
    else:
        lobe = "parietal"
    edema_share = counts["edema"] / max(values.size, 1)
    where = np.argwhere(mask)
    return {
        "centre_voxel": [round(float(c), 2) for c in centre],
        "centre_mm": [round(float(c), 2) for c in world],
        "hemisphere": "right" if world[0] > 0 else "left",
        "lobe": lobe,
        "volume_ml": round(values.size * ml, 4),
        "core_volume_ml": round(core * ml, 4),
        "enhancing_volume_ml": round(counts["enhancing"] * ml, 4),
        "necrotic_volume_ml": round(counts["necrotic"] * ml, 4),
        "edema_volume_ml": round(counts["edema"] * ml, 4),
        "enhancing": counts["enhancing"] > 0,
        "necrotic": counts["necrotic"] > 0,
        "edema_extent": "minimal" if edema_share < 0.45 else "moderate" if edema_share < 0.75 else "extensive",
        "bbox_voxel": {"min": [int(i) for i in where.min(axis=0)], "max": [int(i) for i in where.max(axis=0)]},
    }


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
        texture = 0.03 * _smooth_field(rng, shape, spacing, 8.0)
        img *= 1 + texture + 0.10 * tumour * _smooth_field(rng, shape, spacing, 12.0)
        img = ndimage.gaussian_filter(img, sigma=0.4 * min(spacing) / np.asarray(spacing))
        img *= np.exp(0.12 * _smooth_field(rng, shape, spacing, 120.0))
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
    """Whether ``folder`` already holds NIfTI cases or a demo_truth.json."""
    return (folder / "demo_truth.json").exists() or any(folder.glob("*/*.nii*"))


