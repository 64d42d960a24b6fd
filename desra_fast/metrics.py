"""Detection metrics of the DeSRA paper (docs/spec.md §4), as the authors' released scripts compute them.

The released scripts (``metrics/calc_iou.py``, ``calc_precision.py``, ``calc_recall.py``) fix
details the paper leaves open; this module follows them:

- Masks are read with ``cv2.imread(path, IMREAD_GRAYSCALE)``.
- The ground truth (GT) is cropped by 5 px on every side to the valid region the detector
  covers. The authors' predictions are already (H-10)x(W-10); desra-fast writes full-size masks
  whose 5-px frame is 0, so a prediction of the GT's own size is cropped the same way.
- Two binarisations, exactly as the scripts: a pixel *counts* in an intersection or union when
  its value is 255 (the scripts compute ``int32(mask / 255)``), while 8-connected *regions* are
  labelled on the non-zero pixels (``cv2.connectedComponentsWithStats``). For 0/255 masks
  both are the same.
- IoU: per image ``|P & G| / |P | G|``, then the plain mean over images. An image where both
  masks are empty has an undefined IoU (0/0 -> NaN in the scripts) and makes the mean NaN too.
- Precision: over the whole dataset, the share of predicted regions whose overlap with GT divided
  by the region's area is >= p. Recall: the share of GT regions whose overlap with the
  prediction divided by the GT region's area is >= p. No region at all -> NaN (the scripts
  divide by zero).

The paper's fine-tuning metrics (no released script; paper section 4.3) compare the detections
on the outputs of the model before (B) and after (A) fine-tuning:

- removal rate: share of the regions of B with no detected pixel in A (A & B = 0);
- addition rate: share of images where A covers area outside B (|A | B| > |B|).

``desra-fast evaluate-finetune`` (:func:`finetune_figures`, :func:`pool_finetune_figures`)
counts *new regions* instead (regions of A with no pixel of B), so that a region that only grew
is not an addition, and adds what happened outside both masks: PSNR after vs before, texture
kept (7x7 local standard deviation) and PSNR of each GAN-SR vs MSE-SR.

Region counts use connected-component statistics and one ``bincount`` per image instead of the
scripts' per-region full-image loop, so evaluation is O(pixels) per image.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .imageio import list_images, read_mask

#: Width of the frame the detector cannot see (half the 11x11 window).
BORDER = 5


def _full(mask: np.ndarray) -> np.ndarray:
    """Pixels that count in intersections/unions: value 255 (uint8) or True (bool)."""
    if mask.dtype == bool:
        return mask
    return mask == 255


def _regions(mask: np.ndarray) -> Tuple[int, np.ndarray, np.ndarray]:
    """8-connected regions of the non-zero pixels: (count incl. background, labels, areas)."""
    src = mask.astype(np.uint8) if mask.dtype == bool else (mask != 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(src, connectivity=8)
    return n, labels, stats[:, cv2.CC_STAT_AREA].astype(np.int64)


def crop_gt(gt: np.ndarray) -> np.ndarray:
    """GT (H, W) -> its valid region (H-10, W-10), as the scripts crop it."""
    h, w = gt.shape[:2]
    return gt[BORDER:h - BORDER, BORDER:w - BORDER]


def align_pred(pred: np.ndarray, gt_valid_shape: Tuple[int, int]) -> np.ndarray:
    """Bring a prediction to the GT's valid-region shape.

    ``pred`` may already be (H-10, W-10) (authors' layout) or full-size (H, W) (desra-fast
    layout, frame is 0), in which case it is cropped by 5 px. Other shapes raise ValueError.
    """
    gh, gw = gt_valid_shape
    if pred.shape == (gh, gw):
        return pred
    if pred.shape == (gh + 2 * BORDER, gw + 2 * BORDER):
        return crop_gt(pred)
    raise ValueError(
        f"prediction shape {pred.shape} fits neither the GT's valid region {(gh, gw)} "
        f"nor its full size {(gh + 2 * BORDER, gw + 2 * BORDER)}"
    )


def _check_mask(name: str, mask: np.ndarray) -> None:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D numpy array (H, W), got {getattr(mask, 'shape', type(mask))}")
    if mask.dtype not in (np.uint8, bool):
        raise TypeError(f"{name} must be uint8 (0/255) or bool, got {mask.dtype}")


def _prepare(pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    _check_mask("pred", pred)
    _check_mask("gt", gt)
    g = crop_gt(gt)
    return align_pred(pred, g.shape), g


def image_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of one image. pred: (H-10, W-10) or (H, W); gt: (H, W); uint8 0/255 or bool.

    Returns NaN when both masks are empty (as the scripts' 0/0)."""
    return _iou_aligned(*_prepare(pred, gt))


def region_hits(regions_of: np.ndarray, other: np.ndarray, p: float) -> Tuple[int, int]:
    """(number of regions of ``regions_of`` whose overlap with ``other`` / own area >= p, region count).

    Both masks of the same shape; regions are 8-connected non-zero pixels, overlap counts the
    255 (True) pixels of ``other``."""
    n, labels, areas = _regions(regions_of)
    if n <= 1:
        return 0, 0
    overlap = np.bincount(labels[_full(other)], minlength=n)
    ratio = overlap[1:] / areas[1:]
    return int(np.count_nonzero(ratio >= p)), n - 1


def region_misses(regions_of: np.ndarray, other: np.ndarray) -> Tuple[int, int]:
    """(number of regions of ``regions_of`` with no 255 (True) pixel of ``other``, region count)."""
    n, labels, _ = _regions(regions_of)
    if n <= 1:
        return 0, 0
    overlap = np.bincount(labels[_full(other)], minlength=n)
    return int(np.count_nonzero(overlap[1:] == 0)), n - 1


@dataclass
class DetectionScores:
    """Dataset scores. ``iou`` is the mean of ``per_image_iou``; NaN marks an undefined value."""

    iou: float
    precision: float
    recall: float
    images: int
    per_image_iou: Dict[str, float] = field(default_factory=dict)
    detected_regions: int = 0
    correct_detected_regions: int = 0
    gt_regions: int = 0
    found_gt_regions: int = 0
    unmatched_pred: List[str] = field(default_factory=list)
    unmatched_gt: List[str] = field(default_factory=list)
    errors: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> Dict[str, object]:
        """The headline numbers: iou, precision, recall, images (NaN -> None for JSON)."""
        return {"iou": _none_if_nan(self.iou), "precision": _none_if_nan(self.precision),
                "recall": _none_if_nan(self.recall), "images": self.images}


@dataclass
class ChangeScores:
    """Before/after fine-tuning comparison; NaN marks an undefined rate."""

    removal_rate: float
    addition_rate: float
    images: int
    regions_before: int = 0
    removed_regions: int = 0
    images_with_addition: int = 0
    unmatched_before: List[str] = field(default_factory=list)
    unmatched_after: List[str] = field(default_factory=list)
    errors: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> Dict[str, object]:
        return {"removal_rate": _none_if_nan(self.removal_rate),
                "addition_rate": _none_if_nan(self.addition_rate), "images": self.images}


def _none_if_nan(x: float) -> Optional[float]:
    return None if isinstance(x, float) and math.isnan(x) else x


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def detection_scores(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], p: float = 0.5,
                     names: Optional[Sequence[str]] = None) -> DetectionScores:
    """IoU (mean over images), precision and recall at overlap ratio ``p`` over a dataset.

    preds[i]: (H-10, W-10) or (H, W); gts[i]: (H, W); uint8 (0/255 as read from PNG) or bool.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} GT masks")
    _check_p(p)
    names = list(names) if names is not None else [str(i) for i in range(len(preds))]
    acc = _DetectionAccumulator(p)
    for name, pred, gt in zip(names, preds, gts):
        acc.add(name, pred, gt)
    return acc.result()


def change_scores(befores: Sequence[np.ndarray], afters: Sequence[np.ndarray],
                  names: Optional[Sequence[str]] = None) -> ChangeScores:
    """Removal rate and addition rate between detections before and after fine-tuning.

    befores[i], afters[i]: masks of one image, same shape (or one full-size and the other its
    (H-10, W-10) valid region), uint8 0/255 or bool.
    """
    if len(befores) != len(afters):
        raise ValueError(f"{len(befores)} 'before' masks but {len(afters)} 'after' masks")
    names = list(names) if names is not None else [str(i) for i in range(len(befores))]
    acc = _ChangeAccumulator()
    for name, b, a in zip(names, befores, afters):
        acc.add(name, b, a)
    return acc.result()


def _check_p(p: float) -> None:
    if not (isinstance(p, (int, float)) and 0.0 <= float(p) <= 1.0):
        raise ValueError(f"overlap ratio p must be in [0, 1], got {p!r}")


class _DetectionAccumulator:
    def __init__(self, p: float):
        self.p = float(p)
        self.ious: Dict[str, float] = {}
        self.det = self.det_hit = self.gt = self.gt_hit = 0

    def add(self, name: str, pred: np.ndarray, gt: np.ndarray) -> None:
        pr, g = _prepare(pred, gt)
        self.ious[name] = _iou_aligned(pr, g)
        hit, n = region_hits(pr, g, self.p)
        self.det_hit += hit
        self.det += n
        hit, n = region_hits(g, pr, self.p)
        self.gt_hit += hit
        self.gt += n

    def result(self) -> DetectionScores:
        vals = list(self.ious.values())
        mean = math.fsum(vals) / len(vals) if vals else math.nan
        return DetectionScores(
            iou=mean, precision=_ratio(self.det_hit, self.det), recall=_ratio(self.gt_hit, self.gt),
            images=len(vals), per_image_iou=dict(self.ious), detected_regions=self.det,
            correct_detected_regions=self.det_hit, gt_regions=self.gt, found_gt_regions=self.gt_hit)


def _iou_aligned(p: np.ndarray, g: np.ndarray) -> float:
    p, g = _full(p), _full(g)
    union = int(np.count_nonzero(p | g))
    return int(np.count_nonzero(p & g)) / union if union else math.nan


class _ChangeAccumulator:
    def __init__(self) -> None:
        self.images = self.added = self.regions = self.removed = 0

    def add(self, name: str, before: np.ndarray, after: np.ndarray) -> None:
        _check_mask("before", before)
        _check_mask("after", after)
        if before.shape != after.shape:
            if before.shape[0] > after.shape[0]:
                before = align_pred(before, after.shape)
            else:
                after = align_pred(after, before.shape)
        removed, n = region_misses(before, after)
        self.removed += removed
        self.regions += n
        # |A | B| > |B|  <=>  A has a pixel outside B.
        self.added += bool(np.any(_full(after) & ~_full(before)))
        self.images += 1

    def result(self) -> ChangeScores:
        return ChangeScores(removal_rate=_ratio(self.removed, self.regions),
                            addition_rate=_ratio(self.added, self.images), images=self.images,
                            regions_before=self.regions, removed_regions=self.removed,
                            images_with_addition=self.added)


def _pair_folders(a_dir: str, b_dir: str, exclude: Sequence[os.PathLike] = ()
                  ) -> Tuple[List[Tuple[str, str, str]], List[str], List[str], Dict[str, str]]:
    """Pair mask files of two folders by relative path without extension (folders in
    ``exclude`` not searched).

    Returns ([(key, a_rel, b_rel)], keys only in a, keys only in b, {key: ambiguity error})."""
    a, b = list_images(a_dir, exclude), list_images(b_dir, exclude)
    pairs, errors = [], {}
    for key in sorted(a.keys() & b.keys()):
        if len(a[key]) > 1 or len(b[key]) > 1:
            errors[key] = f"ambiguous: several files named {key}.*: {sorted(a[key] + b[key])}"
            continue
        pairs.append((key, a[key][0], b[key][0]))
    return pairs, sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys()), errors


def evaluate_folders(pred_dir: os.PathLike, gt_dir: os.PathLike, p: float = 0.5, *,
                     exclude: Sequence[os.PathLike] = ()) -> DetectionScores:
    """IoU / precision / recall between the masks of two folders (paired by relative path;
    folders in ``exclude``, e.g. the overlay pictures of a detect output, not searched).

    Predictions without a GT file are skipped, as in the authors' IoU script, and listed in
    ``unmatched_pred`` (GT files without a prediction in ``unmatched_gt``). Unreadable files and
    shape mismatches are listed in ``errors`` and left out of the scores.
    """
    _check_p(p)
    pairs, only_pred, only_gt, errors = _pair_folders(os.fspath(pred_dir), os.fspath(gt_dir), exclude)
    acc = _DetectionAccumulator(p)
    for key, pred_rel, gt_rel in pairs:
        try:
            pred = read_mask(os.path.join(pred_dir, pred_rel))
            gt = read_mask(os.path.join(gt_dir, gt_rel))
            acc.add(key, pred, gt)
        except ValueError as exc:
            errors[key] = str(exc)
    out = acc.result()
    out.unmatched_pred, out.unmatched_gt, out.errors = only_pred, only_gt, errors
    return out


def evaluate_change_folders(before_dir: os.PathLike, after_dir: os.PathLike, *,
                            reference_is_gt: bool = False, exclude: Sequence[os.PathLike] = ()) -> ChangeScores:
    """Removal and addition rate between the masks of two folders (paired by relative path).

    ``before_dir`` holds the reference regions B: the detections before fine-tuning, or with
    ``reference_is_gt`` human-labelled GT masks (cropped by 5 px to the valid region, as for IoU);
    ``after_dir`` the detections A after fine-tuning. Folders in ``exclude`` are not searched."""
    pairs, only_b, only_a, errors = _pair_folders(os.fspath(before_dir), os.fspath(after_dir), exclude)
    acc = _ChangeAccumulator()
    for key, b_rel, a_rel in pairs:
        try:
            before = read_mask(os.path.join(before_dir, b_rel))
            after = read_mask(os.path.join(after_dir, a_rel))
            if reference_is_gt:
                before = crop_gt(before)
                _check_mask("after", after)
                after = align_pred(after, before.shape)
            acc.add(key, before, after)
        except ValueError as exc:
            errors[key] = str(exc)
    out = acc.result()
    out.unmatched_before, out.unmatched_after, out.errors = only_b, only_a, errors
    return out


# ---------------------------------------------------------------------------------------------
# Fine-tune evaluation (``desra-fast evaluate-finetune``): what the fine-tune removed, what it
# added, and what it did to everything else. Every figure is computed from 8-bit images and
# boolean masks, in integers or float64, so that the numbers recomputed from the saved PNGs are
# the numbers computed in memory (a resumed evaluation reports the same bytes).

#: Side of the window of the local standard deviation behind ``texture_kept``.
TEXTURE_WINDOW = 7

#: ITU-R BT.601 luma weights (R, G, B) of the grey image ``texture_kept`` measures.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


def grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float64 grey, 0.299 R + 0.587 G + 0.114 B (0..255, not rounded)."""
    if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {getattr(rgb, 'shape', type(rgb))} "
                         f"{getattr(rgb, 'dtype', '')}")
    x = rgb.astype(np.float64)
    return x[..., 0] * GREY_WEIGHTS[0] + x[..., 1] * GREY_WEIGHTS[1] + x[..., 2] * GREY_WEIGHTS[2]


def _window_sums(x: np.ndarray, size: int) -> np.ndarray:
    """Sums of every ``size`` x ``size`` window lying inside ``x`` (H, W) float64 ->
    (H-size+1, W-size+1), window anchored at its top-left pixel."""
    # Shifted sums, not an integral image: the rounding error stays relative to the window's own
    # values (an integral image of a large image loses ~1e-4 absolute, a visible std on flat areas).
    h, w = x.shape[0] - size + 1, x.shape[1] - size + 1
    rows = x[0:h].copy()
    for i in range(1, size):
        rows += x[i:i + h]
    out = rows[:, 0:w].copy()
    for j in range(1, size):
        out += rows[:, j:j + w]
    return out


def local_std(g: np.ndarray, size: int = TEXTURE_WINDOW) -> np.ndarray:
    """Population standard deviation of every ``size`` x ``size`` window of a grey image.

    Args:
        g: (H, W) float64 grey image (:func:`grey`), H and W >= ``size``.
        size: window side (odd, >= 1).

    Returns:
        (H-size+1, W-size+1) float64 >= 0; element [y, x] is the window centred on pixel
        (y + size//2, x + size//2). Windows that would cross the image border are left out.
    """
    g = np.asarray(g, np.float64)
    if g.ndim != 2 or g.shape[0] < size or g.shape[1] < size:
        raise ValueError(f"local_std: need an (H, W) image of at least {size}x{size}, got {g.shape}")
    # Centring on the image mean keeps E[x^2] - E[x]^2 away from cancellation on bright images.
    d = g - g.mean()
    n = float(size * size)
    mean = _window_sums(d, size) / n
    var = _window_sums(d * d, size) / n - mean * mean
    return np.sqrt(np.maximum(var, 0.0))


def sse_outside(a: np.ndarray, b: np.ndarray, outside: np.ndarray) -> Tuple[int, int]:
    """(sum of squared differences, number of values) of two images over the pixels where
    ``outside`` is True. a, b: (H, W, 3) uint8; outside: (H, W) bool. Exact integers."""
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"sse_outside: two uint8 images of one shape expected, got {a.shape} {a.dtype} "
                         f"and {b.shape} {b.dtype}")
    d = a[outside].astype(np.int64) - b[outside].astype(np.int64)
    return int(np.sum(d * d)), int(d.size)


def psnr_from_sse(sse: float, values: int) -> float:
    """PSNR in dB for an 8-bit peak: 10 log10(255^2 * values / sse); NaN without values, inf when
    sse is 0."""
    if values <= 0:
        return math.nan
    if sse == 0:
        return math.inf
    return 10.0 * math.log10(255.0 ** 2 * values / sse)


def finetune_figures(sr_before: np.ndarray, sr_after: np.ndarray, sr_mse: np.ndarray,
                     mask_before: np.ndarray, mask_after: np.ndarray) -> Dict[str, object]:
    """The evaluation figures of one image, and the sums :func:`pool_finetune_figures` pools.

    Args:
        sr_before, sr_after, sr_mse: (H, W, 3) uint8 RGB: GAN-SR of the model before and after
            fine-tuning, and MSE-SR.
        mask_before, mask_after: (H, W) bool (or uint8 0/255): detections on the two GAN-SR.

    Returns:
        ``{"figures": {...}, "sums": {...}}``. figures: ``area_before``, ``area_after``
        (detected share of the image, 0..1), ``regions_before`` (8-connected regions of the
        before mask), ``regions_removed`` (of them, those with no pixel of the after mask),
        ``new_regions`` (regions of the after mask with no pixel of the before mask),
        ``psnr_after_vs_before_outside``, ``psnr_gan_vs_mse_outside_before``,
        ``psnr_gan_vs_mse_outside_after`` (dB over the pixels outside both masks, inf when
        equal, NaN when no pixel is outside), ``texture_kept`` (mean 7x7 local standard
        deviation of the after image's grey over the mean of the before image's, over the
        windows lying wholly outside both masks; NaN when there is none or the before image
        is flat there). sums: the integer / float64 totals behind them.
    """
    for name, img in (("sr_before", sr_before), ("sr_after", sr_after), ("sr_mse", sr_mse)):
        if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
            raise ValueError(f"{name} must be an (H, W, 3) uint8 image, got {getattr(img, 'shape', type(img))} "
                             f"{getattr(img, 'dtype', '')}")
        if img.shape != sr_before.shape:
            raise ValueError(f"{name} is {img.shape[:2]}, sr_before {sr_before.shape[:2]}: "
                             f"the SR images differ in size")
    _check_mask("mask_before", mask_before)
    _check_mask("mask_after", mask_after)
    for name, m in (("mask_before", mask_before), ("mask_after", mask_after)):
        if m.shape != sr_before.shape[:2]:
            raise ValueError(f"{name} is {m.shape}, the SR images {sr_before.shape[:2]}")
    b, a = _full(mask_before), _full(mask_after)
    removed, regions = region_misses(b, a)
    new, _ = region_misses(a, b)
    outside = ~(b | a)
    s_ab, n_out = sse_outside(sr_after, sr_before, outside)
    s_bm, _ = sse_outside(sr_before, sr_mse, outside)
    s_am, _ = sse_outside(sr_after, sr_mse, outside)
    k = TEXTURE_WINDOW
    if outside.shape[0] >= k and outside.shape[1] >= k:
        clean = _window_sums((~outside).astype(np.float64), k) == 0
        t_b = float(np.sum(local_std(grey(sr_before), k)[clean]))
        t_a = float(np.sum(local_std(grey(sr_after), k)[clean]))
        windows = int(np.count_nonzero(clean))
    else:
        t_b = t_a = 0.0
        windows = 0
    pixels = int(b.size)
    sums = {"pixels": pixels, "pixels_before": int(np.count_nonzero(b)), "pixels_after": int(np.count_nonzero(a)),
            "outside_values": n_out, "sse_after_before": s_ab, "sse_before_mse": s_bm, "sse_after_mse": s_am,
            "texture_windows": windows, "texture_before": t_b, "texture_after": t_a}
    figures = {"area_before": sums["pixels_before"] / pixels, "area_after": sums["pixels_after"] / pixels,
               "regions_before": regions, "regions_removed": removed, "new_regions": new,
               "psnr_after_vs_before_outside": psnr_from_sse(s_ab, n_out),
               "texture_kept": t_a / t_b if windows and t_b > 0 else math.nan,
               "psnr_gan_vs_mse_outside_before": psnr_from_sse(s_bm, n_out),
               "psnr_gan_vs_mse_outside_after": psnr_from_sse(s_am, n_out)}
    return {"figures": figures, "sums": sums}


def pool_finetune_figures(per_image: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """Dataset figures from the ``{"figures", "sums"}`` of :func:`finetune_figures`, pooled over
    pixels (not averaged over images), so that a large image weighs by its size:

    - ``area_before`` / ``area_after``: detected pixels / all pixels; ``area_change`` =
      area_after / area_before - 1 (-0.8 is -80 %; NaN when nothing was detected before);
    - ``regions_before``, ``removed_regions``, ``removal_rate`` = removed / regions (NaN
      without regions); ``images_with_new_regions``, ``addition_rate`` = their share of images;
    - PSNRs from the summed squared errors over all outside pixels; ``texture_kept`` = summed
      local standard deviations after / before over all clean windows.
    """
    n = len(per_image)
    tot: Dict[str, float] = {}
    for rec in per_image:
        for k, v in rec["sums"].items():
            tot.setdefault(k, []).append(v)
    s = {k: (math.fsum(v) if isinstance(v[0], float) else sum(v)) for k, v in tot.items()}
    regions = sum(int(r["figures"]["regions_before"]) for r in per_image)
    removed = sum(int(r["figures"]["regions_removed"]) for r in per_image)
    added = sum(1 for r in per_image if r["figures"]["new_regions"])
    area_b = s["pixels_before"] / s["pixels"] if n else math.nan
    area_a = s["pixels_after"] / s["pixels"] if n else math.nan
    out_values = s.get("outside_values", 0)
    return {
        "images": n, "area_before": area_b, "area_after": area_a,
        "area_change": area_a / area_b - 1.0 if n and area_b > 0 else math.nan,
        "regions_before": regions, "removed_regions": removed, "removal_rate": _ratio(removed, regions),
        "images_with_new_regions": added, "addition_rate": _ratio(added, n),
        "psnr_after_vs_before_outside": psnr_from_sse(s.get("sse_after_before", 0), out_values),
        "texture_kept": (s["texture_after"] / s["texture_before"]
                         if n and s["texture_windows"] and s["texture_before"] > 0 else math.nan),
        "psnr_gan_vs_mse_outside_before": psnr_from_sse(s.get("sse_before_mse", 0), out_values),
        "psnr_gan_vs_mse_outside_after": psnr_from_sse(s.get("sse_after_mse", 0), out_values),
    }
