"""The public detection API: :func:`detect` and :func:`d_map`.

Shapes follow the input's ecosystem (see :mod:`desra_fast._inputs`): numpy images are channels
last, torch tensors channels first; a leading batch dimension is optional. ``H, W`` are the image
size, ``h, w = H - 10, W - 10`` the size of the valid region where every 11x11 window fits.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from . import _native, backends
from ._inputs import (Pair, check_area_threshold, check_threshold, is_tensor, prepare_pair,
                      prepare_seg, window_code)
from .weights import WeightsLike, load_weights

HALO = 5  # the D map exists only where the 11x11 window is inside the image

ArrayLike = Any  # numpy.ndarray | torch.Tensor


def d_map(gan: ArrayLike, mse: ArrayLike, *, window: str = "gaussian", backend: str = "auto") -> ArrayLike:
    """Per-pixel texture similarity D between GAN-SR and MSE-SR (docs/spec.md §1; paper Eq. 3-7).

    For each channel, with Gaussian (sigma 1.5) or box 11x11 windows, ``D_c = (2 sx sy + C) /
    (sx^2 + sy^2 + C)`` with ``C = (0.03*255)^2``; D is the mean over channels. Low D = the GAN
    invented texture the MSE model did not.

    Args:
        gan, mse: the GAN-SR and MSE-SR images, same shape and dtype. numpy: (H, W), (H, W, C) or
            (N, H, W, C); torch: (H, W), (C, H, W) or (N, C, H, W); C in {1, 3, 4} (alpha dropped).
            uint8 in 0..255, uint16 in 0..65535, float in [0, 1]. H, W >= 11.
        window: ``"gaussian"`` (the released scripts; default) or ``"box"`` (the paper's text).
        backend: ``"auto" | "cpu" | "triton" | "cuda"`` (see :mod:`desra_fast.backends`).

    Returns:
        float32 D of shape (h, w) = (H-10, W-10), or (N, h, w) for a batch; values in about
        (0, 1]; numpy for numpy input, a torch tensor on the input's device for tensors.
        Within 1e-5 of the authors' float64 computation.
    """
    pair = prepare_pair(gan, mse)
    win = window_code(window)
    b = backends.resolve(backend, pair)
    if b == "cpu":
        g, m, scale = pair.numpy_nhwc()
        out = _native.C.dmap(g, m, win, scale)
        out = _to_output(out, pair)
    else:
        from . import kernels

        out = kernels.dmap(pair.gan, pair.mse, layout=pair.layout, window=window, scale=pair.scale)
    return out if pair.batched else out[0]


def detect(
    gan: ArrayLike,
    mse: ArrayLike,
    seg: Optional[ArrayLike] = None,
    *,
    threshold: float = 0.7,
    area_threshold: int = 4000,
    window: str = "gaussian",
    weights: WeightsLike = None,
    backend: str = "auto",
    return_counts: bool = False,
    segment_source: str = "gan",
) -> Union[ArrayLike, tuple]:
    """Detect GAN-inference artifacts: the DeSRA mask, equal to the authors' released pipeline.

    Steps (docs/spec.md): D map -> semantic weights ``D' = clip(D * W[seg], 0, 1)`` -> ``D' < threshold``
    -> erode 5x5 -> dilate 5x5 three times -> fill holes -> keep 8-connected regions with area
    ``> area_threshold``. Pixels whose D' lies within float32 rounding of the threshold are decided
    in float64, so the mask equals the float64 reference exactly (up to ties: a threshold equal
    to a pixel's float64 D within ~1e-9, the reproducibility of float64 filtering itself).

    Args:
        gan, mse: GAN-SR and MSE-SR images, as in :func:`d_map`.
        seg: optional ADE20K label map of the GAN-SR image (the released script segments GAN-SR),
            (H, W) or (N, H, W) integers in 0..149, numpy or torch. None: no semantic adjustment.
            A :class:`desra_fast.models.Segmenter` (``load_segmenter(...)``): it segments the
            image named by ``segment_source`` first.
        threshold: D' below this is suspicious (strict ``<``). Default 0.7.
        area_threshold: keep regions with more than this many pixels. Default 4000.
        window: ``"gaussian"`` (default) or ``"box"``.
        weights: per-class weights: None (the authors' table), a 150-vector, or a
            ``{class name: weight}`` dict overriding entries of the table.
        backend: ``"auto" | "cpu" | "triton" | "cuda"``.
        return_counts: also return the number of regions kept per image.
        segment_source: ``"gan"`` (default, the released script) or ``"mse"`` (the paper's text):
            which image a Segmenter passed as ``seg`` labels.

    Returns:
        bool mask (H, W), or (N, H, W) for a batch, True = artifact; its 5-pixel frame is False.
        numpy for numpy input; a torch.bool tensor on the input's device for tensors. With
        ``return_counts``, ``(mask, counts)`` where counts is an int (or an int64 array (N,)).
    """
    if segment_source not in ("gan", "mse"):
        raise ValueError(f"segment_source must be 'gan' or 'mse', got {segment_source!r}")
    pair = prepare_pair(gan, mse)
    if callable(getattr(seg, "segment", None)):  # a Segmenter: label the chosen SR image
        seg = seg.segment(gan if segment_source == "gan" else mse)
    win = window_code(window)
    thr = check_threshold(threshold)
    n, (H, W) = pair.n, pair.hw
    area = check_area_threshold(area_threshold, (H - 2 * HALO) * (W - 2 * HALO))
    w = load_weights(weights)
    b = backends.resolve(backend, pair)
    labels = prepare_seg(seg, pair, device=None if b == "cpu" else pair.device)
    if b == "cpu":
        g, m, scale = pair.numpy_nhwc()
        mask = np.zeros((n, H, W), dtype=np.bool_)
        counts = _native.C.detect(g, m, labels, w, thr, win, scale, area, mask[:, HALO:H - HALO, HALO:W - HALO])
        mask = _to_output(mask, pair)
    else:
        from . import kernels

        torch = _torch()
        wt = torch.tensor(w, dtype=torch.float64, device=pair.device)
        pre = kernels.premask(pair.gan, pair.mse, labels, wt, threshold=thr, layout=pair.layout,
                              window=window, scale=pair.scale)
        if b == "cuda":
            from .cuda_postprocess import postprocess_cuda

            mask = torch.zeros((n, H, W), dtype=torch.bool, device=pair.device)
            counts = postprocess_cuda(pre, area, mask[:, HALO:H - HALO, HALO:W - HALO])
        else:  # triton stage 1, CPU stage 2
            host, counts = _postprocess_host(pre.cpu().numpy(), area, n, H, W)
            mask = torch.from_numpy(host).to(pair.device)
    if not pair.batched:
        mask = mask[0]
        counts = int(counts[0])
    return (mask, counts) if return_counts else mask


def _postprocess_host(pre: np.ndarray, area: int, n: int, H: int, W: int):
    full = np.zeros((n, H, W), dtype=np.bool_)
    counts = _native.C.postprocess(pre, area, full[:, HALO:H - HALO, HALO:W - HALO])
    return full, counts


def _to_output(out: np.ndarray, pair: Pair):
    if not pair.is_torch:
        return out
    torch = _torch()
    return torch.from_numpy(out).to(pair.device)


def _torch():
    import torch

    return torch


__all__ = ["detect", "d_map", "HALO", "is_tensor"]
