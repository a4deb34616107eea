"""Slice overlays of regions on the image: what wandb shows during validation and predict writes as PNG."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_erosion

# region -> RGB for the BraTS regions, painted WT, then TC, then ET (inner regions on top); other outputs
# (organs, other regions) take PALETTE colours in their order
COLOURS = {"WT": (0.1, 0.8, 0.2), "TC": (1.0, 0.85, 0.1), "ET": (0.9, 0.1, 0.1)}
PAINT = (("WT", 1), ("TC", 0), ("ET", 2))  # region name, channel in [TC, WT, ET]
PALETTE = ((0.9, 0.1, 0.1), (0.1, 0.6, 1.0), (0.1, 0.8, 0.2), (1.0, 0.85, 0.1), (0.8, 0.3, 0.9), (1.0, 0.5, 0.0),
           (0.0, 0.9, 0.8), (0.6, 0.4, 0.2), (1.0, 0.4, 0.7), (0.5, 0.5, 1.0))  # fmt: skip
REGIONS = ("TC", "WT", "ET")


def colours(names) -> dict[str, tuple[float, float, float]]:
    """Output name -> RGB: the BraTS regions their usual colours, anything else the palette in order."""
    return {n: COLOURS[n] if n in COLOURS else PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _paint_order(names) -> list[tuple[str, int]]:
    """(name, channel) in painting order: WT, TC, ET for BraTS regions (inner on top), else as given."""
    names = list(names)
    if set(REGIONS) <= set(names):
        first = [(n, names.index(n)) for n, _ in PAINT]
        return first + [(n, i) for i, n in enumerate(names) if n not in REGIONS]
    return [(n, i) for i, n in enumerate(names)]


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def _grey(slice_: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(slice_, (1, 99)) if slice_.any() else (0.0, 1.0)
    grey = np.clip((slice_ - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(grey[..., None], 3, axis=-1)


def overlay(slice_: np.ndarray, regions: np.ndarray, alpha: float = 0.4, names=REGIONS) -> np.ndarray:
    """Grey slice [H, W] + masks [N, H, W] named ``names`` (default TC, WT, ET) -> RGB float [H, W, 3].

    Each pixel shows one output, the last painted (for BraTS regions the innermost: ET over TC over WT): its
    colour blended once over the grey inside, and drawn exactly, unblended, on its edge, so the outlines
    are the legend's colours.
    """
    rgb = _grey(slice_)
    palette = colours(names)
    order = _paint_order(names)
    shown = np.full(slice_.shape, -1)  # [H, W] index into order of the output shown, -1 none
    for k, (_, channel) in enumerate(order):
        shown[regions[channel] > 0.5] = k
    for k, (name, _) in enumerate(order):
        inside = shown == k
        colour = np.array(palette[name])
        rgb[inside] = (1 - alpha) * rgb[inside] + alpha * colour
        rgb[inside & ~binary_erosion(inside, border_value=1)] = colour  # the edge, in the legend's colour
    return rgb


def tumour_centre(regions: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the centre of everything labelled (the whole tumour), or of the volume if nothing is."""
    wt = (np.asarray(regions) > 0.5).any(0)
    if not wt.any():
        return tuple(s // 2 for s in wt.shape)
    return tuple(int(round(c.mean())) for c in np.nonzero(wt))


def overlay_panels(image, label, pred, channel: int | None = None, names=REGIONS) -> list[list[np.ndarray]]:
    """Axial, coronal and sagittal slices through the labelled voxels: a row for the truth (when given) and
    one for the prediction, each ``[axial, coronal, sagittal]`` RGB float [H, W, 3], anatomy up.

    image [C, X, Y, Z] (RAS; shown: ``channel``, default flair of four channels, else the first), label and
    pred [N, X, Y, Z] masks named ``names``; ``label`` may be None.
    """
    image = _as_numpy(image)
    image = image[channel if channel is not None else (3 if image.shape[0] == 4 else 0)]
    rows = [_as_numpy(r) for r in (label, pred) if r is not None]
    cx, cy, cz = tumour_centre(rows[0])  # truth when given, else the prediction
    views = [
        lambda v: np.rot90(v[..., cz]),  # axial
        lambda v: np.rot90(v[:, cy, :]),  # coronal
        lambda v: np.rot90(v[cx, :, :]),  # sagittal
    ]
    return [
        [overlay(view(image), np.stack([view(r) for r in regions]), names=names) for view in views] for regions in rows
    ]


def overlay_grid(image, label, pred, channel: int | None = None, names=REGIONS) -> np.ndarray:
    """:func:`overlay_panels` in one picture (wandb): truth (top row) and prediction -> uint8 RGB [2*H, 3*W, 3]."""
    panels = []
    for cells in overlay_panels(image, label, pred, channel, names):
        height = max(c.shape[0] for c in cells)
        cells = [np.pad(c, ((0, height - c.shape[0]), (0, 2), (0, 0))) for c in cells]
        panels.append(np.concatenate(cells, axis=1))
    width = max(p.shape[1] for p in panels)
    panels = [np.pad(p, ((0, 2), (0, width - p.shape[1]), (0, 0))) for p in panels]
    return (np.concatenate(panels, axis=0) * 255).astype(np.uint8)
