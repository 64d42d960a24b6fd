"""Argument handling shared by the Triton launch functions (dmap.py, premask.py).

Inputs arrive already validated by desra_fast's Python API; the checks here only guard the
kernel's own contract (shapes, dtypes, devices) with clear errors instead of a crash.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from . import window as _win
from .stage1 import stage1_kernel, var_rel_bound

SUPPORTED_DTYPES = tuple(d for d in (torch.uint8, getattr(torch, "uint16", None), torch.float16,
                                      torch.bfloat16, torch.float32) if d is not None)
LAYOUTS = ("nchw", "nhwc")

# Tile shapes. On a GPU: 32 output columns x 64 output rows per program and one warp per
# (image, padded channel) pair, i.e. 2 * CP warps (8 for RGB): lanes on columns, the 16 taps in
# registers. Under the interpreter the cost grows with the number of programs, so tiles are as
# large as the image allows.
GPU_BW, GPU_BH = 32, 64
INTERP_MAX_BW, INTERP_BH = 128, 256


def interpreting() -> bool:
    """True when the kernels were created under TRITON_INTERPRET=1 (they then run on CPU tensors)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(stage1_kernel, InterpretedFunction)


def check_device(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu":
        if interpreting():
            return
        raise RuntimeError(
            "desra_fast.kernels: the Triton backend needs CUDA tensors; CPU tensors run only under "
            "Triton's interpreter, i.e. with TRITON_INTERPRET=1 set in the environment before "
            "desra_fast.kernels is first imported. Use backend='cpu' for CPU tensors.")
    raise RuntimeError(f"desra_fast.kernels: unsupported device {t.device} (need cuda)")


class Geometry(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    sN: int
    sC: int
    sH: int
    sW: int


def geometry(t: torch.Tensor, layout: str, name: str) -> Geometry:
    """Logical (N, C, H, W) sizes and element strides of a 4-D tensor in the given layout."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be 4-D ({layout.upper()}), got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} dtype {t.dtype} not supported by the Triton kernel "
                        f"(uint8, uint16, float16, bfloat16, float32; "
                        f"float64 inputs are not exact in float32: use the CPU backend)")
    if layout == "nchw":
        N, C, H, W = t.shape
        sN, sC, sH, sW = t.stride()
    elif layout == "nhwc":
        N, H, W, C = t.shape
        sN, sH, sW, sC = t.stride()
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not 1 <= C <= 4:
        raise ValueError(f"{name} must have 1 to 4 channels (SPEC: 1 or 3), got {C} ({layout})")
    if H < _win.WINDOW or W < _win.WINDOW:
        raise ValueError(f"{name} must be at least 11x11 (the window), got {H}x{W}")
    return Geometry(N, C, H, W, sN, sC, sH, sW)


def pair_geometry(gan, mse, layout):
    g = geometry(gan, layout, "gan")
    m = geometry(mse, layout, "mse")
    if (g.N, g.C, g.H, g.W) != (m.N, m.C, m.H, m.W):
        raise ValueError(f"gan and mse shapes differ: {tuple(gan.shape)} vs {tuple(mse.shape)}")
    if gan.dtype != mse.dtype:
        raise TypeError(f"gan and mse dtypes differ: {gan.dtype} vs {mse.dtype} (one scale applies to both)")
    if gan.device != mse.device:
        raise ValueError(f"gan and mse are on different devices: {gan.device} vs {mse.device}")
    check_device(gan)
    return g, m


_TABLES: dict = {}


def tables(window: str, device: torch.device):
    """(float32 (16,) separable taps, float64 (176,) 2-D taps, rho) for the window, cached per device."""
    if window not in _win.WINDOWS:
        raise ValueError(f"window must be one of {_win.WINDOWS}, got {window!r}")
    key = (window, str(device))
    if key not in _TABLES:
        _TABLES[key] = (
            torch.from_numpy(_win.taps_f32(window)).to(device),
            torch.from_numpy(_win.taps2d_f64(window)).to(device),
            var_rel_bound(_win.weights_1d(window)),
        )
    return _TABLES[key]


def check_scale(scale) -> float:
    s = float(scale)
    if not math.isfinite(s) or s <= 0.0:
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    return s


def float32_bracket(x: float) -> tuple[float, float]:
    """(lo, hi): float32 values with lo <= x <= hi, as tight as possible (equal when x is a float32)."""
    x32 = np.float32(x)
    if float(x32) > x:
        return float(np.nextafter(x32, np.float32(-np.inf))), float(x32)
    if float(x32) < x:
        return float(x32), float(np.nextafter(x32, np.float32(np.inf)))
    return float(x32), float(x32)


def gpu_warps(channels: int) -> int:
    """One warp per (image, padded channel): 2 * next_pow2(C)."""
    return 2 * (1 << (channels - 1).bit_length())


def tile_config(Ho: int, Wo: int, channels: int) -> tuple[int, int, int]:
    """(BW, BH, num_warps) for the current mode (see GPU_* / INTERP_* above)."""
    if interpreting():
        bw = min(INTERP_MAX_BW, max(16, 1 << (Wo - 1).bit_length()))
        return bw, min(INTERP_BH, Ho), 4
    return GPU_BW, GPU_BH, gpu_warps(channels)


def make_out(out, shape, dtype, device, name):
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name}: out must be a {dtype} tensor of shape {tuple(shape)}")
    if out.device != device:
        raise ValueError(f"{name}: out is on {out.device}, inputs on {device}")
    if shape[2] > 1 and out.stride(2) != 1:
        raise ValueError(f"{name}: out rows must be contiguous (stride(2) == 1), got strides {out.stride()}")
    return out


def launch(gan, mse, g: Geometry, m: Geometry, out, *, window, scale, fused, labels=None,
           l_strides=(0, 0, 0), wtab=None, threshold=0.0):
    C, Ho, Wo = g.C, g.H - 2 * _win.HALO, g.W - 2 * _win.HALO
    if g.N == 0:
        return out
    taps, taps2d, rho = tables(window, gan.device)
    bw, bh, warps = tile_config(Ho, Wo, C)
    grid = (triton_cdiv(Wo, bw), triton_cdiv(Ho, bh), g.N)
    thr_lo, thr_hi = float32_bracket(threshold)
    params64 = torch.tensor([float(threshold), scale], dtype=torch.float64, device=gan.device)
    if wtab is None:
        wtab = params64  # never read (HAS_LABELS=False); any valid pointer
    has_labels = labels is not None
    if labels is None:
        labels = out
    stage1_kernel[grid](
        gan, mse, out,
        labels, wtab, taps, taps2d, params64,
        Ho, Wo,
        g.sN, g.sC, g.sH, g.sW,
        m.sN, m.sC, m.sH, m.sW,
        out.stride(0), out.stride(1),
        *l_strides,
        wtab.numel(),
        scale * scale, rho, thr_lo, thr_hi,
        C=C, FUSED_MASK=fused, HAS_LABELS=has_labels, CP=1 << (C - 1).bit_length(), BH=bh, BW=bw,
        num_warps=warps,
    )
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
