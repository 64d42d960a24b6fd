"""Seam-free tiled upscaling and the automatic tile size behind ``SRModel.upscale(tile=...)``.

Why: a tile cut with a few pixels of context shows its border, because RRDBNet's receptive field
is hundreds of LR pixels (tile 64 with Real-ESRGAN's 10 px of context differs from the untiled
pass by up to 142 uint8 levels on 68.6 % of the values of a real image). Here every tile is run
with ``tile_pad`` pixels of context around the part of it that is kept, neighbouring tiles keep
an overlapping band of ``overlap`` pixels centred on their common border, and the band is a
weighted average of the two (raised-cosine weights, a partition of unity), so the error that is
left changes smoothly across the border instead of jumping there.

The default context and overlap per architecture come from the measured error-versus-context
curve of the real models (``benchmarks/tiling.py curve``; numbers and command in
``docs/tiling.md``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["DEFAULT_TILING", "resolve", "upscale_tiled", "auto_tile", "activation_bytes_per_pixel",
           "model_bytes_per_pixel", "parse_memory"]

#: (context, overlap) in LR pixels by architecture, from the measured error-versus-context curve.
#: SRMD: 12 plain 3x3 convolutions at LR resolution = a receptive-field radius of exactly 12 px,
#: so 12 px of context is exact and nothing needs blending.
DEFAULT_TILING = {"RRDBNet": (48, 16), "SRMD": (12, 0)}
_FALLBACK_TILING = (48, 16)


def resolve(info: dict, tile_pad: int | None, overlap: int | None) -> tuple[int, int]:
    """(context, overlap) a call uses. ``tile_pad`` None: ``info['tile_pad']`` when set, else
    :data:`DEFAULT_TILING` by architecture. ``overlap`` None: the default's overlap when
    ``tile_pad`` is None too, else 0 (an explicit ``tile_pad`` alone is Real-ESRGAN's tiling)."""
    pad, ov = DEFAULT_TILING.get(info.get("arch"), _FALLBACK_TILING)
    pad, ov = int(info.get("tile_pad", pad)), int(info.get("tile_overlap", ov))
    if overlap is None:
        overlap = ov if tile_pad is None else 0
    return (pad if tile_pad is None else int(tile_pad)), int(overlap)


def _ramp(n: int, device) -> torch.Tensor:
    """Raised-cosine weights rising over ``n`` samples taken at pixel centres: strictly inside
    (0, 1), and ``ramp[i] + ramp[n-1-i] == 1`` (two neighbours' weights sum to one)."""
    t = (torch.arange(n, dtype=torch.float64, device=device) + 0.5) / n
    return (0.5 - 0.5 * torch.cos(math.pi * t)).float()


def _axis_weights(k0: int, k1: int, c0: int, c1: int, n: int, half: int, s: int, device) -> torch.Tensor:
    """Weights along one axis of the kept span [k0, k1) (LR px) of a tile whose core is [c0, c1)
    in an axis of length n: rising over [c0 - half, c0 + half) unless c0 is the image edge,
    falling over [c1 - half, c1 + half) unless c1 is; SR resolution (scale s)."""
    w = torch.ones((k1 - k0) * s, dtype=torch.float32, device=device)
    band = 2 * half * s
    if c0 > 0:
        r = _ramp(band, device)
        a = (c0 - half - k0) * s
        lo, hi = max(a, 0), min(a + band, w.numel())
        w[lo:hi] *= r[lo - a:hi - a]
    if c1 < n:
        r = _ramp(band, device).flip(0)
        a = (c1 - half - k0) * s
        lo, hi = max(a, 0), min(a + band, w.numel())
        w[lo:hi] *= r[lo - a:hi - a]
    return w


def upscale_tiled(run_tile: Callable[[torch.Tensor, str], torch.Tensor], xp: torch.Tensor, scale: int,
                  tile: int, tile_pad: int, overlap: int, mod: int = 1) -> tuple[torch.Tensor, int]:
    """Upscale a pre-padded batch tile by tile.

    Args:
        run_tile: ``(x, where) -> y``: the network on an (N, C, h, w) float32 piece, returning
            (N, 3, h*scale, w*scale) float32; ``where`` names the tile for error messages.
        xp: (N, C, H, W) float32, the pre-padded LR batch.
        scale: the model's upscaling factor.
        tile: core size in LR px (rounded down to a multiple of ``mod``, at least ``mod``).
        tile_pad: context in LR px run around the kept part of every tile and cropped away.
        overlap: width in LR px of the band centred on each border between two tiles where both
            are kept and blended (0: Real-ESRGAN's tiling: each tile keeps its core only).
        mod: size multiple the network needs (pixel-unshuffle models).

    Returns:
        (y, tiles): y (N, 3, H*scale, W*scale) float32 (unclamped), tiles = number of runs.
        Where all tiles give the same value the result is that value, bit for bit.
    """
    n, _, H, W = xp.shape
    s = scale
    tile = max(mod, tile // mod * mod)
    tile_pad = -(-tile_pad // mod) * mod
    half = -(-((overlap + 1) // 2) // mod) * mod
    half = min(half, tile)  # a band wider than a tile would blend tiles two apart
    y = torch.zeros((n, 3, H * s, W * s), dtype=torch.float32, device=xp.device)
    wsum = torch.zeros((1, 1, H * s, W * s), dtype=torch.float32, device=xp.device) if half else None
    ny, nx = math.ceil(H / tile), math.ceil(W / tile)
    for iy in range(ny):
        for ix in range(nx):
            y0, x0 = iy * tile, ix * tile
            y1, x1 = min(y0 + tile, H), min(x0 + tile, W)
            ky0, kx0 = max(y0 - half, 0), max(x0 - half, 0)          # kept part: core + half band
            ky1, kx1 = min(y1 + half, H), min(x1 + half, W)
            py0, px0 = max(ky0 - tile_pad, 0), max(kx0 - tile_pad, 0)  # run: kept part + context
            py1, px1 = min(ky1 + tile_pad, H), min(kx1 + tile_pad, W)
            where = f"tile {iy * nx + ix + 1}/{ny * nx} (rows {y0}:{y1}, cols {x0}:{x1} of the padded LR)"
            out = run_tile(xp[:, :, py0:py1, px0:px1], where)
            piece = out[:, :, (ky0 - py0) * s:(ky1 - py0) * s, (kx0 - px0) * s:(kx1 - px0) * s]
            dst = (slice(None), slice(None), slice(ky0 * s, ky1 * s), slice(kx0 * s, kx1 * s))
            if not half:
                y[dst] = piece
                continue
            w = (_axis_weights(ky0, ky1, y0, y1, H, half, s, xp.device)[:, None]
                 * _axis_weights(kx0, kx1, x0, x1, W, half, s, xp.device)[None, :])
            acc = wsum[dst]
            acc += w
            # running weighted mean as a lerp: exact where the new tile agrees with the canvas
            frac = w / acc
            cur = y[dst]
            cur += frac * (piece - cur)
    return y, ny * nx


# ---------------------------------------------------------------------- automatic tile size
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000 ** 2,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1000 ** 3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000 ** 4,
          "tib": 1 << 40}


def parse_memory(text) -> int:
    """Bytes of a memory size: an int, or text such as ``"512M"``, ``"2G"``, ``"1.5GiB"``,
    ``"3000000000"`` (K/M/G/T alone are binary units). Raises ValueError naming the problem."""
    if isinstance(text, bool):
        raise ValueError(f"not a memory size: {text!r}")
    if isinstance(text, int):
        v = text
    else:
        import re

        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise ValueError(f"not a memory size: {text!r} (examples: 512M, 2G, 1.5GiB)")
        v = int(float(m.group(1)) * _UNITS[unit])
    if v <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return v


@torch.no_grad()
def activation_bytes_per_pixel(module: torch.nn.Module, in_channels: int, scale: int, *, probe: int = 16,
                               device="cpu") -> float:
    """Estimated peak bytes of activations per LR input pixel of one forward pass.

    A probe forward on a (1, in_channels, probe, probe) input records every leaf module's input
    and output sizes; the estimate is 1.5 x the largest (input + output) of one leaf (oneDNN
    keeps reordered copies beside a convolution's operands) plus the network's output. It is
    checked against the measured peak RSS in ``benchmarks/tiling.py memory``.
    """
    biggest = [0]

    def hook(mod, inputs, output):
        size = sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))
        if isinstance(output, torch.Tensor):
            size += output.numel() * output.element_size()
        biggest[0] = max(biggest[0], size)

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        p = next(module.parameters(), None)
        dtype = p.dtype if p is not None else torch.float32
        module(torch.zeros((1, in_channels, probe, probe), dtype=dtype, device=device))
    finally:
        for h in handles:
            h.remove()
    out_bytes = 3 * scale * scale * 4
    return (1.5 * biggest[0]) / (probe * probe) + out_bytes


def model_bytes_per_pixel(module, info: dict, device) -> float:
    """:func:`activation_bytes_per_pixel` of an SR module (an :class:`SRModel` module takes RGB:
    wrappers such as SRMD's build their extra input channels inside); for a runner-only model
    (exported ONNX / TensorRT), 64 float32 features at output resolution twice over, the
    Real-ESRGAN layout."""
    scale = int(info["scale"])
    if module is None:
        return 1.5 * 2 * 64 * 4 * scale ** 2 + 12 * scale ** 2
    return activation_bytes_per_pixel(module, 3, scale, device=device, probe=16 * int(info.get("mod", 1)))


def auto_tile(h: int, w: int, *, bytes_per_pixel: float, budget: int, scale: int, tile_pad: int, overlap: int,
              batch: int = 1, fixed: int = 0, mod: int = 1) -> int:
    """The largest tile (LR px, multiple of ``mod``, 0 = untiled) whose pass fits ``budget`` bytes.

    Args:
        h, w: pre-padded LR size. bytes_per_pixel: :func:`activation_bytes_per_pixel`.
        budget: bytes for the whole call: ``fixed`` (weights), the output canvas
            (``batch * 3 * h*w * scale^2 * 4`` bytes, plus the blend weights) and one tile pass.
        tile_pad, overlap: as :func:`upscale_tiled`; the pass runs on
            ``(tile + 2 * (tile_pad + overlap/2))^2`` pixels.

    Raises:
        ValueError: when not even a ``mod``-pixel tile fits (the message gives the minimum).
    """
    canvas = batch * h * w * scale * scale * (3 * 4 + (4 if overlap else 0))
    if (h * w * batch) * bytes_per_pixel + canvas + fixed <= budget:
        return 0
    avail = budget - fixed - canvas
    ctx = 2 * (tile_pad + (overlap + 1) // 2)
    side = math.sqrt(max(avail, 0) / (bytes_per_pixel * batch)) if avail > 0 else 0.0
    tile = int(side) - ctx
    tile = tile // mod * mod
    if tile < max(mod, 8):
        need = fixed + canvas + (max(mod, 8) + ctx) ** 2 * bytes_per_pixel * batch
        raise ValueError(f"max memory {budget / 2**20:.0f} MiB is too small for this image: tiles of "
                         f"{max(mod, 8)} px with {tile_pad} px of context need about {need / 2**20:.0f} MiB")
    return tile
