"""A_k calibration (DeSRA paper Eq. 8): per-class weights ``W_k = 1 / A_k`` from a dataset.

``A_k`` is the ``percentile``-th percentile (85 in the paper) of the D map over all pixels of
ADE20K class k, measured on (GAN-SR, MSE-SR) pairs of a calibration set; the authors rounded it
to 20 bins (``W = 20 / (20 - bin)``) and released neither the code nor the data. Here:

- D is :func:`desra_fast.d_map` (float32, the valid region) and the label of a pixel is the
  label map cropped by 5 px, exactly as :func:`desra_fast.detect` pairs them.
- **Streaming, bounded memory**: one fixed histogram of D per class seen, 65,536 equal bins over
  [0, 1] (int64 counts: 512 KiB per class, at most 75 MiB for all 150), whatever the dataset size.
- ``exact=False`` (one pass): order statistics are read from the histogram (uniform within a
  bin), so A_k is within one bin width, ``1/65536 = 1.53e-5``, of ``numpy.percentile``.
  ``exact=True`` (two passes over the data, so ``pairs`` and the label maps must be iterable
  twice): the second pass keeps the D values of the one or two bins that hold the needed order
  statistics (as value/count pairs, at most the float32 values of two bins per class), so A_k
  equals ``numpy.percentile(D[class k], percentile)`` (linear method) up to float64 rounding.
- Rounding (``bins=20``): ``bin = clip(round(bins * (1 - A_k)), 0, bins - 1)``, ``W = bins /
  (bins - bin)``; ``bins=None``: ``W = 1 / max(A_k, 1/20)`` unrounded.
- Classes with fewer than ``min_pixels`` pixels (and classes never seen) keep the authors' table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np

from .api import HALO, d_map
from .weights import NUM_CLASSES, class_names, load_weights

HIST_BINS = 1 << 16
BIN_WIDTH = 1.0 / HIST_BINS


@dataclass
class Calibration:
    """Result of :func:`calibrate_weights`; ``np.asarray(cal)`` is the (150,) weights vector.

    Attributes:
        weights: float64 (150,) — calibrated where measured, the authors' table elsewhere.
        a: float64 (150,) — A_k, the percentile of D per class (NaN where not measured).
        pixels: int64 (150,) — pixels of each class over the dataset.
        bins: int64 (150,) — the rounded bin (``-1`` where the default table is kept or unrounded).
        calibrated: bool (150,) — which classes were measured (``pixels >= min_pixels``).
    """

    weights: np.ndarray
    a: np.ndarray
    pixels: np.ndarray
    bins: np.ndarray
    calibrated: np.ndarray
    percentile: float
    n_bins: Optional[int]
    exact: bool
    images: int
    meta: Dict[str, Any] = field(default_factory=dict)

    def __array__(self, dtype=None, copy=None):
        return self.weights.astype(dtype) if dtype is not None else self.weights.copy()

    def to_tsv(self, path) -> None:
        """Write the weights in the shipped table's format (``label name bin weight``)."""
        write_weights_tsv(path, self.weights, self.bins)


def _iterate(source):
    return source() if callable(source) and not hasattr(source, "segment") else iter(source)


def _labels_for(seg, gan, mse, segment_source: str, label_iter):
    if label_iter is None:
        return seg.segment(gan if segment_source == "gan" else mse)
    try:
        lab = next(label_iter)
    except StopIteration:
        raise ValueError("calibrate_weights: fewer label maps than pairs") from None
    return lab


def _stream(pairs, seg, segment_source: str, window: str, backend: str):
    """Yield (d (h, w) float32, labels (h, w) int) per image."""
    label_iter = None if hasattr(seg, "segment") else _iterate(seg)
    for n, pair in enumerate(_iterate(pairs)):
        try:
            gan, mse = pair
        except (TypeError, ValueError):
            raise TypeError(f"calibrate_weights: pair {n} is not a (gan, mse) tuple") from None
        d = d_map(gan, mse, window=window, backend=backend)
        if hasattr(d, "detach"):
            d = d.detach().cpu().numpy()
        lab = _labels_for(seg, gan, mse, segment_source, label_iter)
        if hasattr(lab, "detach"):
            lab = lab.detach().cpu().numpy()
        lab = np.asarray(lab)
        if lab.dtype.kind not in "iu":
            raise TypeError(f"calibrate_weights: label map {n} must hold integers, got {lab.dtype}")
        H, W = d.shape[0] + 2 * HALO, d.shape[1] + 2 * HALO
        if lab.shape != (H, W):
            raise ValueError(f"calibrate_weights: label map {n} has shape {lab.shape}, the images are {(H, W)}")
        lab = lab[HALO:H - HALO, HALO:W - HALO]
        if lab.size and (lab.min() < 0 or lab.max() >= NUM_CLASSES):
            raise ValueError(f"calibrate_weights: label map {n} has labels outside 0..149")
        if not np.all(np.isfinite(d)):
            raise ValueError(f"calibrate_weights: the D map of pair {n} is not finite")
        yield d, lab
    if label_iter is not None and next(label_iter, None) is not None:
        raise ValueError("calibrate_weights: more label maps than pairs")


def _bin_index(d: np.ndarray) -> np.ndarray:
    return np.minimum((np.clip(d, 0.0, 1.0) * HIST_BINS).astype(np.int64), HIST_BINS - 1)


def _accumulate(hist: Dict[int, np.ndarray], d: np.ndarray, lab: np.ndarray) -> None:
    present = np.unique(lab)
    lut = np.zeros(NUM_CLASSES, np.int64)
    lut[present] = np.arange(present.size)
    counts = np.bincount((lut[lab].ravel() * HIST_BINS + _bin_index(d).ravel()),
                         minlength=present.size * HIST_BINS).reshape(present.size, HIST_BINS)
    for j, k in enumerate(present.tolist()):
        if k in hist:
            hist[k] += counts[j]
        else:
            hist[k] = counts[j].copy()


def _ranks(n: int, q: float) -> Tuple[int, int, float]:
    """numpy's 'linear' percentile: ranks below/above the virtual index and the fraction."""
    pos = q / 100.0 * (n - 1)
    lo = int(np.floor(pos))
    return lo, min(lo + 1, n - 1), pos - lo


def _locate(cum: np.ndarray, r: int) -> Tuple[int, int]:
    """(bin holding the 0-based order statistic r, count of values in bins before it)."""
    b = int(np.searchsorted(cum, r, side="right"))
    return b, int(cum[b - 1]) if b > 0 else 0


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's _lerp: a + t (b - a), computed from b for t >= 0.5 (monotone, exact at t = 1)
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def calibrate_weights(
    pairs: Union[Iterable, Callable[[], Iterable]],
    seg,
    percentile: float = 85.0,
    bins: Optional[int] = 20,
    *,
    exact: bool = False,
    min_pixels: int = 1000,
    segment_source: str = "gan",
    window: str = "gaussian",
    backend: str = "auto",
    progress: Optional[Callable[[int], None]] = None,
) -> Calibration:
    """Measure A_k and the weights W_k = 1/A_k over a calibration set (paper Eq. 8).

    Args:
        pairs: iterable of (gan, mse) images as :func:`desra_fast.d_map` takes them (numpy HxWx3
            uint8... or torch), or a zero-argument callable returning a fresh iterable (needed
            for ``exact=True``, which reads the data twice, unless ``pairs`` is a list).
        seg: a :class:`desra_fast.models.Segmenter` (segments the ``segment_source`` image of
            each pair), or the label maps: an iterable (or callable) of (H, W) integer arrays
            0..149 aligned with ``pairs``.
        percentile: the percentile of D per class, 0..100 (paper: 85).
        bins: round A_k to this many bins as the authors did (20), or None for 1/A_k.
        exact: two passes giving numpy.percentile's value; one pass (default) is within 1.53e-5.
        min_pixels: classes with fewer pixels keep the authors' weight.
        segment_source: ``"gan"`` (default, released script) or ``"mse"``.
        window, backend: as in :func:`desra_fast.d_map`.
        progress: called with the number of images done after each image.

    Returns:
        :class:`Calibration` (``np.asarray(cal)`` or ``cal.weights``: float64 (150,), usable as
        ``detect(weights=...)``; ``cal.to_tsv(path)`` writes the shipped table's format).
    """
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be a number in [0, 100], got {percentile!r}")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 1):
        raise ValueError(f"bins must be a positive integer or None, got {bins!r}")
    if segment_source not in ("gan", "mse"):
        raise ValueError(f"segment_source must be 'gan' or 'mse', got {segment_source!r}")
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1:
        raise ValueError(f"min_pixels must be a positive integer, got {min_pixels!r}")
    if exact:
        for name, src in (("pairs", pairs), ("seg", seg)):
            if not (callable(src) or hasattr(src, "segment") or isinstance(src, (list, tuple))):
                raise TypeError(f"calibrate_weights(exact=True) reads the data twice: {name} must be a list or "
                                "a callable returning a fresh iterable, not a one-shot iterator")
    hist: Dict[int, np.ndarray] = {}
    images = 0
    for d, lab in _stream(pairs, seg, segment_source, window, backend):
        _accumulate(hist, d, lab)
        images += 1
        if progress is not None:
            progress(images)
    pixels = np.zeros(NUM_CLASSES, np.int64)
    for k, h in hist.items():
        pixels[k] = int(h.sum())
    measured = [k for k in sorted(hist) if pixels[k] >= min_pixels]
    # the order statistics each measured class needs: {class: (r0, r1, t, cum)}
    plan = {}
    for k in measured:
        cum = np.cumsum(hist[k])
        r0, r1, t = _ranks(int(pixels[k]), float(percentile))
        plan[k] = (r0, r1, t, cum)
    a = np.full(NUM_CLASSES, np.nan)
    if exact and measured:
        wanted = {k: sorted({_locate(p[3], p[0])[0], _locate(p[3], p[1])[0]}) for k, p in plan.items()}
        found: Dict[int, Dict[float, int]] = {k: {} for k in measured}
        for d, lab in _stream(pairs, seg, segment_source, window, backend):
            idx = _bin_index(d)
            for k in np.intersect1d(np.unique(lab), measured).tolist():
                sel = (lab == k) & np.isin(idx, wanted[k])
                vals, cnt = np.unique(d[sel], return_counts=True)
                bucket = found[k]
                for v, c in zip(vals.tolist(), cnt.tolist()):
                    bucket[v] = bucket.get(v, 0) + c
        for k, (r0, r1, t, cum) in plan.items():
            vals = sorted(found[k].items())
            v = []
            for r in (r0, r1):
                b, before = _locate(cum, r)
                # values of bin b in order; the (r - before)-th of them
                inbin = [(x, c) for x, c in vals if _bin_index(np.float32(x)) == b]
                need = r - before
                for x, c in inbin:
                    if need < c:
                        v.append(float(x))
                        break
                    need -= c
                else:
                    raise RuntimeError("calibrate_weights: the second pass saw other data than the first "
                                       "(pairs or label maps changed between passes)")
            a[k] = _lerp(v[0], v[1], t)
    else:
        for k, (r0, r1, t, cum) in plan.items():
            v = []
            for r in (r0, r1):
                b, before = _locate(cum, r)
                c = int(hist[k][b])
                v.append((b + (r - before + 0.5) / c) * BIN_WIDTH)
            a[k] = _lerp(v[0], v[1], t)
    weights = load_weights(None).copy()
    bin_of = np.full(NUM_CLASSES, -1, np.int64)
    calibrated = np.zeros(NUM_CLASSES, bool)
    for k in measured:
        calibrated[k] = True
        if bins is not None:
            b = int(np.clip(np.round(bins * (1.0 - a[k])), 0, bins - 1))
            bin_of[k] = b
            weights[k] = bins / (bins - b)
        else:
            weights[k] = 1.0 / max(a[k], 1.0 / 20.0)
    return Calibration(weights=weights, a=a, pixels=pixels, bins=bin_of, calibrated=calibrated,
                       percentile=float(percentile), n_bins=bins, exact=bool(exact), images=images,
                       meta={"min_pixels": min_pixels, "segment_source": segment_source, "window": window,
                             "hist_bins": HIST_BINS})


def write_weights_tsv(path, weights, bins=None) -> None:
    """Write per-class weights in the shipped table's format: ``label name bin weight``.

    ``bins``: the bin per label (``-1``: none). Where no bin is given, the nearest bin of the
    20-bin scale, ``round(20 - 20 / W)``, is written for reference; the ``weight`` column is the
    weight itself (what :func:`desra_fast.load_weights` reads for such a row).
    """
    from .imageio import write_bytes_atomic

    w = load_weights(np.asarray(weights, dtype=np.float64))
    names = class_names()
    lines = ["label\tname\tbin\tweight"]
    for k in range(NUM_CLASSES):
        b = int(bins[k]) if bins is not None and int(bins[k]) >= 0 else None
        if b is None:
            b = int(np.clip(np.round(20 - 20 / w[k]), 0, 19)) if w[k] > 0 else 0
        lines.append(f"{k}\t{names[k]}\t{b}\t{_fmt(w[k])}")
    write_bytes_atomic(os.fspath(path), ("\n".join(lines) + "\n").encode("utf-8"))


def _fmt(v: float) -> str:
    s = f"{v:.9f}".rstrip("0").rstrip(".")
    return s or "0"


__all__ = ["calibrate_weights", "Calibration", "write_weights_tsv", "HIST_BINS", "BIN_WIDTH"]
