"""Mixed precision for the fine-tune: which precision ``auto`` means on a device, and the autocast
context of the forward passes.

``bf16`` runs the forward passes of the generator, the discriminator and the VGG19 under
``torch.autocast(dtype=torch.bfloat16)``; the weights, their gradients, the optimiser states and
the EMA stay float32 (the parameters are float32 and autocast only casts operands), and the
losses are reduced in float32. ``auto`` picks bf16 only where the hardware computes it natively:
CUDA devices of compute capability 8.0 or newer, CPUs whose ``/proc/cpuinfo`` flags list
``avx512_bf16`` or ``amx_bf16``. Elsewhere (e.g. AVX2-only CPUs) bf16 is emulated through fp32 and
is slower than fp32, so ``auto`` means fp32 there.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set:
    """The CPU feature flags listed in ``cpuinfo`` (empty where the file is missing)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device, flags: Optional[set] = None) -> bool:
    """Whether ``device`` computes bf16 natively (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return bool(set(NATIVE_BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags))
    return False


def resolve(precision: str, device: torch.device, flags: Optional[set] = None) -> str:
    """``"auto"|"fp32"|"bf16"`` -> ``"fp32"`` or ``"bf16"`` for ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device, flags) else "fp32"
    return precision


def autocast(precision: str, device: torch.device):
    """The forward passes' context: bf16 autocast for ``"bf16"``, nothing for ``"fp32"``."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["PRECISIONS", "resolve", "autocast", "native_bf16", "cpu_flags"]
