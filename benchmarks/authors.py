"""The authors' DeSRA detection pipeline as released, re-written for benchmarking.

Behaviour follows TencentARC/DeSRA ``scripts/distance.py`` (``calc_artifact_map``) and
``scripts/artifact_detection.py`` (steps 2-4 and the final area filter), step for step and with
the same data types, so that its run time is what a user of the released scripts pays:

- D map: per channel, float64 ``cv2.filter2D`` with the 11x11 window
  ``np.outer(getGaussianKernel(11, 1.5))`` on ``img`` and ``img**2``, cropped ``[5:-5, 5:-5]``,
  their contrast formula, mean over channels.
- semantic weights: a Python loop over ``set(list(seg.flatten()))``, one boolean-mask assignment
  per label; ``np.clip``; ``contrast < threshold`` into a float64 0/1 image.
- ``cv2.erode`` (5x5, once) / ``cv2.dilate`` (5x5, three times) on that float64 image,
  ``scipy.ndimage.binary_fill_holes(structure=ones((3, 3)))``.
- ``cv2.connectedComponentsWithStats`` and their per-region loop over ``np.unique(labels)`` with
  ``image_filtered[labels == i] = 255`` for every component with area > ``area_threshold``.

Left out (I/O, not computation): the released script writes the filled mask as a PNG and reads it
back before labelling; here ``(dst * 255).astype(uint8)`` stands for that round trip (same values).
Also left out: the segmentation network itself (the label map is an input here) and the other
intermediate PNG writes. Everything works on the (H-10) x (W-10) valid region, as released.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

WINDOW_SIZE = 11
CONSTANT = (0.03 * 255) ** 2


def _single_channel_map(img: np.ndarray, img2: np.ndarray, window_size: int = WINDOW_SIZE) -> np.ndarray:
    """Eq. 7 of the paper as released, for one float64 channel pair (valid region)."""
    kernel = cv2.getGaussianKernel(window_size, 1.5)
    window = np.outer(kernel, kernel.transpose())
    r = window_size // 2
    mu1 = cv2.filter2D(img, -1, window)[r:-r, r:-r]
    mu2 = cv2.filter2D(img2, -1, window)[r:-r, r:-r]
    mu1_sq = mu1 ** 2
    mu2_sq = mu2 ** 2
    sigma1_sq = cv2.filter2D(img ** 2, -1, window)[r:-r, r:-r] - mu1_sq
    sigma2_sq = cv2.filter2D(img2 ** 2, -1, window)[r:-r, r:-r] - mu2_sq
    return (2 * (sigma1_sq + 1e-8) ** 0.5 * (sigma2_sq + 1e-8) ** 0.5 + CONSTANT) / (
        sigma1_sq + sigma2_sq + CONSTANT)


def d_map(gan: np.ndarray, mse: np.ndarray) -> np.ndarray:
    """``calc_artifact_map(mse, gan, crop_border=0)``: float64 (H-10, W-10) D map.

    gan, mse: (H, W, 3) uint8 in [0, 255].
    """
    img = mse.astype(np.float64)
    img2 = gan.astype(np.float64)
    maps = [_single_channel_map(img[..., i], img2[..., i]) for i in range(img.shape[2])]
    return np.mean(np.stack(maps, axis=0), axis=0)


def premask(artifact_map: np.ndarray, seg: np.ndarray | None, weights: np.ndarray,
            threshold: float = 0.7) -> np.ndarray:
    """Semantic-aware adjustment + threshold: float64 0/1 image of shape (H-10, W-10).

    seg: (H, W) uint8 ADE20K labels or None (then W = 1, i.e. the step is skipped).
    weights: float64 (150,) table, weights[label].
    """
    if seg is not None:
        labels = set(list(seg.flatten()))            # as released: a Python set over all pixels
        h, w = seg.shape
        r = WINDOW_SIZE // 2
        seg = seg[r:h - r, r:w - r]
        semantic_threshold_mask = np.ones_like(seg).astype(np.float64)
        for label in labels:
            semantic_threshold_mask[seg == label] = weights[label]
        contrast_seg = artifact_map * semantic_threshold_mask
    else:
        contrast_seg = artifact_map
    contrast_seg = np.clip(contrast_seg, 0, 1)
    contrast_seg_mask = np.zeros(contrast_seg.shape)
    contrast_seg_mask[contrast_seg < threshold] = 1
    return contrast_seg_mask


def erode(mask: np.ndarray) -> np.ndarray:
    return cv2.erode(mask, np.ones((5, 5), np.uint8), iterations=1)


def dilate(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask, np.ones((5, 5), np.uint8), iterations=3)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Returns the uint8 0/255 image that the released script writes as PNG and reads back."""
    dst = ndimage.binary_fill_holes(mask, structure=np.ones((3, 3))).astype(int)
    return (dst * 255).astype(np.uint8)                 # stands for the PNG write + read (I/O left out)


def filter_components(dst: np.ndarray, area_threshold: int = 4000) -> np.ndarray:
    """Their per-region loop: uint8 0/255 image with the components of area > area_threshold."""
    num_labels, labels, stats, centroids = cv2.connectedComponentsWithStats(dst, connectivity=8)
    image_filtered = np.zeros_like(dst)
    for (i, label) in enumerate(np.unique(labels)):
        if label == 0:
            continue
        if stats[i][-1] > area_threshold:
            image_filtered[labels == i] = 255
    return image_filtered


def postprocess(contrast_seg_mask: np.ndarray, area_threshold: int = 4000) -> np.ndarray:
    erosion = erode(contrast_seg_mask)
    dilation = dilate(erosion)
    dst = fill_holes(dilation)
    return filter_components(dst, area_threshold)


def detect(gan: np.ndarray, mse: np.ndarray, seg: np.ndarray | None, weights: np.ndarray,
           threshold: float = 0.7, area_threshold: int = 4000) -> np.ndarray:
    """Whole released pipeline (minus I/O and the segmentation network).

    Returns a bool (H-10, W-10) mask: True = artifact (the released script's 255).
    """
    artifact_map = d_map(gan, mse)
    m = premask(artifact_map, seg, weights, threshold)
    return postprocess(m, area_threshold) > 0
