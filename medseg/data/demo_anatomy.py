"""The anatomy and lesions of a synthetic case (:mod:`medseg.data.demo`): geometry (a rotated, LPS-stored,
anisotropic affine), a head of tissue classes in world millimetres, and tumours placed in the brain with
their metadata. Pure numpy/scipy: what a case looks like on each MRI contrast is :mod:`medseg.data.demo`'s."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.data.labels import BRATS2021

# Tissue classes of DemoCase.tissue; index into _CONTRAST's columns.
TISSUES = (
    "background", "scalp", "skull", "csf", "grey_matter", "white_matter", "deep_grey_matter",
    "edema", "enhancing", "necrosis", "non_enhancing",
)  # fmt: skip
BG, SCALP, SKULL, CSF, GM, WM, DEEP_GM, EDEMA, ENHANCING, NECROSIS, NON_ENHANCING = range(len(TISSUES))

_EDEMA_EXTENTS = {"minimal": (0.05, 0.18), "moderate": (0.28, 0.45), "extensive": (0.7, 1.3)}  # margin / core radius


def make_affine(rng: np.random.Generator, shape: tuple, spacing: tuple) -> tuple[np.ndarray, np.ndarray]:
    """A BraTS-like voxel -> world affine and the world position of the head centre (on x = 0).

    x and y are flipped (LPS-like storage), the axes rotated by 2-5 degrees about a random axis; the head
    centre sits near, not at, the middle of the volume.
    """
    centre = (np.array(shape) - 1) / 2 + rng.uniform(-1.5, 1.5, 3) * (1.0, 1.0, 0.5)  # voxel index
    axis = rng.normal(size=3)
    rotation = rotation_matrix(axis / np.linalg.norm(axis), np.deg2rad(rng.uniform(2.0, 5.0)))
    linear = rotation @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)  # [3, 3]
    head_world = np.array([0.0, rng.uniform(-25.0, -10.0), rng.uniform(5.0, 20.0)])  # mm
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = head_world - linear @ centre
    return affine, head_world


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix [3, 3] about a unit axis (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def world_grid(affine: np.ndarray, shape: tuple, origin: np.ndarray) -> list[np.ndarray]:
    """World RAS coordinates (mm) of every voxel, minus ``origin``: 3 float32 arrays [X, Y, Z]."""
    idx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    offset = affine[:3, 3] - origin
    return [sum(np.float32(affine[r, c]) * idx[c] for c in range(3)) + np.float32(offset[r]) for r in range(3)]


def smooth_field(rng: np.random.Generator, shape: tuple, spacing: tuple, wavelength_mm: float) -> np.ndarray:
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


def anatomy(
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
    outline = smooth_field(rng, shape, spacing, 60.0 * s)
    rho = np.sqrt((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2)  # 1 on the ellipsoid
    radius = np.sqrt(x * x + y * y + z * z)
    with np.errstate(divide="ignore", invalid="ignore"):
        surface = radius / rho / (1.0 + 0.03 * outline)  # distance from the centre to the scalp along the ray
    depth = np.where(rho > 1e-6, surface - radius, semi.min())  # [X, Y, Z] mm below the scalp

    # Interhemispheric fissure: the depth to the midline plane, vanishing smoothly below the callosum.
    fissure_gate = 3.0 * np.maximum(18.0 * s - z, 0) * np.maximum(1.0 - np.abs(y) / (0.6 * semi[1]), 0)
    depth = np.minimum(depth, 12.5 * s + np.abs(x) + fissure_gate)

    gyri = smooth_field(rng, shape, spacing, 16.0 * s)
    sulci = np.abs(smooth_field(rng, shape, spacing, 14.0 * s))  # sulci lie along its zero surfaces
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


def add_lesions(
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
            if not place_lesion(rng, number, enhancing, necrotic, *maps, brain, brain_depth, apart, spacing, size):
                break
        else:
            return label, lesion_map, tissue
    raise ValueError(
        f"could not place {count} separate lesions inside the brain of a {anatomy.shape} volume; "
        "ask for fewer lesions or a larger shape"
    )


def place_lesion(
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
        masks = lesion_masks(rng, centre, seed, rim_mm, edema_mm, enhancing, necrotic, label.shape, spacing)
        if masks is None:
            continue
        box, wt, core, centre_mask, seed_mask = masks
        if (core & ~brain[box]).any():
            continue  # the core would leave the brain; edema may reach its edge and is cut there
        wt = connected_to(wt & brain[box], seed_mask)
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


def lesion_masks(
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
    wobble = np.clip(smooth_field(rng, crop, spacing, 0.6 * seed_mm), -2.0, 2.0)
    seed = radius < seed_mm * (1 + 0.22 * wobble)  # [x, y, z]

    if enhancing and necrotic:
        coarse = spacing.max()
        if ndimage.distance_transform_edt(seed, sampling=spacing).max() < 2 * coarse:
            return None
        nodules = np.clip(smooth_field(rng, crop, spacing, 10.0), 0, 1.5) * coarse
        core = ndimage.distance_transform_edt(~seed, sampling=spacing) <= rim_mm + nodules
        centre_mask = seed
    else:
        core, centre_mask = seed, np.zeros(crop, bool)
        if not enhancing and not necrotic:
            core = np.zeros(crop, bool)  # edema only, grown from where the core would be
    patchy = np.clip(1 + 0.6 * smooth_field(rng, crop, spacing, 1.2 * seed_mm), 0.3, 1.8)
    edema = ndimage.distance_transform_edt(~(core | seed), sampling=spacing) <= edema_mm * patchy
    return box, core | seed | edema, core, centre_mask, seed


def connected_to(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` (26-connected) that touch ``seed``: drops stray islands of edema."""
    parts, _ = ndimage.label(mask, np.ones((3, 3, 3), bool))
    return np.isin(parts, np.unique(parts[seed & mask])) & mask


def describe(
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
