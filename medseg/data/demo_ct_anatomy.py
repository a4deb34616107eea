"""The anatomy of a synthetic abdominal CT case (:mod:`medseg.data.demo_ct`): geometry (an LPS-stored,
anisotropic affine), then a map of tissue classes and the organ labels, laid out in world millimetres.

Coordinates are world RAS mm (nibabel's convention) relative to the body centre: +x is the patient's
Right, +y Anterior, +z Superior. So the liver (patient's right) sits at x > 0 and the spleen at x < 0,
although both are stored LPS (array index i grows towards the patient's left). Pure numpy/scipy: what a
case looks like in each contrast phase is :mod:`medseg.data.demo_ct`'s.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.data.demo_anatomy import rotation_matrix, smooth_field

# Tissue classes of CTCase.tissue; index into demo_ct's HU tables.
TISSUES = (
    "air", "fat", "muscle", "bowel", "gas", "lung", "cortical_bone", "cancellous_bone", "disc", "canal",
    "liver", "spleen", "kidney_cortex", "kidney_medulla", "aorta", "ivc",
)  # fmt: skip
(AIR, FAT, MUSCLE, BOWEL, GAS, LUNG, CORTICAL, CANCELLOUS, DISC, CANAL,
 LIVER, SPLEEN, CORTEX, MEDULLA, AORTA, IVC) = range(len(TISSUES))  # fmt: skip

# Label values 1..5, in the order of the MSD-style ``labels`` dict (0 is background).
ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "aorta")
LIVER_L, SPLEEN_L, KIDNEY_R_L, KIDNEY_L_L, AORTA_L = range(1, len(ORGANS) + 1)

SHAPE_XY = (120, 96)  # voxels LR x AP; the in-plane spacing follows the patient's width, as a scanner's FOV does
_SOFT = (FAT, BOWEL, GAS)  # what organs may take the place of


def ct_geometry(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float], np.ndarray, dict]:
    """Shape, spacing (mm), affine (voxel -> world RAS mm) and body size of one case.

    The body's half-width ``a`` is 128-160 mm and its half-depth ``b`` 0.66-0.76 ``a``; the in-plane
    spacing (2.4-3.2 mm, square pixels) makes the field of view 1.16-1.24 times the body's width, so air
    surrounds the body; slices are 4-6 mm apart, 40-50 of them (200-240 mm). The affine is
    ``diag(-sx, -sy, sz)`` (LPS storage, ``aff2axcodes`` gives ``('L', 'P', 'S')``) with the body centre
    at a random, non-zero world point.
    """
    a = rng.uniform(128.0, 160.0)
    b = a * rng.uniform(0.66, 0.76)
    sx = float(np.clip(2 * a * rng.uniform(1.16, 1.24) / SHAPE_XY[0], 2.4, 3.2))
    sz = float(rng.uniform(4.0, 6.0))
    nz = int(np.clip(round(rng.uniform(200.0, 240.0) / sz), 40, 50))
    shape, spacing = (*SHAPE_XY, nz), (sx, sx, sz)
    centre = (np.array(shape) - 1) / 2 + rng.uniform(-1.0, 1.0, 3) * (1.0, 1.5, 0.0)  # voxel index of the body centre
    body_world = np.array([rng.uniform(-15, 15), rng.uniform(-40, 40), rng.uniform(-300, -60)])  # mm
    linear = np.diag([-sx, -sx, sz])
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = body_world - linear @ centre
    return shape, spacing, affine, {"a": a, "b": b, "centre_world": body_world}


def axes_mm(affine: np.ndarray, shape: tuple, origin: np.ndarray) -> list[np.ndarray]:
    """World RAS mm minus ``origin`` along the axes of an axis-aligned affine: x [X,1,1], y [1,Y,1], z [1,1,Z]."""
    out = []
    for axis, n in enumerate(shape):
        v = affine[axis, axis] * np.arange(n, dtype=np.float32) + np.float32(affine[axis, 3] - origin[axis])
        out.append(v.reshape([n if k == axis else 1 for k in range(3)]).astype(np.float32))
    return out


def ct_anatomy(
    rng: np.random.Generator, pos: list[np.ndarray], spacing: tuple, body: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue map (uint8, TISSUES index), label map (uint8, 0 and ORGANS 1-5) and depth below the skin (mm,
    negative outside the body), all [X, Y, Z].

    Layers by depth below an irregular elliptical outline whose axes vary along z: skin, subcutaneous fat
    (10-30 mm), a muscle wall (8-14 mm) holding the ribs in the upper slices; inside, bowel loops with gas
    pockets in visceral fat, lung bases above the diaphragm, the spine with paraspinal and psoas muscles,
    then the organs (see :func:`_organs`).
    """
    x, y, z = pos
    shape = (x.shape[0], y.shape[1], z.shape[2])
    s = body["a"] / 144.0  # in-plane size of this body relative to an average one (a = 144 mm)
    along = [np.clip(smooth_field(rng, (1, 1, shape[2]), (1, 1, spacing[2]), 120.0), -1.5, 1.5) for _ in "ab"]
    a = body["a"] * (1 + 0.04 * along[0])  # [1, 1, Z]
    b = body["b"] * (1 + 0.04 * along[1])
    b = np.where(y < 0, 0.92 * b, b)  # flatter back, the patient lies on it: [1, Y, Z]
    outline = np.clip(smooth_field(rng, shape, spacing, 70.0), -1, 1)
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2)  # [X, Y, Z], 1 on the ellipse
    radius = np.sqrt(x * x + y * y)  # [X, Y, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        surface = radius / rho * (1 + 0.025 * outline)
    depth = np.where(rho > 1e-6, surface - radius, body["a"]).astype(np.float32)  # [X, Y, Z] mm below the skin

    fat, muscle = rng.uniform(10, 30), rng.uniform(8, 14)  # mean thickness, mm
    fat_mm = fat * (1 + 0.25 * np.clip(smooth_field(rng, shape, spacing, 90.0), -2, 2))  # [X, Y, Z]
    wall_mm = fat_mm + muscle
    room = (body["a"] - fat - muscle, body["b"] - fat - muscle)  # the abdominal cavity's semi-axes, mm
    tissue = np.zeros(shape, np.uint8)  # [X, Y, Z]
    tissue[depth >= 0] = MUSCLE  # skin
    tissue[depth >= 2.0] = FAT
    tissue[depth >= fat_mm] = MUSCLE
    cavity = depth >= wall_mm

    # Bowel loops in visceral fat, sparse behind the level of the spine; gas rises to the front of the loops.
    spine_y = -0.92 * body["b"] + rng.uniform(68, 82) * s  # centre of the vertebral bodies, mm
    loops = smooth_field(rng, shape, spacing, 28.0)
    threshold = rng.uniform(-0.5, 0.1) + 1.6 * np.clip((spine_y + 35 * s - y) / (50 * s), 0, 1)  # [1, Y, 1]
    bowel = cavity & (loops > threshold)
    tissue[cavity] = FAT
    tissue[bowel] = BOWEL
    tissue[bowel & (smooth_field(rng, shape, spacing, 14.0) > 2.0) & (y > spine_y + 25 * s)] = GAS

    z_top = float(z.max()) - rng.uniform(0, 25)  # top of the right hemidiaphragm
    _lungs(rng, tissue, cavity, x, y, z, z_top, body, s)
    kidney_z = z_top - rng.uniform(115, 145)
    _spine(rng, tissue, cavity, x, y, z, spine_y, kidney_z, s)
    _ribs(rng, tissue, depth, fat_mm, wall_mm, x, y, z, kidney_z, s)
    label = _organs(rng, tissue, cavity, (x, y, z), spacing, spine_y, z_top, kidney_z, s, room)
    return tissue, label, depth


def _lungs(rng, tissue, cavity, x, y, z, z_top, body, s) -> None:
    """Lung bases above a two-domed diaphragm (the right dome higher), the heart's apex in front between
    them, on the left."""
    half = 0.42 * body["a"]
    dome = np.where(x > 0, z_top, z_top - rng.uniform(8, 20))  # [X, 1, 1]
    fall = 40 * ((np.abs(x) - half) / half) ** 2 + 25 * (y / body["b"]) ** 2 + 20 * np.clip(-y / body["b"], 0, 1)
    above = cavity & (z > dome - fall)  # [X, Y, Z]
    heart = ((x + 20 * s) / (55 * s)) ** 2 + ((y - 0.35 * body["b"]) / (40 * s)) ** 2 < 1  # [X, Y, 1]
    tissue[above] = LUNG
    tissue[above & heart] = MUSCLE


def _spine(rng, tissue, cavity, x, y, z, spine_y, kidney_z, s) -> None:
    """Vertebral bodies (cortical shell, cancellous inside) with discs between, the arch around the canal,
    spinous processes, paraspinal muscles behind and psoas muscles beside it, growing downwards."""
    period = rng.uniform(32, 38)  # mm, one vertebra and one disc
    phase = (z - rng.uniform(0, period)) / period % 1.0  # [1, 1, Z]
    wx, wy = rng.uniform(20, 24) * s, rng.uniform(15, 18) * s  # vertebral body semi-axes
    canal_y = spine_y - wy - 9 * s
    for side in (-1, 1):  # paraspinal muscles (erector spinae, quadratus lumborum)
        inside = ((x - side * 32 * s) / (34 * s)) ** 2 + ((y - canal_y + 6 * s) / (26 * s)) ** 2 < 1
        tissue[cavity & inside] = MUSCLE
    psoas_r = 20 * s * np.clip((kidney_z + 40 - z) / 110, 0.15, 1)  # [1, 1, Z]
    for side in (-1, 1):
        inside = ((x - side * (wx + 0.8 * psoas_r)) / psoas_r) ** 2 + ((y - spine_y) / (0.8 * psoas_r)) ** 2 < 1
        tissue[cavity & inside] = MUSCLE
    q = (x / wx) ** 2 + ((y - spine_y) / wy) ** 2  # [X, Y, 1]
    disc = phase < 0.2
    tissue[(q < 1) & disc] = DISC
    tissue[(q < 1) & ~disc] = CORTICAL
    tissue[(q < (1 - 3.0 / wy) ** 2) & ~disc] = CANCELLOUS
    ring = np.sqrt(x**2 + (y - canal_y) ** 2)  # [X, Y, 1]
    tissue[np.broadcast_to((ring < 14 * s) & (y < canal_y + 6 * s), tissue.shape)] = CORTICAL  # pedicles, laminae
    spinous = (np.abs(x) < 4 * s) & (y < canal_y) & (y > canal_y - 30 * s) & (phase > 0.35) & (phase < 0.8)
    tissue[spinous] = CORTICAL
    tissue[np.broadcast_to(ring < 8 * s, tissue.shape)] = CANAL


def _ribs(rng, tissue, depth, fat_mm, wall_mm, x, y, z, kidney_z, s) -> None:
    """Thin bone arcs inside the muscle wall above the costal margin (higher in front), sloping down
    anteriorly, with no ribs over the anterior midline (costal cartilage, left out)."""
    sin_t = y / np.maximum(np.sqrt(x * x + y * y), 1e-3)  # [X, Y, 1], 1 anterior, -1 posterior
    margin = kidney_z + 20 + 45 * sin_t  # costal margin, mm
    band = (depth >= fat_mm + 1) & (depth < wall_mm - 1) & (z > margin)
    period = rng.uniform(26, 32)
    u = (z + 40 * sin_t - rng.uniform(0, period)) / period % 1.0
    front = (y > 0) & (np.abs(x) < 45 * s)
    tissue[band & (u < 0.36) & ~front] = CORTICAL


def _blob(rng, pos, centre, semi, rot, spacing, wobble=0.12, wavelength=45.0, bend=0.0, taper=0.0, lift=0.0):
    """Normalised radius [X, Y, Z] of a deformed ellipsoid: < 1 inside (inf far outside).

    ``rot``'s columns are the ellipsoid's axes in world; ``bend`` curves it (a crescent, ends bent towards
    -axis 0), ``taper`` thins axes 1 and 2 towards -axis 0 and ``lift`` moves that thin part towards
    +axis 1 (a liver's left lobe, in front); the surface is perturbed by smooth noise of relative
    amplitude ``wobble``.
    """
    x, y, z = pos
    coords = (x[:, 0, 0], y[0, :, 0], z[0, 0, :])
    reach = 1.5 * max(semi) * (1 + bend)
    box = []
    for c, v in zip(centre, coords):
        inside = np.flatnonzero(np.abs(v - c) < reach)
        box.append(slice(inside.min(), inside.max() + 1) if inside.size else slice(0, 0))
    out = np.full((len(coords[0]), len(coords[1]), len(coords[2])), np.inf, np.float32)
    crop = out[tuple(box)].shape
    if 0 in crop:
        return out
    d = np.stack(np.meshgrid(*(v[b] - c for v, b, c in zip(coords, box, centre)), indexing="ij"), axis=-1)
    d = d @ rot  # [x, y, z, 3] mm along the ellipsoid's axes
    u = d / np.asarray(semi, np.float32)  # [x, y, z, 3]
    u[..., 0] += bend * u[..., 1] ** 2
    if taper:
        left = np.clip(-u[..., 0], 0, 1)
        thin = 1 - taper * left
        u[..., 1] = (u[..., 1] - lift * left) / thin
        u[..., 2] /= thin
    field = np.clip(smooth_field(rng, crop, spacing, wavelength), -2, 2)
    out[tuple(box)] = np.sqrt(np.einsum("...k,...k->...", u, u)) / (1 + wobble * field)
    return out


def _turn(angle_z: float, angle_y: float = 0.0) -> np.ndarray:
    """Rotation [3, 3]: about world y by ``angle_y`` then about z by ``angle_z`` (radians)."""
    return rotation_matrix(np.array([0.0, 0.0, 1.0]), angle_z) @ rotation_matrix(np.array([0.0, 1.0, 0.0]), angle_y)


def _organs(rng, tissue, cavity, pos, spacing, spine_y, z_top, kidney_z, s, room) -> np.ndarray:
    """Paint the five organs and the inferior vena cava into ``tissue``; return the label map [X, Y, Z].

    Each organ is a deformed ellipsoid or tube with its own size (+-20 %) and offset (a few cm), kept to
    soft tissue inside the abdominal wall (never bone, muscle or lung). Overlaps resolve by a fixed
    priority: aorta and IVC, then the kidneys (in perirenal fat), the spleen, the liver last; each organ
    keeps one voxel of fat from those before it.
    """
    x, y, z = pos
    label = np.zeros(tissue.shape, np.uint8)  # [X, Y, Z]
    taken = np.zeros(tissue.shape, bool)  # voxels an organ (or its fat rim) owns
    soft = cavity & np.isin(tissue, _SOFT)

    # Aorta: a tube anterior-left of the vertebral bodies (left is x < 0), wandering a few mm along z.
    def wander(amp):
        return amp * np.clip(smooth_field(rng, (1, 1, z.shape[2]), (1, 1, spacing[2]), 150.0), -2, 2)

    r_aorta = rng.uniform(9, 13) * s * (1 + 0.08 * (z - z_top) / 200)  # tapers downwards [1, 1, Z]
    ax, ay = -rng.uniform(12, 20) * s + wander(3.0), spine_y + rng.uniform(17, 21) * s + r_aorta + wander(2.0)
    aorta = (x - ax) ** 2 + (y - ay) ** 2 < r_aorta**2
    ix, iy = rng.uniform(20, 28) * s + wander(3.0), spine_y + rng.uniform(22, 28) * s + wander(2.0)
    ivc = ((x - ix) / (13 * s)) ** 2 + ((y - iy) / (9 * s)) ** 2 < 1
    keep = ~np.isin(tissue, (CORTICAL, CANCELLOUS, DISC, CANAL))
    aorta, ivc = aorta & keep & ~ivc, ivc & keep
    tissue[_grow(aorta) & keep & ~ivc] = FAT
    tissue[aorta], tissue[ivc], label[aorta] = AORTA, IVC, AORTA_L
    taken |= _grow(aorta | ivc)

    # Kidneys either side of the spine, the left one higher; hilum facing anteromedially; cortex and medulla.
    size = rng.uniform(0.8, 1.2)
    for side, value in ((1, KIDNEY_R_L), (-1, KIDNEY_L_L)):
        centre = (side * (rng.uniform(48, 60) * s), spine_y + rng.uniform(0, 14) * s,
                  kidney_z + (rng.uniform(5, 20) if side < 0 else 0))  # fmt: skip
        semi = np.array([26 * s, 23 * s, 52.0]) * size * rng.uniform(0.92, 1.08, 3)
        # turned so that the hilum faces anteromedially and the upper pole leans medially
        rot = _turn(-side * np.deg2rad(rng.uniform(20, 40)), -side * np.deg2rad(rng.uniform(8, 18)))
        r = _blob(rng, pos, centre, semi, rot, spacing, wobble=0.06)
        medial = -side * ((x - centre[0]) * rot[0, 0] + (y - centre[1]) * rot[1, 0])  # [X, Y, 1] mm to the hilum
        notch = (medial > 0.45 * semi[0]) & (np.abs(z - centre[2]) < 0.35 * semi[2])  # the hilum's sinus fat
        fat = soft & ~taken & (r < 1.25)
        kidney = fat & (r < 1) & ~notch
        tissue[fat], tissue[kidney], label[kidney] = FAT, CORTEX, value
        tissue[kidney & (r < 0.7)] = MEDULLA
        taken |= _grow(fat)

    # Spleen: a crescent along the left posterolateral wall under the left dome; sized to the cavity.
    ca, cb = room
    size = rng.uniform(0.8, 1.2)
    centre = (-rng.uniform(0.6, 0.72) * ca, -rng.uniform(0.0, 0.25) * cb, z_top - rng.uniform(50, 70))
    semi = np.array([0.19 * ca, 0.46 * ca, 50.0]) * size * rng.uniform(0.92, 1.08, 3)
    rot = _turn(np.arctan2(centre[1], centre[0]) + np.deg2rad(rng.uniform(-10, 10)), np.deg2rad(rng.uniform(-10, 10)))
    spleen = soft & ~taken & (_blob(rng, pos, centre, semi, rot, spacing, bend=0.5) < 1)
    tissue[spleen], label[spleen] = SPLEEN, SPLEEN_L
    taken |= _grow(spleen)

    # Liver: right upper abdomen under the right dome, thinning into a left lobe across the midline.
    size = rng.uniform(0.8, 1.2)
    centre = (rng.uniform(0.27, 0.39) * ca, rng.uniform(0.05, 0.25) * cb, z_top - rng.uniform(70, 85))
    semi = np.array([0.7 * ca, 0.75 * cb, 85.0]) * size * rng.uniform(0.92, 1.08, 3)
    rot = _turn(np.deg2rad(rng.uniform(-10, 10)), np.deg2rad(rng.uniform(-8, 8)))
    liver = soft & ~taken & (_blob(rng, pos, centre, semi, rot, spacing, wobble=0.08, taper=0.5, lift=0.45) < 1)
    liver = _largest_part(liver)
    tissue[liver], label[liver] = LIVER, LIVER_L
    return label


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` [X, Y, Z] grown by one voxel in-plane (a 3 x 3 square): a fast binary dilation."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def _largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected part of ``mask`` (organs cut by other structures leave no islands)."""
    parts, n = ndimage.label(mask, np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    return parts == (np.argmax(np.bincount(parts.ravel())[1:]) + 1)
