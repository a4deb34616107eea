"""Slice overlays of regions on the image: what wandb shows during validation and predict writes as PNG."""

from __future__ import annotations

import numpy as np
import torch

# region -> RGB, painted WT, then TC, then ET (inner regions on top)
COLOURS = {"WT": (0.1, 0.8, 0.2), "TC": (1.0, 0.85, 0.1), "ET": (0.9, 0.1, 0.1)}
PAINT = (("WT", 1), ("TC", 0), ("ET", 2))  # region name, channel in [TC, WT, ET]


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def _grey(slice_: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(slice_, (1, 99)) if slice_.any() else (0.0, 1.0)
    grey = np.clip((slice_ - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(grey[..., None], 3, axis=-1)


def overlay(slice_: np.ndarray, regions: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Grey slice [H, W] + regions [3, H, W] (TC, WT, ET) -> RGB float [H, W, 3]."""
    rgb = _grey(slice_)
    for name, channel in PAINT:
        mask = regions[channel] > 0.5
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.array(COLOURS[name])
    return rgb


def tumour_centre(regions: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the centre of the whole tumour, or of the volume where there is none."""
    wt = regions[1] > 0.5
    if not wt.any():
        return tuple(s // 2 for s in wt.shape)
    return tuple(int(round(c.mean())) for c in np.nonzero(wt))


def overlay_grid(image, label, pred, channel: int = 3) -> np.ndarray:
    """Axial, coronal and sagittal slices through the tumour: truth (top row) and prediction (bottom).

    image [C, X, Y, Z] (RAS, channel 3 = flair), label and pred [3, X, Y, Z] -> uint8 RGB [2*H, 3*W, 3].
    ``label`` may be None (prediction only: one row).
    """
    image = _as_numpy(image)[channel]
    rows = [r for r in (label, pred) if r is not None]
    rows = [_as_numpy(r) for r in rows]
    cx, cy, cz = tumour_centre(rows[0])  # truth when given, else the prediction
    views = [
        lambda v: np.rot90(v[..., cz]),  # axial
        lambda v: np.rot90(v[:, cy, :]),  # coronal
        lambda v: np.rot90(v[cx, :, :]),  # sagittal
    ]
    panels = []
    for regions in rows:
        cells = [overlay(view(image), np.stack([view(r) for r in regions])) for view in views]
        height = max(c.shape[0] for c in cells)
        cells = [np.pad(c, ((0, height - c.shape[0]), (0, 2), (0, 0))) for c in cells]
        panels.append(np.concatenate(cells, axis=1))
    width = max(p.shape[1] for p in panels)
    panels = [np.pad(p, ((0, 2), (0, width - p.shape[1]), (0, 0))) for p in panels]
    return (np.concatenate(panels, axis=0) * 255).astype(np.uint8)
