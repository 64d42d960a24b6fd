"""Fused Triton stage 1 (desra_fast.kernels.premask): the uint8 pre-morphology mask must EQUAL the
float64 oracle's and the CPU path's (desra_fast._C.premask), including pixels that lie closer to
the threshold than float32 can resolve (decided in float64 inside the kernel)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from triton_helpers import (DTYPES, DEVICE, K, batch, in_layout, oracle_batch, requires_triton_device,
                            to_dtype, values255)
from images import blocky_seg, photo_pair, synthetic_pair
from oracle import mask_diff, oracle_threshold, oracle_weights
import desra_fast.kernels._launch as launch_mod

pytestmark = requires_triton_device
WINDOW_ID = {"gaussian": 0, "box": 1}


def cpu_premask(gan_nhwc, mse_nhwc, labels, weights64, threshold, window, scale):
    """The CPU path's mask (desra_fast._C.premask). fp16/bf16 are widened to float32 (exact)."""
    from desra_fast import _C

    def np_in(t):
        t = t.cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.to(torch.float32)
        if t.dtype == torch.uint16:
            return t.to(torch.int32).numpy().astype(np.uint16)
        return t.numpy()

    lab = None if labels is None else labels.cpu().numpy()
    return _C.premask(np_in(gan_nhwc), np_in(mse_nhwc), lab, weights64, threshold, WINDOW_ID[window], scale)


def oracle_mask(gan64, mse64, labels, weights64, threshold, window):
    d = oracle_batch(gan64, mse64, window)
    if labels is None:
        return np.stack([oracle_threshold(x, None, threshold) for x in d])
    return np.stack([oracle_threshold(x, lab, threshold, weights64) for x, lab in zip(d, labels)])


def check_premask(gan_u8, mse_u8, dtype, layout, window, labels_np=None, weights64=None, threshold=0.7,
                  seed=0, weights_dtype=torch.float64, labels_view=None):
    g = to_dtype(gan_u8, dtype, seed)
    m = to_dtype(mse_u8, dtype, seed + 1)
    scale = DTYPES[dtype][1]
    labels = None
    if labels_np is not None:
        labels = torch.from_numpy(labels_np) if labels_view is None else labels_view
        labels = labels.to(DEVICE)
    w_t = None if weights64 is None else torch.from_numpy(weights64).to(weights_dtype).to(DEVICE)
    got = K.premask(in_layout(g, layout), in_layout(m, layout), labels, w_t, threshold=threshold,
                    layout=layout, window=window, scale=scale).cpu().numpy()
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
    w_eff = weights64 if weights_dtype == torch.float64 or weights64 is None else \
        weights64.astype(np.float32).astype(np.float64)
    expected = oracle_mask(values255(g, dtype), values255(m, dtype), labels_np, w_eff, threshold, window)
    for i in range(got.shape[0]):
        assert np.array_equal(got[i].astype(bool), expected[i]), f"image {i} vs oracle: {mask_diff(got[i], expected[i])}"
    cpu = cpu_premask(g, m, None if labels_np is None else torch.from_numpy(labels_np),
                      w_eff if w_eff is not None else oracle_weights(), threshold, window, scale)
    assert np.array_equal(got, cpu), f"vs CPU path: {mask_diff(got[0], cpu[0])}"
    return got, expected


@pytest.mark.parametrize("window", ["gaussian", "box"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_premask_with_labels(dtype, layout, window):
    gan, mse = batch([photo_pair(29, 36, seed=51), synthetic_pair(29, 36, seed=52)])
    labels = np.stack([blocky_seg(29, 36, seed=53), blocky_seg(29, 36, seed=54)])
    got, expected = check_premask(gan, mse, dtype, layout, window, labels, oracle_weights(), 0.7, seed=55)
    assert 0 < expected.sum() < expected.size  # both decisions occur


@pytest.mark.parametrize("hw", [(11, 11), (12, 13), (31, 24)])
def test_premask_without_labels(hw):
    h, w = hw
    gan, mse = batch([photo_pair(h, w, seed=61), photo_pair(h, w, seed=62)])
    check_premask(gan, mse, "uint8", "nhwc", "gaussian", threshold=0.9)


@pytest.mark.parametrize("window", ["gaussian", "box"])
def test_premask_near_threshold_pixels_decided_in_float64(window):
    """Per-pixel weights put D * W within 2e-9 (relative) of the threshold, above for some pixels
    and below for others: float32 cannot separate these (its error band is ~1e-6 wide at best),
    so the mask is right only if the in-kernel float64 recompute decides them."""
    h, w = 26, 33
    gan, mse = batch([photo_pair(h, w, seed=71)])
    d_ref = oracle_batch(gan.astype(np.float64), mse.astype(np.float64), window)[0]
    rng = np.random.default_rng(72)
    labels = np.zeros((1, h, w), np.uint8)                # label 0: weight 1
    weights = np.ones(150)
    thr = 0.7
    ys, xs = rng.integers(0, h - 10, 149), rng.integers(0, w - 10, 149)
    used = set()
    for k, (y, x) in enumerate(zip(ys, xs), start=1):
        if (y, x) in used:
            continue
        used.add((y, x))
        labels[0, y + 5, x + 5] = k
        side = 1.0 + 2e-9 if k % 2 else 1.0 - 2e-9        # odd labels just above, even just below
        weights[k] = thr * side / d_ref[y, x]
    got, expected = check_premask(gan, mse, "uint8", "nchw", window, labels, weights, thr)
    near = labels[0, 5:-5, 5:-5] > 0
    assert expected[0][near & (labels[0, 5:-5, 5:-5] % 2 == 0)].all()       # below -> 1
    assert not expected[0][near & (labels[0, 5:-5, 5:-5] % 2 == 1)].any()  # above -> 0


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0, 1.5])
def test_premask_clip_and_threshold_edges(threshold):
    """Weights large enough that D * W > 1 (clipped to 1) and thresholds at and beyond the clip range."""
    h, w = 24, 27
    gan, mse = batch([synthetic_pair(h, w, seed=81)])
    labels = blocky_seg(h, w, seed=82, labels=[0, 1, 2, 3])[None]
    weights = np.ones(150)
    weights[:4] = [0.0, 0.9, 1.4, 3.0]
    check_premask(gan, mse, "uint8", "nhwc", "gaussian", labels, weights, threshold)


def test_premask_float32_weights_and_label_view():
    """float32 weight table (widened in the kernel) and a non-contiguous label view."""
    h, w = 25, 30
    gan, mse = batch([photo_pair(h, w, seed=91), photo_pair(h, w, seed=92)])
    big = np.zeros((4, h, 2 * w), np.uint8)
    big[::2, :, ::2] = np.stack([blocky_seg(h, w, seed=93), blocky_seg(h, w, seed=94)])
    view = torch.from_numpy(big)[::2, :, ::2]
    assert not view.is_contiguous()
    labels = np.ascontiguousarray(big[::2, :, ::2])
    check_premask(gan, mse, "float16", "nchw", "gaussian", labels, oracle_weights(), 0.75,
                  weights_dtype=torch.float32, labels_view=view)


def test_premask_multi_tile(monkeypatch):
    """Tiles of 16 x 8 outputs: per-tile ring warm-up and the float64 branch in edge tiles."""
    monkeypatch.setattr(launch_mod, "tile_config", lambda ho, wo, c: (16, 8, 4))
    h, w = 40, 53
    gan, mse = batch([photo_pair(h, w, seed=101)])
    labels = blocky_seg(h, w, seed=102)[None]
    weights = oracle_weights()
    d_ref = oracle_batch(gan.astype(np.float64), mse.astype(np.float64), "gaussian")[0]
    # threshold equal (to 1e-12) to one pixel's D*W so at least one row of some tile takes the branch
    y, x = 17, 33
    thr = float(d_ref[y, x] * weights[labels[0, y + 5, x + 5]]) * (1 + 1e-12)
    check_premask(gan, mse, "uint8", "nhwc", "gaussian", labels, weights, thr)


def test_premask_rejects_bad_input():
    g = torch.zeros((1, 3, 16, 16), dtype=torch.uint8, device=DEVICE)
    lab = torch.zeros((1, 16, 16), dtype=torch.uint8, device=DEVICE)
    w = torch.ones(150, dtype=torch.float64, device=DEVICE)
    with pytest.raises(ValueError, match="weights are required"):
        K.premask(g, g, lab, None)
    with pytest.raises(TypeError, match="uint8"):
        K.premask(g, g, lab.to(torch.int64), w)
    with pytest.raises(ValueError, match="shape"):
        K.premask(g, g, lab[:, 1:], w)
    with pytest.raises(TypeError, match="weights"):
        K.premask(g, g, lab, w.to(torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        K.premask(g, g, threshold=float("nan"))
