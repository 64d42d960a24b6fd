"""Triton D-map kernel (desra_fast.kernels.dmap) against the independent float64 oracle.

Runs under TRITON_INTERPRET=1 on CPU tensors (set by conftest.py before any import). Images are
small and interpreter tiles large: the interpreter's cost grows with the number of programs.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from triton_helpers import (DTYPES, DEVICE, K, batch, in_layout, oracle_batch, requires_triton_device,
                            to_dtype, values255)
from images import photo_pair, synthetic_pair
import desra_fast.kernels._launch as launch_mod

pytestmark = requires_triton_device
TOL = 1e-5


def run_dmap(gan_nhwc_u8, mse_nhwc_u8, dtype, layout, window, contiguous=True, seed=0):
    g = to_dtype(gan_nhwc_u8, dtype, seed)
    m = to_dtype(mse_nhwc_u8, dtype, seed + 1)
    d = K.dmap(in_layout(g, layout, contiguous), in_layout(m, layout, contiguous), layout=layout,
               window=window, scale=DTYPES[dtype][1])
    ref = oracle_batch(values255(g, dtype), values255(m, dtype), window)
    return d.cpu().numpy(), ref


@pytest.mark.parametrize("window", ["gaussian", "box"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_dmap_matches_oracle(dtype, layout, window):
    # batch of 2, odd height, even width; one photo-like pair, one flat-bright-MSE worst case
    gan, mse = batch([photo_pair(27, 34, seed=3), synthetic_pair(27, 34, seed=5)])
    d, ref = run_dmap(gan, mse, dtype, layout, window, seed=7)
    assert d.dtype == np.float32 and d.shape == (2, 17, 24)
    assert np.isfinite(d).all()
    err = np.abs(d - ref).max()
    assert err <= TOL, f"max |D - D64| = {err:.3g}"


@pytest.mark.parametrize("hw", [(11, 11), (11, 12), (12, 11), (13, 17), (16, 16), (33, 31)])
@pytest.mark.parametrize("channels", [1, 3])
def test_dmap_sizes_and_channels(hw, channels):
    h, w = hw
    gan, mse = photo_pair(h, w, seed=h * 100 + w)
    gan, mse = gan[None, :, :, :channels], mse[None, :, :, :channels]
    d, ref = run_dmap(np.ascontiguousarray(gan), np.ascontiguousarray(mse), "uint8", "nhwc", "gaussian")
    assert d.shape == (1, h - 10, w - 10)
    assert np.abs(d - ref).max() <= TOL


def _naive_float32_error(gan64, mse64):
    """max error of the textbook float32 E[x^2] - mu^2 on this input (shows the input is hard)."""
    import cv2
    from numpy.lib.stride_tricks import sliding_window_view as windows

    k = cv2.getGaussianKernel(11, 1.5).astype(np.float32)
    w = np.outer(k, k).astype(np.float32)
    worst = 0.0
    for g, m in zip(gan64, mse64):
        ds = []
        for c in range(g.shape[2]):
            vs = []
            for img in (m[:, :, c], g[:, :, c]):
                x = windows(img.astype(np.float32), (11, 11))
                mu = np.float32(0)
                e2 = np.float32(0)
                for a in range(11):          # sequential float32 accumulation, as a GPU loop would
                    for b in range(11):
                        mu = mu + w[a, b] * x[:, :, a, b]
                        e2 = e2 + w[a, b] * (x[:, :, a, b] * x[:, :, a, b])
                vs.append(np.maximum(e2 - mu * mu, 0).astype(np.float64))
            c_ = (0.03 * 255) ** 2
            ds.append((2 * np.sqrt(vs[0] + 1e-8) * np.sqrt(vs[1] + 1e-8) + c_) / (vs[0] + vs[1] + c_))
        worst = max(worst, np.abs(np.mean(ds, axis=0) - oracle_batch(g[None], m[None], "gaussian")[0]).max())
    return worst


@pytest.mark.parametrize("window", ["gaussian", "box"])
def test_dmap_cancellation_worst_case(window):
    """Flat bright MSE (plateaus at 250 with a few one-level steps) under textured GAN: the naive
    float32 formula is off by far more than 1e-5 here; the kernel must not be."""
    rng = np.random.default_rng(11)
    h, w = 30, 37
    mse = np.full((2, h, w, 3), 250, np.uint8)
    mse[0, 12:, :, 1] = 251                               # one-level step: tiny variance at 251^2 level
    mse[1] = rng.choice([0, 255], size=(h, w, 3))         # also the largest variance there is
    mse[1, :, 20:] = 254
    gan = np.clip(250 + rng.normal(0, 4, (2, h, w, 3)), 0, 255).astype(np.uint8)
    gan[1, 5:9, 3:30] = 255                               # flat bright GAN too
    d, ref = run_dmap(gan, mse, "uint8", "nhwc", window)
    if window == "gaussian":
        assert _naive_float32_error(gan.astype(np.float64), mse.astype(np.float64)) > 1e-4
    assert np.abs(d - ref).max() <= TOL


def test_dmap_flat_images():
    gan = np.zeros((3, 14, 15, 3), np.uint8)
    mse = np.zeros((3, 14, 15, 3), np.uint8)
    gan[1], mse[1] = 255, 255
    gan[2], mse[2] = 255, 0
    d, ref = run_dmap(gan, mse, "uint8", "nchw", "gaussian")
    assert np.abs(d - ref).max() <= TOL


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_dmap_noncontiguous_views(dtype):
    """Views are read through their strides: channels-last NCHW, NCHW storage seen as NHWC,
    crops with a storage offset and steps in every dimension, every other image of a batch."""
    gan, mse = batch([photo_pair(46, 61, seed=s) for s in (21, 22, 23, 24)])
    g = to_dtype(gan, dtype, 1)
    m = to_dtype(mse, dtype, 2)
    scale = DTYPES[dtype][1]
    views = {
        # NCHW view of NHWC storage (channels_last)
        "nchw_of_nhwc": (g.permute(0, 3, 1, 2), m.permute(0, 3, 1, 2), "nchw"),
        # NHWC view of contiguous NCHW storage
        "nhwc_of_nchw": (g.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1),
                         m.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1), "nhwc"),
        # batch step, crop with offset, row and column steps, reversed channel order via a gather-free view
        "strided_crop": (g[::2, 3:40:2, 2::3, :], m[1::2, 3:40:2, 2::3, :], "nhwc"),
        "channel_step": (g[:, 1:20, :, ::2], m[:, 1:20, :, ::2], "nhwc"),  # 2 channels, stride 2
    }
    for name, (gv, mv, layout) in views.items():
        assert not gv.is_contiguous()
        d = K.dmap(gv.to(DEVICE), mv.to(DEVICE), layout=layout, window="gaussian", scale=scale)
        g_nhwc = gv if layout == "nhwc" else gv.permute(0, 2, 3, 1)
        m_nhwc = mv if layout == "nhwc" else mv.permute(0, 2, 3, 1)
        ref = oracle_batch(values255(g_nhwc, dtype), values255(m_nhwc, dtype), "gaussian")
        err = np.abs(d.cpu().numpy() - ref).max()
        assert err <= TOL, f"{name}: max err {err:.3g}"


@pytest.mark.parametrize("tiles", [(16, 8), (32, 64)])
def test_dmap_multi_tile(monkeypatch, tiles):
    """Small tiles (many programs, partial edge tiles, ring warm-up per tile) and the GPU tile
    shape that aot.py compiles (32 x 64) give the same D as the oracle."""
    bw, bh = tiles
    monkeypatch.setattr(launch_mod, "tile_config", lambda ho, wo, c: (bw, bh, 4))
    gan, mse = batch([photo_pair(45, 61, seed=31), synthetic_pair(45, 61, seed=32)])
    d, ref = run_dmap(gan, mse, "uint8", "nchw", "gaussian")
    assert np.abs(d - ref).max() <= TOL


def test_dmap_out_argument():
    gan, mse = batch([photo_pair(20, 24, seed=41)])
    out = torch.full((1, 10, 14), -1.0, dtype=torch.float32, device=DEVICE)
    d = K.dmap(in_layout(torch.from_numpy(gan), "nhwc"), in_layout(torch.from_numpy(mse), "nhwc"),
               layout="nhwc", out=out)
    assert d.data_ptr() == out.data_ptr()
    assert np.abs(out.cpu().numpy() - oracle_batch(gan.astype(float), mse.astype(float), "gaussian")).max() <= TOL


def test_dmap_rejects_bad_input():
    g = torch.zeros((1, 3, 16, 16), dtype=torch.uint8, device=DEVICE)
    with pytest.raises(ValueError, match="4-D"):
        K.dmap(g[0], g[0])
    with pytest.raises(TypeError, match="dtype"):
        K.dmap(g.to(torch.int32), g.to(torch.int32))
    with pytest.raises(TypeError, match="differ"):
        K.dmap(g, g.float(), scale=1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        K.dmap(g, g[:, :, :15])
    with pytest.raises(ValueError, match="11x11"):
        K.dmap(g[:, :, :10], g[:, :, :10])
    with pytest.raises(ValueError, match="channels"):
        K.dmap(g, g, layout="nhwc")  # 16 "channels"
    with pytest.raises(ValueError, match="layout"):
        K.dmap(g, g, layout="hwc")
    with pytest.raises(ValueError, match="window"):
        K.dmap(g, g, window="disk")
    with pytest.raises(ValueError, match="scale"):
        K.dmap(g, g, scale=float("nan"))
    with pytest.raises(TypeError, match="torch.Tensor"):
        K.dmap(g.cpu().numpy(), g)


def test_cpu_tensors_without_interpreter_raise():
    """Without TRITON_INTERPRET=1 a CPU tensor must give a clear RuntimeError, not a driver crash."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import torch, desra_fast.kernels as K\n"
            "g = torch.zeros((1, 3, 16, 16), dtype=torch.uint8)\n"
            "try:\n"
            "    K.dmap(g, g)\n"
            "except RuntimeError as e:\n"
            "    print('RuntimeError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RuntimeError:" in out.stdout and "TRITON_INTERPRET=1" in out.stdout, out.stdout
