"""desra_fast as benchmarked: the public API with ``backend="cpu"`` (plus the fused native stages
that :func:`desra_fast.detect` runs, for the stage breakdown).

Stage breakdown of ``detect`` on the CPU backend:
- ``premask``: D map + semantic weights + threshold, fused in one pass (``desra_fast._C.premask``,
  float64 re-check of pixels near the threshold included);
- ``postprocess``: erode, dilate, fill holes, area filter, fused (``desra_fast._C.postprocess``),
  written into the interior of the full-size output.
``d_map`` (public, float32 D) and the per-stage public functions (``erode``, ``dilate``,
``fill_holes``, ``filter_components``) are timed on their own too.
"""
from __future__ import annotations

import numpy as np

import desra_fast
from desra_fast import _native

HALO = 5
THRESHOLD = 0.7
AREA_THRESHOLD = 4000


def detect(gan: np.ndarray, mse: np.ndarray, seg: np.ndarray | None) -> np.ndarray:
    """bool (H, W) mask (5-pixel frame False)."""
    return desra_fast.detect(gan, mse, seg, threshold=THRESHOLD, area_threshold=AREA_THRESHOLD,
                             backend="cpu")


def d_map(gan: np.ndarray, mse: np.ndarray) -> np.ndarray:
    """float32 (H-10, W-10) D map."""
    return desra_fast.d_map(gan, mse, backend="cpu")


def premask(gan: np.ndarray, mse: np.ndarray, seg: np.ndarray | None, weights: np.ndarray) -> np.ndarray:
    """uint8 0/1 (1, H-10, W-10): the first half of ``detect`` (fused native kernel)."""
    labels = None if seg is None else seg[None]
    return _native.C.premask(gan[None], mse[None], labels, weights, THRESHOLD, 0, 1.0)


def postprocess(pre: np.ndarray) -> np.ndarray:
    """bool (1, H, W): the second half of ``detect`` (fused native kernel) into a full-size mask."""
    n, h, w = pre.shape
    full = np.zeros((n, h + 2 * HALO, w + 2 * HALO), np.bool_)
    _native.C.postprocess(pre, AREA_THRESHOLD, full[:, HALO:-HALO, HALO:-HALO])
    return full


def erode(mask: np.ndarray) -> np.ndarray:
    return desra_fast.erode(mask)


def dilate(mask: np.ndarray) -> np.ndarray:
    return desra_fast.dilate(mask)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    return desra_fast.fill_holes(mask)


def filter_components(mask: np.ndarray) -> np.ndarray:
    return desra_fast.filter_components(mask, AREA_THRESHOLD)


def ready() -> tuple[bool, str]:
    """(True, "") when the native kernels this benchmark calls are built, else (False, why)."""
    missing = [name for name in ("dmap", "premask", "postprocess", "erode", "dilate", "fill_holes",
                                 "filter_components") if not hasattr(_native.C, name)]
    if missing:
        return False, "desra_fast._C lacks " + ", ".join(missing)
    return True, ""


def num_threads() -> int:
    return desra_fast.get_num_threads()
