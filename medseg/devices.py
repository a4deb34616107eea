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


PRECISIONS = ("fp32", "bf16", "auto")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_native(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 fast enough to be worth it: a CUDA GPU that supports it (Ampere and
    later), or a CPU with AMX (``/proc/cpuinfo`` flag ``amx_bf16`` and, where PyTorch has the probe, its
    tiles usable). Measured on 2-core Intel Xeons (docs/benchmarks.md): with AMX, a 2048^2 matmul ran 2.6x
    faster in bf16 than float32 and a feature_size-48 BraTS case 1.54x (84.9 s against 130.6 s); on another
    Xeon reporting AVX-512 BF16 (its AMX not recorded), the same case with planned windows took 62 s in bf16
    against 46 s in float32; with neither, oneDNN emulates bf16 at 0.3-0.4x the float32 speed. So AVX-512
    BF16 alone does not count."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu" or "amx_bf16" not in cpu_flags():
        return False
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, present in torch >= 2.3
    return probe is None or bool(probe())


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 where :func:`bf16_native` holds for ``device``, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision
