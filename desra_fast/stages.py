"""The detection stages on their own, for reuse (docs/spec.md §2-3).

All take a 2-D (h, w) or batched 3-D (N, h, w) input (numpy, or torch — computed on the host and
returned on the input's device) and return a bool mask of the same shape. They run the same C++
kernels as :func:`desra_fast.detect`.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _native
from ._inputs import check_area_threshold, check_threshold, is_tensor, prepare_mask
from .weights import WeightsLike, load_weights

HALO = 5


def _finish(out: np.ndarray, batched: bool, device):
    out = out.view(np.bool_)
    if not batched:
        out = out[0]
    if device is not None:
        import torch

        return torch.from_numpy(out).to(device)
    return out


def _check_radius(radius) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    return int(radius)


def threshold(d: Any, seg: Optional[Any] = None, *, threshold: float = 0.7,
              weights: WeightsLike = None) -> Any:
    """``clip(D * W[seg], 0, 1) < threshold`` on a given D map (float64 arithmetic on its values).

    Args:
        d: D map, float (h, w) or (N, h, w), e.g. from :func:`desra_fast.d_map`.
        seg: None, or ADE20K labels 0..149 of the full image (h+10, w+10) — cropped by 5 px as
            the released script does — or already of d's shape.
        threshold: strict upper bound on D'. weights: as in :func:`desra_fast.detect`.

    Returns:
        bool mask of d's shape (numpy, or torch on d's device).

    Note: :func:`desra_fast.detect` decides pixels near the threshold from the float64 D; applied
    to a float32 D this function can differ from it on those few pixels.
    """
    thr = check_threshold(threshold)
    w = load_weights(weights)  # validated even without seg: a bad argument is an error either way
    device = None
    if is_tensor(d):
        device = d.device
        d = d.detach().cpu()
        d = (d.float() if d.is_floating_point() and d.element_size() < 4 else d).numpy()  # bf16/f16
    d = np.asarray(d)
    if d.dtype.kind != "f" or d.ndim not in (2, 3):
        raise ValueError(f"d must be a float (h, w) or (N, h, w) D map, got {d.dtype} {d.shape}")
    dd = d.astype(np.float64)
    if not np.all(np.isfinite(dd)):
        raise ValueError("d contains NaN or infinite values")
    if seg is not None:
        s = seg.detach().cpu().numpy() if is_tensor(seg) else np.asarray(seg)
        if s.dtype.kind not in "ui":
            raise TypeError(f"seg must hold integer labels, got dtype {s.dtype}")
        if s.shape[-2:] == tuple(x + 2 * HALO for x in d.shape[-2:]):
            s = s[..., HALO:-HALO, HALO:-HALO]
        if s.shape != d.shape:
            raise ValueError(f"seg shape {s.shape} matches neither d {d.shape} nor the full image")
        if s.size and (s.min() < 0 or s.max() >= w.size):
            raise ValueError(f"seg labels must be in 0..149, found [{s.min()}, {s.max()}]")
        dd = np.clip(dd * w[s], 0.0, 1.0)
    else:
        dd = np.clip(dd, 0.0, 1.0)
    out = dd < thr
    if device is not None:
        import torch

        return torch.from_numpy(out).to(device)
    return out


def erode(mask: Any, radius: int = 2) -> Any:
    """Binary erosion with a (2r+1)^2 square; pixels outside the image do not erode (cv2's
    default border). radius=2 is the pipeline's 5x5."""
    m, batched, device = prepare_mask(mask)
    return _finish(_native.C.erode(m, _check_radius(radius)), batched, device)


def dilate(mask: Any, radius: int = 6) -> Any:
    """Binary dilation with a (2r+1)^2 square; outside the image does not dilate. radius=6 (13x13)
    equals the pipeline's 5x5 dilation applied three times."""
    m, batched, device = prepare_mask(mask)
    return _finish(_native.C.dilate(m, _check_radius(radius)), batched, device)


def fill_holes(mask: Any) -> Any:
    """Fill holes: background not 8-connected through background to the image border becomes
    foreground (scipy ``binary_fill_holes`` with a 3x3 structure of ones)."""
    m, batched, device = prepare_mask(mask)
    return _finish(_native.C.fill_holes(m), batched, device)


def filter_components(mask: Any, area_threshold: int = 4000) -> Any:
    """Keep the 8-connected foreground components with more than ``area_threshold`` pixels."""
    m, batched, device = prepare_mask(mask)
    out, _ = _native.C.filter_components(m, check_area_threshold(area_threshold, m.shape[1] * m.shape[2]))
    return _finish(out, batched, device)


def postprocess(mask: Any, area_threshold: int = 4000) -> Any:
    """erode 5x5 -> dilate 13x13 -> fill holes -> keep components > ``area_threshold``, fused:
    the morphology half of :func:`desra_fast.detect` on a thresholded valid-region mask."""
    m, batched, device = prepare_mask(mask)
    out = np.empty_like(m)
    _native.C.postprocess(m, check_area_threshold(area_threshold, m.shape[1] * m.shape[2]), out)
    return _finish(out, batched, device)
