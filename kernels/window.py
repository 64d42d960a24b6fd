"""Window weights and constants shared by the Triton kernels (docs/spec.md §1).

The float64 weights are the ones the authors' script uses: ``cv2.getGaussianKernel(11, 1.5)``
(taken from OpenCV itself, a dependency of desra_fast: its bit-exact exp differs from libm's in the
last bit of some taps) and their outer product; the box window is 1/121 everywhere.

Tables are padded from 11 to 16 taps because Triton block dimensions must be powers of two; the
padding weights are exactly 0 so padded lanes never contribute.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

WINDOW = 11            # window side
HALO = WINDOW // 2     # 5: D exists only where the whole window is inside the image
TAPS = 16              # WINDOW padded to a power of two (Triton block shapes)
C_CONST = (0.03 * 255.0) ** 2   # 58.5225, numerator and denominator of D_c
VAR_EPS = 1e-8                  # added under the square roots
SIGMA = 1.5
WINDOWS = ("gaussian", "box")


@functools.lru_cache(maxsize=None)
def _gaussian_1d() -> np.ndarray:
    g = np.ascontiguousarray(cv2.getGaussianKernel(WINDOW, SIGMA, ktype=cv2.CV_64F)[:, 0], dtype=np.float64)
    g.setflags(write=False)
    return g


def gaussian_1d() -> np.ndarray:
    """float64 (11,): the weights of cv2.getGaussianKernel(11, 1.5), summing to 1 (within 1 ulp)."""
    return _gaussian_1d().copy()


def weights_1d(window: str) -> np.ndarray:
    """float64 (11,) separable factor of the 2-D window (box: 1/11)."""
    if window == "gaussian":
        return gaussian_1d()
    if window == "box":
        return np.full(WINDOW, 1.0 / WINDOW)
    raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")


def weights_2d(window: str) -> np.ndarray:
    """float64 (11, 11): the 2-D window exactly as the reference builds it
    (np.outer of the Gaussian kernel; box: np.ones / 121)."""
    if window == "gaussian":
        g = gaussian_1d()
        return np.outer(g, g)
    if window == "box":
        return np.ones((WINDOW, WINDOW)) / float(WINDOW * WINDOW)
    raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")


def taps_f32(window: str) -> np.ndarray:
    """float32 (16,): separable weights for the float32 fast path, zero-padded to 16."""
    t = np.zeros(TAPS, dtype=np.float32)
    t[:WINDOW] = weights_1d(window).astype(np.float32)
    return t


def taps2d_f64(window: str) -> np.ndarray:
    """float64 (11*16,): row a holds the 2-D weights w[a, 0..10] then 5 zeros (float64 recompute)."""
    t = np.zeros((WINDOW, TAPS), dtype=np.float64)
    t[:, :WINDOW] = weights_2d(window)
    return t.reshape(-1)


def centre_weight(window: str) -> float:
    """w[5, 5], the weight of the window centre (enters the float32 error bound, see dmap.py)."""
    return float(weights_2d(window)[HALO, HALO])
