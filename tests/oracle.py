"""Independent float64 oracle of the DeSRA pipeline, built only from OpenCV + scipy + numpy.

It follows the authors' released scripts step for step (see docs/spec.md):
D map per colour channel with ``cv2.filter2D`` on float64 and an 11x11 window cropped to the
valid region, semantic weights, clip, ``< threshold``, ``cv2.erode`` (5x5, once), ``cv2.dilate``
(5x5, three times), ``scipy.ndimage.binary_fill_holes`` (3x3 structure) and
``cv2.connectedComponentsWithStats`` (8-connectivity) keeping components with area > threshold.

This module must never import ``desra_fast``: it is the independent reference the package is
checked against. Inputs are HxWxC (or HxW) arrays already on the 0..255 scale; any dtype
scaling (uint16, float in [0,1]) is done explicitly by the tests.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

BORDER = 5  # half of the 11x11 window: D exists only where the whole window is inside the image
C_CONST = (0.03 * 255) ** 2
WEIGHTS_TSV = Path(__file__).resolve().parents[1] / "desra_fast" / "data" / "ade20k_semantic_weights.tsv"


def _window(window: str) -> np.ndarray:
    if window == "gaussian":
        k = cv2.getGaussianKernel(11, 1.5)
        return np.outer(k, k.transpose())
    if window == "box":
        return np.ones((11, 11), dtype=np.float64) / 121.0
    raise ValueError(f"oracle: unknown window {window!r}")


def _as_hwc(img) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    assert a.ndim == 3, a.shape
    return a


def _local_var(ch: np.ndarray, win: np.ndarray) -> np.ndarray:
    ch = np.ascontiguousarray(ch)
    mu = cv2.filter2D(ch, -1, win)[BORDER:-BORDER, BORDER:-BORDER]
    return cv2.filter2D(ch**2, -1, win)[BORDER:-BORDER, BORDER:-BORDER] - mu**2


def oracle_dmap(gan, mse, window: str = "gaussian") -> np.ndarray:
    """D map, float64 (H-10, W-10). gan, mse: HxWxC or HxW on the 0..255 scale."""
    g = _as_hwc(gan)
    m = _as_hwc(mse)
    assert g.shape == m.shape, (g.shape, m.shape)
    win = _window(window)
    ds = []
    for c in range(g.shape[2]):
        s1 = _local_var(m[:, :, c], win)  # x = MSE-SR channel
        s2 = _local_var(g[:, :, c], win)  # y = GAN-SR channel
        d = (2 * (s1 + 1e-8) ** 0.5 * (s2 + 1e-8) ** 0.5 + C_CONST) / (s1 + s2 + C_CONST)
        ds.append(d)
    return np.mean(np.stack(ds, axis=0), axis=0)


def load_table() -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, bins, weight column) of the authors' table, parsed with the csv module."""
    with open(WEIGHTS_TSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [int(r["label"]) for r in rows] == list(range(150))
    names = [r["name"] for r in rows]
    bins = np.array([int(r["bin"]) for r in rows], dtype=np.int64)
    column = np.array([float(r["weight"]) for r in rows], dtype=np.float64)
    return names, bins, column


def oracle_weights(weights=None) -> np.ndarray:
    """float64 (150,): W = 20 / (20 - bin) from the authors' table, optionally overridden."""
    names, bins, _ = load_table()
    w = 20.0 / (20.0 - bins.astype(np.float64))
    if weights is None:
        return w
    if isinstance(weights, dict):
        w = w.copy()
        for name, value in weights.items():
            w[names.index(name)] = float(value)
        return w
    w = np.asarray(weights, dtype=np.float64)
    assert w.shape == (150,)
    return w


def crop_seg(seg: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Full-size label map -> valid region of a D map with `shape` (or as is if already that size)."""
    seg = np.asarray(seg)
    if seg.shape == tuple(shape):
        return seg
    assert seg.shape == (shape[0] + 2 * BORDER, shape[1] + 2 * BORDER), (seg.shape, shape)
    return seg[BORDER:-BORDER, BORDER:-BORDER]


def oracle_threshold(d: np.ndarray, seg=None, threshold: float = 0.7, weights=None) -> np.ndarray:
    """bool mask of d's shape: clip(D * W[label], 0, 1) < threshold (D' = D without seg)."""
    d = np.asarray(d, dtype=np.float64)
    if seg is not None:
        w = oracle_weights(weights)
        d = np.clip(d * w[crop_seg(seg, d.shape).astype(np.int64)], 0, 1)
    return d < threshold


def oracle_premask(gan, mse, seg=None, threshold: float = 0.7, window: str = "gaussian", weights=None) -> np.ndarray:
    """bool (H-10, W-10) pre-morphology mask."""
    return oracle_threshold(oracle_dmap(gan, mse, window), seg, threshold, weights)


def oracle_erode(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    k = np.ones((2 * radius + 1, 2 * radius + 1), dtype=np.uint8)
    return cv2.erode(np.asarray(mask, dtype=np.float64), k, iterations=1) > 0


def oracle_dilate(mask: np.ndarray, radius: int = 6) -> np.ndarray:
    k = np.ones((2 * radius + 1, 2 * radius + 1), dtype=np.uint8)
    return cv2.dilate(np.asarray(mask, dtype=np.float64), k, iterations=1) > 0


def oracle_fill_holes(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_fill_holes(np.asarray(mask, dtype=bool), structure=np.ones((3, 3)))


def oracle_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label image int32, areas of components 1..n) with 8-connectivity."""
    img = (np.asarray(mask, dtype=np.float64) * 255).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(img, connectivity=8)
    return labels, stats[1:n, cv2.CC_STAT_AREA].astype(np.int64)


def oracle_filter_components(mask: np.ndarray, area_threshold: int = 4000) -> np.ndarray:
    labels, areas = oracle_components(mask)
    keep = np.concatenate([[False], areas > area_threshold])
    return keep[labels]


def oracle_postprocess_steps(mask: np.ndarray) -> np.ndarray:
    """Erode -> dilate x3 -> fill holes exactly as the authors' script; bool, before filtering."""
    m = np.asarray(mask, dtype=np.float64)
    kernel = np.ones((5, 5), dtype=np.uint8)
    erosion = cv2.erode(m, kernel, iterations=1)
    dilation = cv2.dilate(erosion, kernel, iterations=3)
    return ndimage.binary_fill_holes(dilation, structure=np.ones((3, 3)))


def oracle_postprocess(mask: np.ndarray, area_threshold: int = 4000) -> np.ndarray:
    """bool mask of the same (h, w): the authors' morphology + component filter."""
    return oracle_filter_components(oracle_postprocess_steps(mask), area_threshold)


def oracle_detect(gan, mse, seg=None, threshold: float = 0.7, area_threshold: int = 4000,
                  window: str = "gaussian", weights=None) -> np.ndarray:
    """Full H x W bool mask, 5-px frame False, interior = authors' pipeline."""
    g = _as_hwc(gan)
    h, w = g.shape[:2]
    pre = oracle_premask(gan, mse, seg, threshold, window, weights)
    out = np.zeros((h, w), dtype=bool)
    out[BORDER:-BORDER, BORDER:-BORDER] = oracle_postprocess(pre, area_threshold)
    return out


def oracle_component_areas(gan, mse, seg=None, threshold: float = 0.7, window: str = "gaussian",
                           weights=None) -> np.ndarray:
    """Areas of the 8-connected components before the area filter (to check test data covers
    both kept and dropped regions)."""
    pre = oracle_premask(gan, mse, seg, threshold, window, weights)
    return oracle_components(oracle_postprocess_steps(pre))[1]


def mask_diff(got: np.ndarray, expected: np.ndarray) -> str:
    """Human-readable summary of where two bool masks differ (for assertion messages)."""
    got = np.asarray(got, dtype=bool)
    expected = np.asarray(expected, dtype=bool)
    if got.shape != expected.shape:
        return f"shape {got.shape} != expected {expected.shape}"
    diff = got != expected
    n = int(diff.sum())
    if n == 0:
        return "identical"
    idx = np.argwhere(diff)
    return (f"{n} of {diff.size} pixels differ ({int((got & ~expected).sum())} extra, "
            f"{int((~got & expected).sum())} missing); first at {tuple(int(i) for i in idx[0])}, "
            f"bbox {idx.min(0).tolist()}..{idx.max(0).tolist()}; got {int(got.sum())} set, "
            f"expected {int(expected.sum())}")
