"""Loading network weights a user has on disk, safely (no pickle code execution)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medseg.errors import MedsegError


class WeightsError(MedsegError, ValueError):
    """A weights file that cannot be used: unreadable, unsafe, or matching nothing in the network."""


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for unsafe payloads, RuntimeError for damaged zips ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"{path}: refused to load ({type(e).__name__}: {reason})") from None


def extract_state_dict(obj: dict) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a bare state_dict, ``{"state_dict": ...}`` (Lightning, MONAI),
    ``{"model": ...}`` or ``{"net": ...}``; Lightning's ``net.`` prefix and DDP's ``module.`` are stripped."""
    for key in ("state_dict", "model", "net"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    out = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("module.", "net.", "model."):
            name = name.removeprefix(prefix)
        out[name] = value
    return out


def load_pretrained(net: nn.Module, path: str | Path, strict: bool = False) -> tuple[list[str], list[str]]:
    """Load matching weights from ``path`` into ``net``; returns (loaded keys, network keys left as they were).

    Keys whose name matches but whose shape differs (a different ``out_channels``, say) are skipped and
    reported rather than failing, so an encoder pre-trained elsewhere still initialises a new head.
    """
    weights = extract_state_dict(safe_load(path))
    own = net.state_dict()
    loaded = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise WeightsError(
            f"{path}: no tensor matches {type(net).__name__} (file has {len(weights)} tensors, "
            f"e.g. {next(iter(weights), 'none')!r}; network expects e.g. {next(iter(own))!r})"
        )
    missing = [k for k in own if k not in loaded]
    if strict and missing:
        raise WeightsError(f"{path}: {len(missing)} network tensors missing, e.g. {missing[:3]}")
    net.load_state_dict(loaded, strict=False)
    return list(loaded), missing
