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
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it (Ampere and later), or a
    CPU with AVX-512 BF16 or AMX (``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``, or PyTorch's own
    probe). Elsewhere oneDNN emulates bf16 on the CPU: on a 2-core AVX-512 Xeon without either, autocast bf16
    ran 2.5-3.6x slower than float32 (a 1024^2 matmul, a 48-channel 48^3 convolution, Swin UNETR fs24 at 64^3)."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    if cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return True
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, present in torch >= 2.3
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 where :func:`bf16_native` holds for ``device``, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision
