"""3-D axis-aligned boxes: formats, volume, IoU, generalised IoU, and voxel <-> world coordinates.

Two formats, both ``[..., 6]``:

- ``cxcyczwhd``: centre and size, what the DETR box head predicts (normalised to [0, 1] of its input);
- ``xyzxyz``: lower and upper corner ``(x0, y0, z0, x1, y1, z1)``, what IoU and the files use.

Voxel boxes are in *edge* coordinates: voxel ``i`` spans ``[i, i + 1)``, so the box around the inclusive
indices ``lo..hi`` is ``[lo, hi + 1]`` and dividing by the grid shape normalises it to [0, 1] (a resize
of the whole grid leaves normalised boxes unchanged). An affine (nibabel convention) maps voxel
*centres* (index ``i``, edge coordinate ``i + 0.5``) to world RAS mm.

World boxes are axis-aligned in world space: the smallest world box holding the voxel box (the 8
corners mapped). With a rotated affine it is a little larger than the voxel box. World -> voxel inverts
that map: it gives the voxel box whose world box is the given one (same centre; half-sizes ``e_v``
solving ``|M| e_v = e_w`` with ``M`` the affine's 3x3 part), so voxel -> world -> voxel round-trips under
any affine. A world box too thin for any voxel box to have it (possible only with rotation) falls back
to the voxel box holding its 8 corners. IoU is unchanged by per-axis scaling and translation, so it is
the same in normalised, voxel and (for an unrotated grid) world coordinates.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

# the 8 corners of a box, as (lower, upper) choices per axis: [8, 3] of 0/1
_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)))


def box_cxcyczwhd_to_xyzxyz(boxes: Tensor) -> Tensor:
    """[..., 6] centre + size -> [..., 6] lower + upper corner."""
    centre, size = boxes[..., :3], boxes[..., 3:]
    return torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=-1)


def box_xyzxyz_to_cxcyczwhd(boxes: Tensor) -> Tensor:
    """[..., 6] lower + upper corner -> [..., 6] centre + size."""
    lower, upper = boxes[..., :3], boxes[..., 3:]
    return torch.cat([(lower + upper) / 2, upper - lower], dim=-1)


def box_volume(boxes: Tensor) -> Tensor:
    """[N, 6] xyzxyz -> [N] volumes (0 for degenerate boxes)."""
    return (boxes[:, 3:] - boxes[:, :3]).clamp(min=0).prod(dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of [N, 6] and [M, 6] xyzxyz boxes: (iou [N, M], union [N, M])."""
    vol1, vol2 = box_volume(boxes1), box_volume(boxes2)  # [N], [M]
    lower = torch.max(boxes1[:, None, :3], boxes2[None, :, :3])  # [N, M, 3]
    upper = torch.min(boxes1[:, None, 3:], boxes2[None, :, 3:])  # [N, M, 3]
    inter = (upper - lower).clamp(min=0).prod(dim=-1)  # [N, M]
    union = vol1[:, None] + vol2[None, :] - inter  # [N, M]
    return inter / union.clamp(min=1e-12), union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) of [N, 6] and [M, 6] xyzxyz boxes: [N, M] in [-1, 1].

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with C the smallest box holding both A and B.
    """
    iou, union = box_iou(boxes1, boxes2)  # [N, M]
    lower = torch.min(boxes1[:, None, :3], boxes2[None, :, :3])  # [N, M, 3]
    upper = torch.max(boxes1[:, None, 3:], boxes2[None, :, 3:])  # [N, M, 3]
    hull = (upper - lower).clamp(min=0).prod(dim=-1)  # [N, M]
    return iou - (hull - union) / hull.clamp(min=1e-12)


def corners(boxes: np.ndarray) -> np.ndarray:
    """[N, 6] xyzxyz -> [N, 8, 3] corner points."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    lower, upper = boxes[:, None, :3], boxes[:, None, 3:]  # [N, 1, 3]
    return np.where(_CORNERS[None] == 1, upper, lower)  # [N, 8, 3]


def points_voxel_to_world(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[..., 3] voxel indices (centre of voxel i at i) -> [..., 3] world mm."""
    affine = np.asarray(affine, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


def points_world_to_voxel(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[..., 3] world mm -> [..., 3] voxel indices."""
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return np.asarray(points, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]


def boxes_voxel_to_world(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[N, 6] voxel edge-coordinate xyzxyz -> [N, 6] world mm xyzxyz (axis-aligned box holding all corners)."""
    world = points_voxel_to_world(corners(boxes) - 0.5, affine)  # [N, 8, 3]: edges -> voxel centres
    return np.concatenate([world.min(axis=1), world.max(axis=1)], axis=1)


def boxes_world_to_voxel(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[N, 6] world mm xyzxyz -> [N, 6] voxel edge-coordinate xyzxyz: the inverse of :func:`boxes_voxel_to_world`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    linear = np.abs(np.asarray(affine, dtype=np.float64)[:3, :3])  # |M|: voxel half-sizes -> world half-sizes
    centre = points_world_to_voxel((boxes[:, :3] + boxes[:, 3:]) / 2, affine) + 0.5  # [N, 3] edge coordinates
    half = np.linalg.solve(linear, ((boxes[:, 3:] - boxes[:, :3]) / 2).T).T  # [N, 3]
    out = np.concatenate([centre - half, centre + half], axis=1)
    impossible = (half <= 0).any(axis=1)
    if impossible.any():
        voxel = points_world_to_voxel(corners(boxes[impossible]), affine) + 0.5  # [n, 8, 3]
        out[impossible] = np.concatenate([voxel.min(axis=1), voxel.max(axis=1)], axis=1)
    return out
