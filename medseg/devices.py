"""Device names as users write them: ``cpu``, ``cuda``, ``cuda:1``, or ``auto`` (a GPU when there is one)."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; any other name as ``torch.device`` reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def gpu_memory_gib(index: int = 0) -> float | None:
    """Total memory of CUDA device ``index`` in GiB, or None when no GPU is visible."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(index).total_memory / 2**30
