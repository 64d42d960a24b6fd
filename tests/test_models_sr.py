"""SRModel.upscale / enhance: reference conventions, tiling, half precision fallback, threads, errors."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from desra_fast.models import RRDBNet, SRModel
from sr_fixtures import lr_crop, x4plus  # noqa: F401


class Local(nn.Module):
    """Three 3x3 convolutions (receptive-field radius 3) then PixelShuffle(2): a x2 model."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c = nn.ModuleList([nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 12, 3, 1, 1)])
        with torch.no_grad():
            for c in self.c:
                c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.3)
                c.bias.copy_(torch.randn(c.bias.shape, generator=g) * 0.1)

    def forward(self, x):
        x = torch.relu(self.c[0](x))
        x = torch.relu(self.c[1](x))
        return torch.sigmoid(F.pixel_shuffle(self.c[2](x), 2))


def _local(pad_mode="reflect", pre_pad=10, **kw):
    return SRModel(Local(), dict(arch="Local", scale=2, pre_pad=pre_pad, pad_mode=pad_mode), **kw)


def _img(h=37, w=29, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3)).astype(dtype)


@pytest.mark.parametrize("pad_mode,border", [("reflect", cv2.BORDER_REFLECT_101), ("replicate", cv2.BORDER_REPLICATE)])
@pytest.mark.parametrize("size,pre_pad", [((37, 29), 10), ((3, 5), 10), ((1, 4), 2)])
def test_upscale_restates_reference_pipeline(pad_mode, border, size, pre_pad):
    m = _local(pad_mode, pre_pad)
    img = _img(*size)
    padded = cv2.copyMakeBorder(img, pre_pad, pre_pad, pre_pad, pre_pad, border)
    with torch.no_grad():
        y = m.module(torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255.0)[0].permute(1, 2, 0).numpy()
    y = y[2 * pre_pad:y.shape[0] - 2 * pre_pad, 2 * pre_pad:y.shape[1] - 2 * pre_pad]
    expect = np.clip(np.floor(y * 255.0 + 0.5), 0, 255).astype(np.uint8)
    assert np.array_equal(m.upscale(img), expect)


def test_tiling_is_exact_when_tile_pad_covers_the_receptive_field():
    m = _local()
    img = _img()
    whole = m.upscale(img)
    for tile in (1, 5, 16, 23, 40):
        out, st = m.upscale(img, tile=tile, tile_pad=3, return_stats=True)
        assert np.array_equal(out, whole), tile
        assert st["tiles"] == -(-57 // tile) * -(-49 // tile) or tile >= 57
    # a cut receptive field changes the output (the test would see a tiling that ignores tile_pad)
    assert not np.array_equal(m.upscale(img, tile=8, tile_pad=1), whole)
    batch = torch.from_numpy(np.stack([img, _img(seed=1)])).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(m.upscale(batch, tile=9, tile_pad=3), m.upscale(batch))


def test_tiled_vs_untiled_real_weights(x4plus):
    lr = lr_crop("motorcycle", 16, 50, 70)
    whole = x4plus.upscale(lr)
    # every tile given the whole padded image (36 px) as context: identical to the untiled pass
    assert np.array_equal(x4plus.upscale(lr, tile=24, tile_pad=36), whole)
    a, st = x4plus.upscale(lr, tile=24, tile_pad=10, return_stats=True)
    b = x4plus.upscale(lr, tile=24, tile_pad=10)
    assert st["tiles"] == 4 and np.array_equal(a, b)          # deterministic run to run
    d = np.abs(a.astype(np.int32) - whole)
    # RRDBNet's receptive field (hundreds of px) is cut to 10 px of context: differences, bounded
    assert 0 < d.mean() < 8, d.mean()


def test_failing_tile_raises():
    calls = []

    def runner(x):
        calls.append(x.shape)
        if len(calls) == 3:
            raise MemoryError("out of memory on this tile")
        return F.interpolate(x, scale_factor=2, mode="nearest")

    m = SRModel(nn.Identity(), dict(arch="test", scale=2), runner=runner)
    with pytest.raises(RuntimeError, match=r"tile 3/4 .* failed: MemoryError: out of memory"):
        m.upscale(_img(20, 20), tile=15, tile_pad=2, pre_pad=0)
    bad_shape = SRModel(nn.Identity(), dict(arch="test", scale=2), runner=lambda x: x)
    with pytest.raises(RuntimeError, match="expected"):
        bad_shape.upscale(_img(8, 8), tile=4)
    nan = SRModel(nn.Identity(), dict(arch="test", scale=2),
                  runner=lambda x: F.interpolate(x, scale_factor=2) * float("nan"))
    with pytest.raises(RuntimeError, match="NaN/inf"):
        nan.upscale(_img(8, 8))
    with pytest.raises(ValueError, match="runner"):
        bad_shape.upscale(_img(8, 8), precision="fp16")


class Overflow(nn.Module):
    """x * 1e3 * 1e2 (inf in float16 where x > 0.655), then * 1e-2 * 1e-3, nearest x2: finite in float32."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 3, 1) for _ in range(4)])
        with torch.no_grad():
            for c, g in zip(self.convs, (1e3, 1e2, 1e-2, 1e-3)):
                c.weight.copy_(torch.eye(3).view(3, 3, 1, 1) * g)
                c.bias.zero_()

    def forward(self, x):
        for c in self.convs:
            x = c(x)
        return F.interpolate(x, scale_factor=2, mode="nearest")


def test_half_precision_nan_tiles_recomputed_in_fp32():
    m = SRModel(Overflow(), dict(arch="test", scale=2, pre_pad=0))
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, 16:] = 250          # right half overflows in float16
    ref = m.upscale(img)
    assert np.array_equal(ref[:, 32:], np.full((32, 32, 3), 250, np.uint8))
    out, st = m.upscale(img, tile=8, tile_pad=0, precision="fp16", return_stats=True)
    assert st == {"tiles": 8, "fp32_recomputed": 4}
    assert np.array_equal(out, ref)
    out, st = m.upscale(img, precision="fp16", return_stats=True)     # untiled: one recompute
    assert st["fp32_recomputed"] == 1 and np.array_equal(out, ref)
    assert m.stats["fp32_recomputed"] == 5
    _, st = m.upscale(img, tile=8, tile_pad=0, precision="bf16", return_stats=True)   # bf16 range: no overflow
    assert st["fp32_recomputed"] == 0


def test_threads_give_single_thread_results():
    torch.manual_seed(0)
    m = SRModel(RRDBNet(num_feat=8, num_block=1, num_grow_ch=4), dict(arch="RRDBNet", scale=4))
    imgs = [_img(10, 12, seed=s) for s in range(3)]
    kw = [dict(), dict(tile=6, tile_pad=2), dict(precision="bf16", tile=7)]
    expect = [[m.upscale(i, **k) for k in kw] for i in imgs]
    m._low.clear()
    got = {}

    def work(t):
        for j, i in enumerate(imgs):
            got[(t, j)] = [m.upscale(i, **k) for k in kw]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (t, j), outs in got.items():
        for a, b in zip(outs, expect[j]):
            assert np.array_equal(a, b)
    assert len(got) == 9


def test_input_kinds():
    m = _local(pre_pad=4)
    u8 = _img(11, 13)
    a = m.upscale(u8)
    u16 = m.upscale(u8.astype(np.uint16) * 257)
    assert u16.dtype == np.uint16 and np.abs(u16 / 257.0 - a).max() <= 1
    f = m.upscale(u8.astype(np.float64) / 255)
    assert f.dtype == np.float32 and np.abs(f * 255 - a).max() <= 0.5 + 1e-3
    t = torch.from_numpy(u8).permute(2, 0, 1)
    assert torch.equal(m.upscale(t).permute(1, 2, 0), torch.from_numpy(a))
    tf = m.upscale(t[None].float() / 255)
    assert tf.shape == (1, 3, 22, 26) and tf.dtype == torch.float32 and float(tf.min()) >= 0


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 4), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((4, 4, 4), np.uint8), r"enhance\(\)"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.zeros((4, 4, 3), np.int32), "dtype"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    (np.full((4, 4, 3), 255.0, np.float32), r"\[0, 1\]"),
    (torch.zeros(1, 4, 4, 4), r"\(N, 3, H, W\)"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.int64), "dtype"),
])
def test_bad_inputs(bad, match):
    with pytest.raises(ValueError, match=match):
        _local().upscale(bad)


def test_bad_options():
    m, img = _local(), _img(8, 8)
    with pytest.raises(ValueError, match="precision"):
        m.upscale(img, precision="fp8")
    for k in ("tile", "tile_pad", "pre_pad"):
        with pytest.raises(ValueError, match=k):
            m.upscale(img, **{k: -1})
    with pytest.raises(TypeError):
        m.upscale([[1, 2, 3]])


def test_enhance_realesrgan_semantics():
    m = _local(pre_pad=4)
    rgb = _img(10, 12)
    alpha = _img(10, 12, seed=3)[:, :, 0]
    gray = m.enhance(alpha)
    assert gray.shape == (20, 24) and gray.dtype == np.uint8
    assert np.array_equal(gray, cv2.cvtColor(m.upscale(np.dstack([alpha] * 3)), cv2.COLOR_RGB2GRAY))
    rgba = m.enhance(np.dstack([rgb, alpha]))
    assert rgba.shape == (20, 24, 4)
    assert np.array_equal(rgba[:, :, :3], m.upscale(rgb)) and np.array_equal(rgba[:, :, 3], gray)
    lin = m.enhance(np.dstack([rgb, alpha]), alpha_upsampler="bilinear")
    assert np.array_equal(lin[:, :, 3], cv2.resize(alpha, (24, 20), interpolation=cv2.INTER_LINEAR))
    w16 = m.enhance(rgb.astype(np.uint16) * 257)
    assert w16.dtype == np.uint16
    out = m.enhance(rgb, outscale=3.5)
    assert out.shape == (35, 42, 3)
    assert np.array_equal(out, cv2.resize(m.upscale(rgb), (42, 35), interpolation=cv2.INTER_LANCZOS4))
    assert np.array_equal(m.enhance(rgb, outscale=2), m.upscale(rgb))
    with pytest.raises(ValueError, match="outscale"):
        m.enhance(rgb, outscale=0)
    with pytest.raises(ValueError, match="expected"):
        m.enhance(np.zeros((4, 4, 2), np.uint8))


def test_channels_last_same_results(tmp_path):
    torch.manual_seed(0)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
    p = tmp_path / "m.pth"
    torch.save({"params_ema": net.state_dict()}, p)
    from desra_fast.models import load_sr

    a, b = load_sr(p), load_sr(p, channels_last=True)
    assert b.channels_last and not a.channels_last
    img = _img(12, 10)
    fa, fb = a.upscale(img.astype(np.float32) / 255), b.upscale(img.astype(np.float32) / 255, tile=7)
    assert np.abs(fa - b.upscale(img.astype(np.float32) / 255)).max() < 1e-5
    assert np.abs(fb - a.upscale(img.astype(np.float32) / 255, tile=7)).max() < 1e-5
