"""Logits -> ADE20K labels at the original image size, in bounded memory (mmseg's bilinear
resizes, ``align_corners=False``, strip by strip when the full-size logits would not fit)."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

__all__ = ["logits_to_labels"]


def _src_coords(out_size: int, in_size: int, torch, device):
    """PyTorch's bilinear source coordinates (align_corners=False) as (i0, i1, l0, l1)."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    dst = torch.arange(out_size, dtype=torch.float32)
    src = (scale * (dst + 0.5) - 0.5).clamp_min(0)
    i0 = src.to(torch.int64).clamp_max(in_size - 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = src - i0.to(torch.float32)
    l0 = 1 - l1
    return i0.to(device), i1.to(device), l0.to(device), l1.to(device)


def _horizontal(x, out_w: int):
    """Width-only bilinear resize of (rows, channels, W): the arithmetic of PyTorch's bilinear
    kernel with a height scale of 1 (rows map onto themselves with weights 1 and 0)."""
    import torch.nn.functional as F

    return F.interpolate(x, size=out_w, mode="linear", align_corners=False)


def _resize_rows(x, out_h: int, out_w: int, rows, torch):
    """Rows ``rows`` of a bilinear (align_corners=False) resize of ``x`` to (out_h, out_w).

    ``x`` is row-major (in_h, channels, in_w); returns (len(rows), channels, out_w). Same order
    of operations as PyTorch's kernel: width first, then the two source rows mixed.
    """
    y0, y1, ly0, ly1 = (t[rows] for t in _src_coords(out_h, x.shape[0], torch, "cpu"))
    need, inv = torch.unique(torch.cat([y0, y1]), return_inverse=True)
    dev = x.device
    horiz = _horizontal(x[need.to(dev)], out_w)  # (|need|, channels, out_w)
    k = rows.numel()
    inv = inv.to(dev)
    return (ly0.to(dev)[:, None, None] * horiz[inv[:k]]
            + ly1.to(dev)[:, None, None] * horiz[inv[k:]])


def logits_to_labels(logits, sizes: Sequence[Tuple[int, int]], *, strip_bytes: int = 1 << 30):
    """argmax over classes of ``logits`` resized bilinearly through each (h, w) of ``sizes``.

    Args:
        logits: float (N, K, h0, w0).
        sizes: one or two sizes to resize through, in order (mmseg: the resized image, then the
            original); ``align_corners=False`` each time, as ``F.interpolate``.
        strip_bytes: bound on the float32 intermediates of one strip of output rows; above it
            the output is computed strip by strip (same values up to float rounding order).

    Returns:
        int64 (N, H, W) labels, H, W = ``sizes[-1]``, on the logits' device.
    """
    import torch.nn.functional as F

    sizes = [tuple(int(v) for v in sz) for i, sz in enumerate(sizes) if i == 0 or tuple(sz) != tuple(sizes[i - 1])]
    if tuple(logits.shape[2:]) == sizes[0] and len(sizes) > 1:
        sizes = sizes[1:]  # resizing to the same size is the identity (weights 1 and 0)
    if not 1 <= len(sizes) <= 2:
        raise ValueError("logits_to_labels: one or two sizes")
    n, k = logits.shape[:2]
    H, W = sizes[-1]
    widest = max([W] + [s[1] for s in sizes])
    if n * k * H * widest * 4 * 2 <= strip_bytes:  # small: exactly mmseg's operations
        x = logits
        for s in sizes:
            x = F.interpolate(x, size=tuple(s), mode="bilinear", align_corners=False)
        return x.argmax(1)
    out = torch.empty((n, H, W), dtype=torch.int64, device=logits.device)
    rows_per = max(1, strip_bytes // (n * k * widest * 4 * 4))
    # row-major layout (h, N*K, w): selecting rows copies contiguous blocks (indexing, which is
    # much faster on CPU than index_select here)
    x = logits.permute(2, 0, 1, 3).reshape(logits.shape[2], n * k, logits.shape[3]).contiguous()
    for r0 in range(0, H, rows_per):
        rows = torch.arange(r0, min(H, r0 + rows_per))
        if len(sizes) == 1:
            part = _resize_rows(x, H, W, rows, torch)
        else:
            h1, w1 = sizes[0]
            y0, y1, ly0, ly1 = (t[rows] for t in _src_coords(H, h1, torch, "cpu"))
            need, inv = torch.unique(torch.cat([y0, y1]), return_inverse=True)
            mid = _horizontal(_resize_rows(x, h1, w1, need, torch), W)  # rows `need` of resize 1
            kk, dev = rows.numel(), logits.device
            inv = inv.to(dev)
            part = (ly0.to(dev)[:, None, None] * mid[inv[:kk]]
                    + ly1.to(dev)[:, None, None] * mid[inv[kk:]])
        lab = part.reshape(rows.numel(), n, k, W).argmax(2)  # (rows, N, W)
        out[:, r0:r0 + rows.numel()] = lab.permute(1, 0, 2)
    return out
