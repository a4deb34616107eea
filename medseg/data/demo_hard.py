"""What ``difficulty="hard"`` adds to a synthetic case (:mod:`medseg.data.demo`) besides its rendering
(:mod:`medseg.data.demo_hard_render`): labelled satellite lesions near the tumours, unlabelled mimics
(enhancing vessels, choroid plexus, white-matter hyperintensities) and about a voxel of label-boundary
noise. Pure numpy/scipy, every draw from the case's generator."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.data.demo_anatomy import CSF, EDEMA, ENHANCING, WM, smooth_field
from medseg.data.demo_hard_render import render_hard
from medseg.data.labels import BRATS2021

# DemoCase.mimics values: unlabelled structures that look like tumour on some contrast.
MIMICS = ("none", "vessel", "choroid_plexus", "wm_lesion")
NO_MIMIC, VESSEL, CHOROID, WM_LESION = range(len(MIMICS))

# The knobs, as (low, high) ranges drawn per case (counts inclusive).
SATELLITES = {0: 0.3, 1: 0.35, 2: 0.2, 3: 0.15}  # extra labelled lesions per case with a tumour: probability
P_SATELLITE_ENHANCING = 0.75  # else an edema-only satellite (label 2)
VESSELS = (8, 20)  # enhancing vessel segments, 15-50 mm long (scaled with the head), radius 0.6-1.5 mm
WM_LESIONS = (3, 12)  # unlabelled white-matter hyperintensities, radius 1.2-2.5 voxels
LABEL_SHIFT_STD = 0.45  # voxels: the label is resampled a rounded smooth shift away (|shift| >= 1 on ~27 % per axis)


def harden(
    rng: np.random.Generator,
    count: int,
    base: np.ndarray,
    label: np.ndarray,
    lesion_map: np.ndarray,
    tissue: np.ndarray,
    brain: np.ndarray,
    pos: list[np.ndarray],
    spacing: tuple,
    scale: float,
    contrast: np.ndarray,
) -> dict:
    """Satellites, mimics, hard rendering and label noise for a case whose ``count`` tumours are painted.

    Args:
        base: tissue map [X, Y, Z] before the lesions; ``label``, ``lesion_map``, ``tissue`` [X, Y, Z] with
            them (painted further in place); ``brain`` [X, Y, Z] bool; ``pos`` 3 x [X, Y, Z] world mm from
            the head centre; ``contrast`` the tissue table [4, TISSUES] of :mod:`medseg.data.demo`.

    Returns ``{"images", "label", "lesion_map", "mimics", "knobs", "lesion_contrast", "satellites"}``:
    images modality -> float32 [X, Y, Z]; label (noisy, BraTS 2021) and lesion_map [X, Y, Z] uint8; mimics
    [X, Y, Z] uint8 (MIMICS index); knobs a JSON-serialisable dict of this case's draws; lesion_contrast
    lesion number -> dict; satellites the lesion numbers that are satellites.
    """
    n_sat = int(rng.choice(list(SATELLITES), p=list(SATELLITES.values()))) if count else 0
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)  # [X, Y, Z] mm to non-brain
    satellites = add_satellites(rng, n_sat, label, lesion_map, tissue, brain, depth, spacing)
    n_vessels = int(rng.integers(VESSELS[0], VESSELS[1] + 1))
    vessel = vessels(rng, n_vessels, brain, depth, label, spacing, scale)
    choroid = choroid_plexus(rng, pos, base, brain, label, spacing, scale)
    n_wml = int(rng.integers(WM_LESIONS[0], WM_LESIONS[1] + 1))
    wml = wm_lesions(rng, n_wml, base, label, spacing)
    images, knobs, lesion_contrast = render_hard(rng, base, tissue, lesion_map, vessel, choroid, wml, contrast, spacing)

    mimics = np.zeros(label.shape, np.uint8)  # [X, Y, Z]
    mimics[vessel > 0.5] = VESSEL
    mimics[choroid > 0.5] = CHOROID
    mimics[wml > 0.5] = WM_LESION
    label, lesion_map = jitter_label(rng, label, lesion_map, brain, spacing)
    mimics[label > 0] = NO_MIMIC  # unlabelled by definition, also where the label's noise covers one
    knobs |= {"satellites": len(satellites), "vessels": n_vessels, "wm_lesions": n_wml}
    return {
        "images": images, "label": label, "lesion_map": lesion_map, "mimics": mimics,
        "knobs": knobs, "lesion_contrast": lesion_contrast, "satellites": satellites,
    }  # fmt: skip


def blob(
    rng: np.random.Generator, centre: np.ndarray, radius_mm: float, shape: tuple, spacing: tuple
) -> tuple[tuple[slice, ...], np.ndarray]:
    """A randomly oriented, slightly elongated ellipsoid of mean radius ``radius_mm`` around ``centre`` (voxel
    index): its box and ``rho`` [x, y, z] in that box (1 on the surface, 0 at the centre)."""
    spacing = np.asarray(spacing)
    axes = np.clip(np.exp(rng.normal(0, 0.25, 3)), 0.6, 1.6)
    axes *= radius_mm / np.prod(axes) ** (1 / 3)  # mm
    half = np.ceil(2 * axes.max() / spacing).astype(int) + 1
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, shape)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    offsets = np.meshgrid(*((np.arange(a, b) - c) * d for a, b, c, d in zip(lo, hi, centre, spacing)), indexing="ij")
    rho = np.linalg.norm(np.stack(offsets, axis=-1) @ rotation / axes, axis=-1)  # [x, y, z]
    return tuple(slice(a, b) for a, b in zip(lo, hi)), rho


def _pick(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray | None:
    where = np.flatnonzero(mask)
    return np.array(np.unravel_index(rng.choice(where), mask.shape)) if where.size else None


def add_satellites(
    rng: np.random.Generator,
    count: int,
    label: np.ndarray,
    lesion_map: np.ndarray,
    tissue: np.ndarray,
    brain: np.ndarray,
    depth: np.ndarray,
    spacing: tuple,
) -> list[int]:
    """Paint up to ``count`` small labelled lesions 1-8 voxels from the existing ones, never touching one;
    return their numbers. ``depth`` [X, Y, Z]: mm to the brain's edge.

    Each is an enhancing nodule (label 4) of radius 1-1.8 voxels along the coarsest axis inside 0.4-1.2
    voxels of edema (label 2), or, with probability 1 - P_SATELLITE_ENHANCING, edema alone. Painted in place.
    """
    coarse = max(spacing)
    gap = ndimage.distance_transform_edt(label == 0, sampling=spacing)  # mm to the tumours
    numbers = []
    for _ in range(count):
        core_mm, margin_mm = rng.uniform(1.0, 1.8) * coarse, rng.uniform(0.4, 1.2) * coarse
        enhancing = rng.random() < P_SATELLITE_ENHANCING
        reach = core_mm + margin_mm  # mean radius; blob's longest axis is up to 1.6 x
        centre = _pick(rng, (gap >= 1.6 * reach + coarse) & (gap <= reach + 8 * coarse) & (depth >= reach + coarse))
        if centre is None:
            continue
        box, rho = blob(rng, centre, core_mm, label.shape, spacing)
        whole = (rho <= reach / core_mm) & brain[box]
        if (ndimage.binary_dilation(whole, np.ones((3, 3, 3), bool)) & (label[box] > 0)).any():
            continue  # would touch a tumour or an earlier satellite
        number = int(lesion_map.max()) + 1
        lab, tis, ids = label[box], tissue[box], lesion_map[box]  # views
        lab[whole], tis[whole], ids[whole] = BRATS2021.labels["edema"], EDEMA, number
        if enhancing:
            core = (rho <= 1) & brain[box]
            lab[core], tis[core] = BRATS2021.labels["enhancing"], ENHANCING
        numbers.append(number)
    return numbers


def vessels(
    rng: np.random.Generator,
    count: int,
    brain: np.ndarray,
    depth: np.ndarray,
    label: np.ndarray,
    spacing: tuple,
    scale: float,
) -> np.ndarray:
    """Weights [X, Y, Z] (float32, 0-1) of ``count`` curving vessel segments, kept out of the tumour.

    60 % start within 6 mm of the brain's surface and run along it (cortical veins), the rest start anywhere
    (medullary veins); each is a smooth random walk with a Gaussian profile (radius 0.6-1.5 mm, peak 0.5-1).
    """
    spacing = np.asarray(spacing, dtype=float)
    step = 0.5 * spacing.min()  # mm
    normal = np.stack(np.gradient(depth, *spacing))  # [3, X, Y, Z], points into the brain
    radius_of = np.zeros(brain.shape, np.float32)  # [X, Y, Z], 0 where no vessel passes
    peak_of = np.zeros(brain.shape, np.float32)
    shallow = brain & (depth < 6.0 * max(scale, 0.5) + spacing.max())
    for _ in range(count):
        surface = rng.random() < 0.6
        start = _pick(rng, shallow if surface else brain)
        if start is None:
            continue
        point = start * spacing  # mm
        direction = rng.normal(size=3)
        radius, peak = rng.uniform(0.6, 1.5), rng.uniform(0.5, 1.0)
        n_steps = int(rng.uniform(15, 50) * max(scale, 0.5) / step)
        kicks = rng.normal(size=(n_steps, 3)) * rng.uniform(0.15, 0.4) * np.sqrt(step)
        for kick in kicks:
            idx = tuple(np.round(point / spacing).astype(int))
            if min(idx) < 0 or any(i >= n for i, n in zip(idx, brain.shape)) or not brain[idx]:
                break
            radius_of[idx], peak_of[idx] = radius, peak
            direction = direction / np.linalg.norm(direction) + kick
            if surface:  # stay at the same depth: drop the component along the depth gradient
                n = normal[(slice(None), *idx)]
                direction -= direction @ n / max(n @ n, 1e-6) * n
            point = point + step * direction / max(np.linalg.norm(direction), 1e-6)
    if not radius_of.any():
        return np.zeros(brain.shape, np.float32)
    dist, nearest = ndimage.distance_transform_edt(radius_of == 0, sampling=spacing, return_indices=True)
    radius, peak = radius_of[tuple(nearest)], peak_of[tuple(nearest)]  # [X, Y, Z] of the nearest vessel
    weight = peak * np.exp(-0.5 * (dist / radius) ** 2)
    return np.where(brain & (label == 0), weight, 0).astype(np.float32)


def choroid_plexus(
    rng: np.random.Generator,
    pos: list[np.ndarray],
    base: np.ndarray,
    brain: np.ndarray,
    label: np.ndarray,
    spacing: tuple,
    scale: float,
) -> np.ndarray:
    """Weights [X, Y, Z] (float32, 0-1): a glomus of choroid plexus in each lateral ventricle's atrium
    (where :func:`medseg.data.demo_anatomy.anatomy` bends the ventricles down), at least a voxel and a half
    across, textured, in and next to ventricular CSF, out of the tumour."""
    x, y, z = pos
    s, least = scale, 1.2 * max(spacing)
    weight = np.zeros(brain.shape, np.float32)
    for side in (-1, 1):
        yc = (-16 + rng.uniform(-3, 3)) * s
        zc = 10 * s - 12 * s * (yc / (24 * s)) ** 2 - rng.uniform(1.5, 3.0) * s  # the ventricle's floor
        a, b, c = (max(v * s, least) for v in (rng.uniform(2.5, 4), rng.uniform(5, 8), rng.uniform(2, 3.5)))
        rho = np.sqrt(((x - side * 7 * s) / a) ** 2 + ((y - yc) / b) ** 2 + ((z - zc) / c) ** 2)
        weight = np.maximum(weight, np.clip(3.0 * (1 - rho), 0, 1))
    weight *= 0.85 + 0.15 * np.clip(smooth_field(rng, brain.shape, spacing, 4.0), -1, 1)
    ventricle = ndimage.binary_dilation(base == CSF, np.ones((3, 3, 3), bool)) & brain & (label == 0)
    return np.where(ventricle, weight, 0).astype(np.float32)


def wm_lesions(rng: np.random.Generator, count: int, base: np.ndarray, label: np.ndarray, spacing: tuple) -> np.ndarray:
    """Weights [X, Y, Z] (float32, 0-1) of ``count`` small ovoid white-matter hyperintensities (radius 1.2-2.5
    voxels, peak 0.5-1), at least 3 coarse voxels from any labelled lesion."""
    coarse = max(spacing)
    gap = ndimage.distance_transform_edt(label == 0, sampling=spacing)  # mm
    white = (base == WM) & (gap >= 3 * coarse)
    weight = np.zeros(label.shape, np.float32)
    for _ in range(count):
        centre = _pick(rng, white)
        if centre is None:
            break
        box, rho = blob(rng, centre, rng.uniform(1.2, 2.5) * min(spacing), label.shape, spacing)
        weight[box] = np.maximum(weight[box], rng.uniform(0.5, 1.0) * np.clip(2.5 * (1 - rho), 0, 1) * white[box])
    return weight


def jitter_label(
    rng: np.random.Generator, label: np.ndarray, lesion_map: np.ndarray, brain: np.ndarray, spacing: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """About a voxel of annotation noise: every voxel takes the label of the voxel a smooth random shift away
    (each axis: LABEL_SHIFT_STD x a 10 mm field, rounded: 0 or +-1 voxel, now and then 2), so boundaries move
    by a voxel in places while each voxel keeps a label its neighbourhood has (no necrosis appears in an
    enhancing rim, regions stay nested). The lesion map [X, Y, Z] moves with it; both end at the brain."""
    grid = np.ogrid[tuple(slice(0, n) for n in label.shape)]  # 3 index vectors, broadcastable
    source = []
    for axis, n in enumerate(label.shape):
        shift = np.rint(LABEL_SHIFT_STD * smooth_field(rng, label.shape, spacing, 10.0)).astype(np.intp)  # [X, Y, Z]
        source.append(np.clip(grid[axis] + shift, 0, n - 1))
    source = tuple(source)
    return np.where(brain, label[source], 0).astype(np.uint8), np.where(brain, lesion_map[source], 0).astype(np.uint8)
