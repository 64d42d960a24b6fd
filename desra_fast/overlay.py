"""Pictures for people: the GAN-SR image with detected regions tinted and outlined, beside MSE-SR.

Layout (one RGB uint8 picture, width 2*W + gap):

    [ GAN-SR, artifact regions tinted red and outlined | gap | MSE-SR, same outlines ]

The same outline on the MSE-SR side lets the eye compare the region's texture in both outputs,
which is what the detector measures.
"""
from __future__ import annotations

import cv2
import numpy as np

TINT_RGB = (255, 0, 64)
OUTLINE_RGB = (255, 255, 0)
GAP = 8
GAP_RGB = (255, 255, 255)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or uint16 -> uint8 (16-bit values scaled by 255/65535, rounded)."""
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype == np.uint16:
        return np.round(rgb.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    raise TypeError(f"expected uint8 or uint16 image, got {rgb.dtype}")


def make_overlay(gan: np.ndarray, mse: np.ndarray, mask: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Build the side-by-side picture.

    gan, mse: (H, W, 3) uint8/uint16 RGB; mask: (H, W) bool (True = artifact).
    Returns (H, 2*W + GAP, 3) uint8 RGB. ``alpha`` in [0, 1] is the tint strength.
    """
    if gan.shape != mse.shape or gan.ndim != 3 or gan.shape[2] != 3:
        raise ValueError(f"gan and mse must both be (H, W, 3), got {gan.shape} and {mse.shape}")
    if mask.shape != gan.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image size {gan.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    m = mask.astype(bool, copy=False)
    left = to_uint8(gan).copy()
    right = to_uint8(mse).copy()
    if m.any():
        tint = np.asarray(TINT_RGB, np.float32)
        left[m] = np.round(left[m] * (1.0 - alpha) + tint * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        # Outline thickness grows with image size so it stays visible on large pictures.
        thick = max(1, round(max(m.shape) / 400))
        cv2.drawContours(left, contours, -1, OUTLINE_RGB, thick)
        cv2.drawContours(right, contours, -1, OUTLINE_RGB, thick)
    _caption(left, "GAN-SR: detected artifacts" if m.any() else "GAN-SR: no artifact detected")
    _caption(right, "MSE-SR")
    h, w = m.shape
    out = np.empty((h, 2 * w + GAP, 3), np.uint8)
    out[:, :w] = left
    out[:, w:w + GAP] = GAP_RGB
    out[:, w + GAP:] = right
    return out


def _caption(img: np.ndarray, text: str) -> None:
    """Label a panel in its top-left corner (white on a dark box), scaled to the image width."""
    h, w = img.shape[:2]
    scale = min(1.0, w / 700)
    if scale < 0.25 or h < 24:  # too small to be readable: leave the picture clean
        return
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(2, round(6 * scale))
    x1, y1 = min(w, tw + 2 * pad), min(h, th + base + 2 * pad)
    img[:y1, :x1] = (img[:y1, :x1] * 0.35).astype(np.uint8)
    cv2.putText(img, text, (pad, pad + th), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
