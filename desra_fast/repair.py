"""Pseudo ground truth (DeSRA Eq. 10) and the instant inference-time repair built on it.

``pseudo_gt(gan, mse, mask) = M * mse + (1 - M) * gan``: inside the detected artifact regions
the smooth MSE-SR output replaces the GAN-SR output, everywhere else the GAN texture is kept.
It is the training target of the fine-tune (:mod:`desra_fast.train`), and on its own a repair
that needs no training: :func:`repair` detects the mask when none is given and can feather its
edge so no seam shows.

Shapes follow :mod:`desra_fast.api`: numpy images channels last ((H, W, C) or (N, H, W, C)),
torch tensors channels first ((C, H, W) or (N, C, H, W)); masks (H, W) or (N, H, W) (torch
also (N, 1, H, W)). The output has the input's kind, dtype, shape and device.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import is_tensor, prepare_pair

ArrayLike = Any  # numpy.ndarray | torch.Tensor


def pseudo_gt(gan: ArrayLike, mse: ArrayLike, mask: ArrayLike) -> ArrayLike:
    """DeSRA's pseudo ground truth ``M * mse + (1 - M) * gan`` (paper Eq. 10).

    Args:
        gan, mse: GAN-SR and MSE-SR outputs, same shape and dtype: numpy (H, W, C) or
            (N, H, W, C), torch (C, H, W) or (N, C, H, W); uint8 (0..255), uint16 (0..65535)
            or floating point (0..1).
        mask: M, (H, W) or (N, H, W) (torch also (N, 1, H, W); one (H, W) mask applies to the
            whole batch). bool or integer: non-zero = artifact (0/255 PNG masks work as read);
            floating point: a soft weight in [0, 1] (a feathered edge).

    Returns:
        the blend, same kind, shape, dtype and device as ``gan``. With a binary mask it is an
        exact per-pixel selection; with a soft mask integer outputs are rounded half up.
    """
    g4, m4, alpha, restore = _prepare(gan, mse, mask)
    return restore(_blend(g4, m4, alpha))


def repair(gan: ArrayLike, mse: ArrayLike, mask: ArrayLike = None, *, feather: int = 0,
           **detect_options) -> ArrayLike:
    """Remove GAN artifacts at inference time: replace the detected regions by the MSE-SR output.

    Args:
        gan, mse: as in :func:`pseudo_gt`.
        mask: the artifact mask, as in :func:`pseudo_gt`; None: computed by
            :func:`desra_fast.detect` (``detect_options`` such as ``threshold``,
            ``area_threshold``, ``seg``, ``backend`` are passed on).
        feather: width in pixels of a soft edge grown *outside* the mask (0: hard edge). The
            mask is dilated by ``feather`` (square) and box-blurred with a
            ``(2*feather+1)``-wide window, so the weight is exactly 1 on every masked pixel and
            falls to 0 within ``2*feather`` pixels of the region.

    Returns:
        the repaired image(s), same kind, shape, dtype and device as ``gan``.
    """
    if isinstance(feather, (bool, np.bool_)) or not isinstance(feather, (int, np.integer)) or feather < 0:
        raise ValueError(f"feather must be an integer >= 0, got {feather!r}")
    if mask is None:
        from .api import detect

        mask = detect(gan, mse, **detect_options)
    elif detect_options:
        raise TypeError(f"repair: detection options {sorted(detect_options)} given with an explicit mask")
    g4, m4, alpha, restore = _prepare(gan, mse, mask)
    if feather:
        soft = alpha.float() if is_tensor(alpha) else alpha.astype(np.float32)
        alpha = feather_mask(soft, int(feather))
    return restore(_blend(g4, m4, alpha))


def feather_mask(alpha: ArrayLike, feather: int) -> ArrayLike:
    """Soft edge of a mask: square dilation by ``feather`` then a (2*feather+1) box blur.

    alpha: numpy (N, H, W, 1) or torch (N, 1, H, W) float32 in [0, 1]. Borders replicate.
    Returns the same shape, float32, 1 wherever ``alpha`` was 1.
    """
    k = 2 * feather + 1
    if is_tensor(alpha):
        import torch
        import torch.nn.functional as F

        dil = F.max_pool2d(alpha, k, stride=1, padding=feather)  # -inf padding: nothing grows in
        padded = F.pad(dil, (feather,) * 4, mode="replicate")
        # max with the mask: the blur's float sum may round a full window to 1 - 1 ulp
        return torch.maximum(F.avg_pool2d(padded, k, stride=1).clamp_(0.0, 1.0), alpha)
    import cv2

    out = np.empty_like(alpha)
    kernel = np.ones((k, k), np.uint8)
    for i in range(alpha.shape[0]):
        dil = cv2.dilate(alpha[i, :, :, 0], kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        out[i, :, :, 0] = cv2.blur(dil, (k, k), borderType=cv2.BORDER_REPLICATE)
    np.clip(out, 0.0, 1.0, out=out)
    return np.maximum(out, alpha, out=out)


def _blend(g4, m4, alpha):
    """alpha * mse + (1 - alpha) * gan in float32 (float64 for float64 inputs), cast back; exact
    where alpha is 0 or 1."""
    if is_tensor(g4):
        import torch

        if alpha.dtype == torch.bool:
            return torch.where(alpha, m4, g4)
        ft = torch.float64 if g4.dtype == torch.float64 else torch.float32
        a = alpha.to(ft)
        out = a * m4.to(ft) + (1.0 - a) * g4.to(ft)
        if g4.dtype.is_floating_point:
            return out.to(g4.dtype)
        hi = 255 if g4.dtype == torch.uint8 else 65535
        return torch.floor(out + 0.5).clamp_(0, hi).to(g4.dtype)
    if alpha.dtype == np.bool_:
        return np.where(alpha, m4, g4)
    ft = np.float64 if g4.dtype == np.float64 else np.float32
    a = alpha.astype(ft)
    out = a * m4.astype(ft) + (1 - a) * g4.astype(ft)
    if g4.dtype.kind == "f":
        return out.astype(g4.dtype)
    hi = np.iinfo(g4.dtype).max
    return np.clip(np.floor(out + 0.5), 0, hi).astype(g4.dtype)


def _prepare(gan, mse, mask):
    """Validate; return 4-D gan, mse, a broadcastable alpha (bool for binary masks, float32 for
    soft ones) and a function that brings a 4-D result back to the input's shape and dtype."""
    pair = prepare_pair(gan, mse)  # shape / dtype / range / device checks, with clear errors
    if is_tensor(gan):
        import torch

        g4, m4 = gan, mse
        if g4.dim() == 2:
            g4, m4 = g4[None, None], m4[None, None]
        elif g4.dim() == 3:
            g4, m4 = g4[None], m4[None]
        n, _, h, w = g4.shape
        if not is_tensor(mask):
            raise TypeError("mask must be a torch tensor when gan and mse are tensors "
                            f"(got {type(mask).__name__})")
        if mask.device != g4.device:
            raise ValueError(f"mask is on {mask.device} but the images are on {g4.device}")
        mk = mask.detach()
        if mk.dim() == 4:
            if mk.shape[1] != 1:
                raise ValueError(f"a 4-D mask must be (N, 1, H, W), got shape {tuple(mk.shape)}")
            mk = mk[:, 0]
        if mk.dim() == 2:
            mk = mk[None]
        if mk.dim() != 3 or tuple(mk.shape[1:]) != (h, w) or mk.shape[0] not in (1, n):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the images "
                             f"(N={n}, H={h}, W={w}): expected (H, W), (N, H, W) or (N, 1, H, W)")
        alpha = _alpha_torch(mk)[:, None]
        shape, dtype = gan.shape, gan.dtype
        return g4, m4, alpha, lambda out: out.reshape(shape).to(dtype)
    g4, m4 = np.asarray(gan), np.asarray(mse)
    shape, dtype = g4.shape, g4.dtype
    if g4.ndim == 2:
        g4, m4 = g4[None, :, :, None], m4[None, :, :, None]
    elif g4.ndim == 3:
        g4, m4 = g4[None], m4[None]
    n, h, w, _ = g4.shape
    if is_tensor(mask):
        raise TypeError("mask must be a numpy array when gan and mse are numpy arrays (got a tensor)")
    mk = np.asarray(mask)
    if mk.ndim == 2:
        mk = mk[None]
    if mk.ndim != 3 or mk.shape[1:] != (h, w) or mk.shape[0] not in (1, n):
        raise ValueError(f"mask shape {np.shape(mask)} does not match the images (N={n}, H={h}, "
                         f"W={w}): expected (H, W) or (N, H, W)")
    alpha = _alpha_numpy(mk)[..., None]
    del pair
    return g4, m4, alpha, lambda out: out.reshape(shape).astype(dtype, copy=False)


def _alpha_numpy(mk: np.ndarray) -> np.ndarray:
    if mk.dtype == np.bool_:
        return mk
    if mk.dtype.kind in "ui":
        return mk != 0
    if mk.dtype.kind == "f":
        a = mk.astype(np.float32)
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(f"a floating-point mask must be a weight in [0, 1], found [{lo:g}, {hi:g}]")
        return a
    raise TypeError(f"mask must be bool, integer (non-zero = artifact) or float in [0, 1], got {mk.dtype}")


def _alpha_torch(mk):
    import torch

    if mk.dtype == torch.bool:
        return mk
    if mk.dtype.is_floating_point:
        a = mk.float()
        lo, hi = torch.stack(list(torch.aminmax(a))).tolist()
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(f"a floating-point mask must be a weight in [0, 1], found [{lo:g}, {hi:g}]")
        return a
    if mk.dtype.is_complex:
        raise TypeError(f"mask must be bool, integer or float in [0, 1], got {mk.dtype}")
    return mk != 0


def repair_stats(mask: np.ndarray, feather: int = 0) -> dict:
    """Manifest figures of one repair: ``replaced_px`` (pixels set to MSE-SR), ``blended_px``
    (pixels of the feathered edge, partly MSE-SR), ``replaced_fraction`` of the image."""
    m = np.asarray(mask, bool)
    replaced = int(m.sum())
    blended = 0
    if feather and replaced:
        soft = feather_mask(m[None, :, :, None].astype(np.float32), int(feather))
        blended = int(((soft[0, :, :, 0] > 0) & ~m).sum())
    return {"replaced_px": replaced, "blended_px": blended, "replaced_fraction": replaced / max(m.size, 1)}


__all__ = ["pseudo_gt", "repair", "feather_mask", "repair_stats"]
