"""D map on torch tensors with the Triton stage-1 kernel (see stage1.py for the algorithm and the
cost model in __init__.py's docstring)."""
from __future__ import annotations

import torch

from . import _launch
from .window import HALO


def dmap(gan: torch.Tensor, mse: torch.Tensor, *, layout: str = "nchw", window: str = "gaussian",
         scale: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """D map of a batch, float32 (N, H-10, W-10), within 1e-5 of the float64 reference.

    gan, mse: 4-D tensors of identical shape, dtype (uint8, uint16, float16, bfloat16 or float32) and
      device, layout "nchw" (N, C, H, W) or "nhwc" (N, H, W, C), C in 1..4 (docs/spec.md §1: 1 or 3),
      H, W >= 11, any strides (views are read in place, never copied or converted).
    window: "gaussian" (11x11, sigma 1.5, the default) or "box" (11x11, 1/121).
    scale: factor mapping element values to the 0..255 scale (1 for uint8, 255/65535 for uint16, 255 for floats in [0, 1]).
    out: optional float32 (N, H-10, W-10) tensor with contiguous rows to write into.
    Returns D in [0, 1] (never NaN), one value per valid pixel (every 11x11 window inside).
    Raises RuntimeError for CPU tensors unless TRITON_INTERPRET=1 was set before import.
    """
    g, m = _launch.pair_geometry(gan, mse, layout)
    scale = _launch.check_scale(scale)
    shape = (g.N, g.H - 2 * HALO, g.W - 2 * HALO)
    out = _launch.make_out(out, shape, torch.float32, gan.device, "dmap")
    return _launch.launch(gan, mse, g, m, out, window=window, scale=scale, fused=False)
