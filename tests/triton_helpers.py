"""Shared helpers of the tests/test_triton_*.py files: build input tensors of every dtype and
layout from uint8 HxWxC test images, plus the float64 values the kernel is meant to see."""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before desra_fast.kernels is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import desra_fast.kernels as K  # noqa: E402
from oracle import oracle_dmap  # noqa: E402

# (torch dtype, scale to the 0..255 range) of every dtype the kernel reads.
DTYPES = {
    "uint8": (torch.uint8, 1.0),
    "uint16": (torch.uint16, 255.0 / 65535.0),
    "float16": (torch.float16, 255.0),
    "bfloat16": (torch.bfloat16, 255.0),
    "float32": (torch.float32, 255.0),
}

if K.interpreting():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:  # pragma: no cover - only on a machine without interpreter and without GPU
    DEVICE = None

requires_triton_device = pytest.mark.skipif(
    DEVICE is None, reason="Triton kernels need TRITON_INTERPRET=1 (CPU) or a CUDA device")


def to_dtype(u8_nhwc: np.ndarray, dtype: str, seed: int = 0) -> torch.Tensor:
    """uint8 (N,H,W,C) -> contiguous NHWC tensor of `dtype`; float32 and uint16 get sub-level noise so
    their values are not multiples of 1/255 (every bit of the input matters)."""
    tdtype, _ = DTYPES[dtype]
    if dtype == "uint8":
        return torch.from_numpy(np.ascontiguousarray(u8_nhwc))
    if dtype == "uint16":  # full 16-bit range with random low bits
        rng = np.random.default_rng(seed)
        v = u8_nhwc.astype(np.int32) * 257 + rng.integers(-128, 129, u8_nhwc.shape)
        return torch.from_numpy(np.clip(v, 0, 65535).astype(np.int32)).to(torch.uint16)
    v = u8_nhwc.astype(np.float32) / np.float32(255)
    if dtype == "float32":
        rng = np.random.default_rng(seed)
        v = np.clip(v + rng.uniform(-0.45, 0.45, v.shape).astype(np.float32) / 255, 0, 1).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(v)).to(tdtype)


def values255(t_nhwc: torch.Tensor, dtype: str) -> np.ndarray:
    """float64 (N,H,W,C) values on the 0..255 scale that the kernel must use for this tensor."""
    _, scale = DTYPES[dtype]
    return t_nhwc.cpu().to(torch.float64).numpy() * scale


def in_layout(t_nhwc: torch.Tensor, layout: str, contiguous: bool = True) -> torch.Tensor:
    t = t_nhwc if layout == "nhwc" else t_nhwc.permute(0, 3, 1, 2)
    t = t.contiguous() if contiguous else t
    return t.to(DEVICE)


def oracle_batch(gan64: np.ndarray, mse64: np.ndarray, window: str) -> np.ndarray:
    """float64 (N, H-10, W-10) D maps of NHWC batches already on the 0..255 scale."""
    return np.stack([oracle_dmap(g, m, window) for g, m in zip(gan64, mse64)])


def batch(pairs) -> tuple[np.ndarray, np.ndarray]:
    """list of (gan, mse) uint8 HxWxC -> (gan, mse) uint8 (N,H,W,C)."""
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
