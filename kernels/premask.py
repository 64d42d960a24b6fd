"""Fused stage 1 (D map -> label weights -> clip -> < threshold) on torch tensors: one Triton
launch writes the uint8 pre-morphology mask (algorithm in stage1.py)."""
from __future__ import annotations

import math

import torch

from . import _launch
from .window import HALO


def premask(gan: torch.Tensor, mse: torch.Tensor, labels: torch.Tensor | None = None,
            weights: torch.Tensor | None = None, *, threshold: float = 0.7, layout: str = "nchw",
            window: str = "gaussian", scale: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Pre-morphology mask, uint8 0/1 (N, H-10, W-10): 1 where clip(D * W[label], 0, 1) < threshold.

    gan, mse: as for dmap(): 4-D uint8/uint16/float16/bfloat16/float32, "nchw" or "nhwc", any strides.
    labels: None (W = 1 everywhere) or an integer label map (N, H, W) of the full image size, uint8,
      any strides, read at the +5 offset of the valid region; every label < len(weights).
    weights: float64 or float32 (K,) tensor, W[label] >= 0 (ADE20K: K = 150); required with labels.
    threshold: the float64 threshold (docs/spec.md §3 default 0.7).
    Decided exactly as the float64 reference decides: pixels whose float32 interval straddles the
    threshold are recomputed in float64 inside the kernel (no host synchronisation).
    Raises RuntimeError for CPU tensors unless TRITON_INTERPRET=1 was set before import.
    """
    g, m = _launch.pair_geometry(gan, mse, layout)
    scale = _launch.check_scale(scale)
    thr = float(threshold)
    if math.isnan(thr):
        raise ValueError("threshold must not be NaN")
    shape = (g.N, g.H - 2 * HALO, g.W - 2 * HALO)
    out = _launch.make_out(out, shape, torch.uint8, gan.device, "premask")
    wtab = None
    l_strides = (0, 0, 0)
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.uint8:
            raise TypeError(f"labels must be a uint8 torch.Tensor, got {getattr(labels, 'dtype', type(labels))}")
        if tuple(labels.shape) != (g.N, g.H, g.W):
            raise ValueError(f"labels must have shape (N, H, W) = {(g.N, g.H, g.W)}, got {tuple(labels.shape)}")
        if labels.device != gan.device:
            raise ValueError(f"labels are on {labels.device}, images on {gan.device}")
        if weights is None:
            raise ValueError("weights are required with labels")
        if not isinstance(weights, torch.Tensor) or weights.dim() != 1 or weights.dtype not in (torch.float32, torch.float64):
            raise TypeError("weights must be a 1-D float32 or float64 torch.Tensor")
        wtab = weights.to(device=gan.device, dtype=torch.float64).contiguous()
        l_strides = labels.stride()
    return _launch.launch(gan, mse, g, m, out, window=window, scale=scale, fused=True,
                          labels=labels, l_strides=l_strides, wtab=wtab, threshold=thr)
