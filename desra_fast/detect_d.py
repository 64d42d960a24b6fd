"""The DeSRA mask and the D map from ONE computation of D (what ``desra-fast run`` records).

:func:`desra_fast.detect` evaluates D only where the 5x5 erosion can keep a pixel, so a caller
that also wants the full D map (its statistics go to the run's manifest) would compute D twice.
:func:`detect_with_d` computes the full D map once (:func:`desra_fast.d_map`) and derives the mask
from it with the same exactness rule as :func:`~desra_fast.detect`: a pixel whose float32
``clip(D * W, 0, 1)`` lies within a safe bound of the threshold is recomputed in float64 from the
images (11x11 windows of those pixels only), then the 5x5 erosion, three 5x5 dilations, hole
filling and the area filter run as in ``detect`` (the native ``postprocess``).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _native, backends
from ._inputs import (check_area_threshold, check_threshold, prepare_pair, prepare_seg, window_code)
from .api import HALO, d_map, detect
from .weights import WeightsLike, load_weights

__all__ = ["detect_with_d", "D_BOUND"]

#: |float32 D - float64 D| bound used to pick the pixels decided in float64: 10x the d_map's
#: documented 1e-5 (measured: 2.7e-7), scaled by the pixel's semantic weight when above 1.
D_BOUND = 1e-4
_C = (0.03 * 255.0) ** 2


def _window(window: str) -> np.ndarray:
    if window == "box":
        return np.full((11, 11), 1.0 / 121.0)
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    return np.outer(g, g)


def d64_at(gan: np.ndarray, mse: np.ndarray, scale: float, n, i, j, window: str = "gaussian") -> np.ndarray:
    """float64 D (docs/spec.md §1) at valid-region pixels ``(n[k], i[k], j[k])``.

    Args:
        gan, mse: (N, H, W, C) numpy images (C in {1, 3}); ``scale`` maps values to 0..255.
        n, i, j: int arrays (k,), pixel (i, j) of the (H-10, W-10) valid region of image n.
        window: ``"gaussian"`` or ``"box"``.

    Returns:
        float64 (k,) D values.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    w = _window(window)
    out = np.zeros(len(n), dtype=np.float64)
    if not len(n):
        return out
    views = [sliding_window_view(a, (11, 11), axis=(1, 2)) for a in (mse, gan)]   # (N, h, w, C, 11, 11)
    x, y = (v[n, i, j].astype(np.float64) * scale for v in views)                 # (k, C, 11, 11)
    mx, my = (np.einsum("kcab,ab->kc", a, w) for a in (x, y))
    vx = np.einsum("kcab,ab->kc", x * x, w) - mx * mx
    vy = np.einsum("kcab,ab->kc", y * y, w) - my * my
    dc = (2 * np.sqrt(vx + 1e-8) * np.sqrt(vy + 1e-8) + _C) / (vx + vy + _C)
    return dc.mean(axis=1)


def detect_with_d(gan, mse, seg: Optional[Any] = None, *, threshold: float = 0.7, area_threshold: int = 4000,
                  window: str = "gaussian", weights: WeightsLike = None, backend: str = "auto"
                  ) -> Tuple[Any, Any, Any]:
    """``(mask, counts, d)``: :func:`desra_fast.detect`'s mask and region counts and
    :func:`desra_fast.d_map`'s D, with D computed once.

    Args:
        gan, mse, seg, threshold, area_threshold, window, weights, backend: as in
            :func:`desra_fast.detect` (``seg`` a label map, not a Segmenter).

    Returns:
        mask: bool (H, W) / (N, H, W), equal to ``detect(...)``'s (numpy for numpy input, a
        torch.bool tensor on the input's device for tensors); counts: int / int64 (N,) regions
        kept; d: float32 (H-10, W-10) / (N, H-10, W-10) as ``d_map(...)`` returns it.
        On a GPU backend the two GPU kernels run (D is cheap there): ``detect`` then ``d_map``.
    """
    pair = prepare_pair(gan, mse)
    if backends.resolve(backend, pair) != "cpu":
        mask, counts = detect(gan, mse, seg, threshold=threshold, area_threshold=area_threshold, window=window,
                              weights=weights, backend=backend, return_counts=True)
        return mask, counts, d_map(gan, mse, window=window, backend=backend)
    window_code(window)
    thr = check_threshold(threshold)
    n, (H, W) = pair.n, pair.hw
    area = check_area_threshold(area_threshold, (H - 2 * HALO) * (W - 2 * HALO))
    wts = load_weights(weights)
    labels = prepare_seg(seg, pair)
    d = d_map(gan, mse, window=window, backend="cpu")
    d4 = np.asarray(d.cpu() if hasattr(d, "cpu") else d).reshape(n, H - 2 * HALO, W - 2 * HALO)
    dp = d4.astype(np.float64)
    wmap = None
    if labels is not None:
        wmap = np.asarray(wts, dtype=np.float64)[labels[:, HALO:H - HALO, HALO:W - HALO]]
        dp = dp * wmap
    # Clipping is monotonic: a product farther than the bound from the threshold is decided.
    near = np.nonzero(np.abs(dp - thr) <= D_BOUND * (1.0 if wmap is None else np.maximum(wmap, 1.0)))
    if wmap is not None:
        dp = np.clip(dp, 0.0, 1.0)
    if len(near[0]):
        g, m, scale = pair.numpy_nhwc()
        exact = d64_at(g, m, scale, *near, window=window)
        if labels is not None:
            exact = np.clip(exact * wmap[near], 0.0, 1.0)
        dp[near] = exact
    pre = np.ascontiguousarray(dp < thr, dtype=np.uint8)
    full = np.zeros((n, H, W), dtype=np.bool_)
    counts = _native.C.postprocess(pre, area, full[:, HALO:H - HALO, HALO:W - HALO])
    mask = full
    if pair.is_torch:
        import torch

        mask = torch.from_numpy(full).to(pair.device)
    if not pair.batched:
        return mask[0], int(counts[0]), d
    return mask, counts, d
