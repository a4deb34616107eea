"""How a ``difficulty="hard"`` case looks on each MRI contrast (:mod:`medseg.data.demo_hard`): weak and
variable lesion contrast, textured tumours, edema that fades with distance to the core (the label boundary
at a threshold of that taper), unlabelled mimics, thick-slice blur, a strong bias field and Rician noise.

Every range below is drawn per case; "per lesion" values then vary around the case's by a factor
exp(N(0, 0.3)), clipped to the same range. Contrasts are relative to the case's white matter on that
contrast, before texture, blur, bias and noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.data.cases import MODALITIES
from medseg.data.demo_anatomy import BG, DEEP_GM, EDEMA, ENHANCING, GM, NECROSIS, NON_ENHANCING, WM, smooth_field

T1, T1CE, T2, FLAIR = (MODALITIES.index(m) for m in ("t1", "t1ce", "t2", "flair"))

ENHANCING_CONTRAST = (0.15, 1.5)  # t1ce: enhancing core / white matter - 1, log-uniform; per lesion
EDEMA_CONTRAST = {T2: (0.15, 1.3), FLAIR: (0.15, 1.3)}  # edema at the core / WM - 1, log-uniform; per lesion
EDEMA_T1_DROP = (0.05, 0.35)  # t1 and t1ce: 1 - edema / WM; per lesion
TAPER_THRESHOLD = (0.3, 0.6)  # edema weight (1 at the core) where the label ends
FADE_MM = (2.0, 8.0)  # beyond the label the weight falls by a further factor of the threshold every FADE_MM
TEXTURE_CORE = (0.08, 0.3)  # std of the core's multiplicative texture
TEXTURE_EDEMA = (0.2, 0.6)  # std of the edema contrast's multiplicative texture
VESSEL_CONTRAST = (0.8, 2.0)  # t1ce: added at a vessel's centre, x WM (t2: a flow void, -40 %)
CHOROID_CONTRAST = (0.5, 1.3)  # t1ce: choroid plexus / WM - 1
WML_CONTRAST = (0.3, 1.0)  # flair (t2: x 1.2; t1, t1ce: -12 %): white-matter hyperintensity / WM - 1
SLICE_BLUR = (0.6, 2.0)  # Gaussian sigma in voxels along one random axis; each contrast x U(0.5, 1)
BIAS = (0.15, 0.28)  # std of the log bias field (easy: 0.12); each contrast x U(0.7, 1)
BIAS_WAVELENGTH_MM = (60.0, 140.0)
NOISE = (0.04, 0.10)  # Rician sigma, x t1 WM (easy: Gaussian 0.03); each contrast x U(0.8, 1.2)


def render_hard(
    rng: np.random.Generator,
    base: np.ndarray,
    tissue: np.ndarray,
    lesion_map: np.ndarray,
    vessel: np.ndarray,
    choroid: np.ndarray,
    wml: np.ndarray,
    contrast: np.ndarray,
    spacing: tuple,
) -> tuple[dict[str, np.ndarray], dict, dict[int, dict]]:
    """Images of a hard case: (modality -> float32 [X, Y, Z] >= 0, 0 outside the head; knobs; lesion contrasts).

    Args:
        base, tissue: tissue maps [X, Y, Z] (TISSUES index) without and with the lesions.
        lesion_map: [X, Y, Z] uint8 lesion number (0 none).
        vessel, choroid, wml: mimic weights [X, Y, Z] in 0-1 (:mod:`medseg.data.demo_hard`).
        contrast: tissue table [4, TISSUES] (MODALITIES x TISSUES), jittered here by up to 15 %.

    Lesion contrasts map a lesion number to ``enhancing_t1ce``, ``edema_flair``, ``edema_t2`` and
    ``edema_t1``: intensity / white matter, at the core's edge for the edema.
    """
    shape, n = tissue.shape, int(lesion_map.max())
    head = tissue != BG
    table = contrast * np.clip(1 + 0.06 * rng.standard_normal(contrast.shape), 0.85, 1.15)  # [4, TISSUES]
    wm = table[:, WM]  # [4]

    et = _per_lesion(rng, n, ENHANCING_CONTRAST, log=True)  # [n + 1]
    edema = np.zeros((len(MODALITIES), n + 1))  # signed contrast of the edema per modality and lesion
    edema[T1] = edema[T1CE] = -_per_lesion(rng, n, EDEMA_T1_DROP)
    for m, span in EDEMA_CONTRAST.items():
        edema[m] = _per_lesion(rng, n, span, log=True)
    core_jitter = np.exp(rng.normal(0, 0.1, (len(MODALITIES), 3, n + 1)))  # modality, core class, lesion

    wt, core = tissue >= EDEMA, tissue > EDEMA
    threshold, fade = rng.uniform(*TAPER_THRESHOLD), rng.uniform(*FADE_MM)
    taper, nearest = edema_taper(wt, core, lesion_map, threshold, fade, spacing)  # [X, Y, Z] 0-1, lesion number
    taper *= np.isin(base, (GM, WM, DEEP_GM)) | wt  # parenchyma only, not skull or outer CSF
    a_core, a_edema = rng.uniform(*TEXTURE_CORE), rng.uniform(*TEXTURE_EDEMA)
    shared = multiscale_texture(rng, shape, spacing)  # [X, Y, Z], std 1, common to all contrasts
    v_amp, c_amp, w_amp = (rng.uniform(*r) for r in (VESSEL_CONTRAST, CHOROID_CONTRAST, WML_CONTRAST))
    wml_gain = np.array([-0.12, -0.12, 1.2 * w_amp, w_amp])  # per modality

    axis, thick = int(rng.integers(3)), rng.uniform(*SLICE_BLUR)
    bias, wavelength, noise = rng.uniform(*BIAS), rng.uniform(*BIAS_WAVELENGTH_MM), rng.uniform(*NOISE)
    images, knobs = {}, {"blur_axis": axis, "blur_sigma_voxels": {}, "bias_std": {}, "noise_sigma": {}}
    for m, name in enumerate(MODALITIES):
        tex = 0.75 * shared + 0.66 * smooth_field(rng, shape, spacing, 6.0)  # [X, Y, Z]
        img = table[m][base] * (1 + 0.04 * smooth_field(rng, shape, spacing, 8.0))  # healthy, textured
        edematous = wm[m] * (1 + edema[m][nearest] * (1 + a_edema * tex))  # [X, Y, Z] edema at full weight
        img += taper * (edematous - img)  # effaces sulci and grey matter too, fading with the taper
        for k, cls in enumerate((ENHANCING, NECROSIS, NON_ENHANCING)):
            where = tissue == cls
            ids = lesion_map[where]
            value = table[m, cls] * core_jitter[m, k, ids]
            if m == T1CE and cls == ENHANCING:
                value = wm[m] * (1 + et[ids])
            img[where] = value * np.clip(1 + a_core * tex[where], 0.2, None)
        if m == T1CE:
            img += vessel * wm[m] * v_amp
        elif m == T2:
            img *= 1 - 0.4 * vessel
        plexus = wm[m] * (1 + c_amp) if m == T1CE else 1.1 * table[m, GM]
        img = img * (1 - choroid) + choroid * plexus
        img += wml * wm[m] * wml_gain[m]

        sigma = 0.4 * min(spacing) / np.asarray(spacing)  # partial volume, as the easy mode
        sigma[axis] = np.hypot(sigma[axis], thick * rng.uniform(0.5, 1.0))  # thick slices
        img = ndimage.gaussian_filter(img.astype(np.float32), sigma=sigma)
        b = bias * rng.uniform(0.7, 1.0)
        img *= np.exp(b * smooth_field(rng, shape, spacing, wavelength))
        s = noise * rng.uniform(0.8, 1.2)
        real, imag = (s * rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
        img = np.sqrt((img + real) ** 2 + imag**2)  # magnitude of a complex signal: Rician noise
        gain = np.exp(rng.uniform(np.log(150), np.log(1500)))
        images[name] = (img * head * gain).astype(np.float32)
        knobs["blur_sigma_voxels"][name] = round(float(sigma[axis]), 4)
        knobs["bias_std"][name], knobs["noise_sigma"][name] = round(float(b), 4), round(float(s), 4)

    knobs |= {
        "taper_threshold": threshold, "fade_mm": fade, "texture_core": a_core, "texture_edema": a_edema,
        "vessel_contrast": v_amp, "choroid_contrast": c_amp, "wm_lesion_contrast": w_amp,
    }  # fmt: skip
    knobs = {k: round(float(v), 4) if isinstance(v, float) else v for k, v in knobs.items()}
    lesion_contrast = {
        j: {
            "enhancing_t1ce": round(1 + float(et[j]), 4),
            **{f"edema_{MODALITIES[m]}": round(1 + float(edema[m, j]), 4) for m in (FLAIR, T2, T1)},
        }
        for j in range(1, n + 1)
    }
    return images, knobs, lesion_contrast


def _per_lesion(rng: np.random.Generator, n: int, span: tuple, log: bool = False) -> np.ndarray:
    """A case value in ``span`` (log-uniform if ``log``) times exp(N(0, 0.3)) per lesion, clipped: [n + 1]."""
    lo, hi = span
    case = np.exp(rng.uniform(np.log(lo), np.log(hi))) if log else rng.uniform(lo, hi)
    return np.clip(case * np.exp(rng.normal(0, 0.3, n + 1)), lo, hi)


def multiscale_texture(rng: np.random.Generator, shape: tuple, spacing: tuple) -> np.ndarray:
    """Noise [X, Y, Z] (float32, std 1) with features of about 1.5 voxels, 8 mm and 16 mm."""
    scales = ((1.5 * max(spacing), 0.6), (8.0, 0.55), (16.0, 0.4))  # (wavelength mm, weight)
    field = sum(w * smooth_field(rng, shape, spacing, wl) for wl, w in scales)
    return (field / field.std()).astype(np.float32)


def edema_taper(
    wt: np.ndarray, core: np.ndarray, lesion_map: np.ndarray, threshold: float, fade_mm: float, spacing: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """The edema's weight [X, Y, Z] (1 at the core, ``threshold`` on the label's boundary, fading beyond it)
    and the number of the nearest lesion [X, Y, Z].

    Inside the whole tumour the weight is ``threshold ** s`` with s = d_core / (d_core + d_edge) (mm to the
    core and to the label's edge, a half voxel counted to the edge), so every labelled voxel has weight
    >= threshold; outside, s = 1 + d_edge / fade_mm, so every unlabelled one has less. A lesion without a
    core tapers from its deepest part (>= 70 % of its greatest depth).
    """
    if not wt.any():
        return np.zeros(wt.shape, np.float32), np.zeros(wt.shape, np.intp)
    half = 0.5 * min(spacing)
    outside, index = ndimage.distance_transform_edt(~wt, sampling=spacing, return_indices=True)  # mm
    nearest = lesion_map[tuple(index)].astype(np.intp)  # [X, Y, Z]
    inside = ndimage.distance_transform_edt(wt, sampling=spacing)  # mm, to the nearest unlabelled voxel
    reference = core.copy()
    for number in range(1, int(lesion_map.max()) + 1):
        lesion = lesion_map == number
        if lesion.any() and not (core & lesion).any():
            reference |= lesion & (inside >= 0.7 * inside[lesion].max())
    to_core = ndimage.distance_transform_edt(~reference, sampling=spacing)  # mm
    to_edge = np.maximum(inside - half, 0)
    s = np.where(wt, to_core / np.maximum(to_core + to_edge, 1e-6), 1 + np.maximum(outside - half, 0) / fade_mm)
    return (threshold**s).astype(np.float32), nearest
