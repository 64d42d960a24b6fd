"""Seam-free tiling of SRModel.upscale: the blend written out with numpy, exactness when the context
covers the receptive field, automatic tile size against its memory budget, and the acceptance
figures on the real Real-ESRGAN x4plus weights (tile 64 vs untiled on a real LR photo)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from desra_fast.models import SRModel
from desra_fast.models import tiling
from sr_fixtures import ROOT

from test_models_sr import Local, _img


def _counting_model(scale=1):
    """A runner returning the nearest-upscaled input plus 0.01 * (call number): each tile's output
    is recognisable, so the blend weights can be read off the result."""
    calls = []

    def runner(x):
        calls.append(tuple(x.shape))
        return F.interpolate(x, scale_factor=scale, mode="nearest") + 0.01 * len(calls)

    return SRModel(nn.Identity(), dict(arch="test", scale=scale), runner=runner), calls


def _raised_cosine(n):
    return np.array([0.5 - 0.5 * math.cos(math.pi * (i + 0.5) / n) for i in range(n)])


def test_band_is_the_raised_cosine_mix_of_the_two_tiles():
    m, calls = _counting_model()
    img = np.full((8, 40, 3), 0.5, np.float32)
    out = m.upscale(img, tile=16, tile_pad=2, overlap=8, pre_pad=0)
    assert len(calls) == 3
    # kept spans: [0, 20), [12, 36), [28, 40); each run with 2 px of context
    assert [c[3] for c in calls] == [22, 28, 14]
    up = _raised_cosine(8)
    want = np.empty(40)
    want[:12] = 0.01
    want[12:20] = 0.01 * (1 - up) + 0.02 * up
    want[20:28] = 0.02
    want[28:36] = 0.02 * (1 - up) + 0.03 * up
    want[36:] = 0.03
    np.testing.assert_allclose(out[0, :, 0] - 0.5, want, atol=1e-6)
    np.testing.assert_allclose(out - out[:1], 0, atol=1e-7)        # same along the rows


def test_two_dimensional_weights_sum_to_one_at_scale_two():
    m, calls = _counting_model(scale=2)
    img = np.zeros((30, 30, 3), np.float32)
    out = m.upscale(img, tile=12, tile_pad=1, overlap=4, pre_pad=0)
    assert len(calls) == 9
    # every output value is a convex mix of the call offsets 0.01..0.09
    assert out.min() >= 0.01 - 1e-6 and out.max() <= 0.09 + 1e-6
    # tile centres keep their own tile only
    assert abs(out[12, 12, 0] - 0.01) < 1e-7 and abs(out[36, 36, 0] - 0.05) < 1e-7
    # on the corner of four tiles the weights are products of the 1-D ramps (all 0.5 at the centre
    # pair of the band): the four offsets averaged
    c = out[23:25, 23:25, 0]
    up = _raised_cosine(8)     # band of 2*2 LR px at scale 2
    wy = np.array([1 - up[3], up[3]])
    expect = sum(wy[a] * wy[b] * 0.01 * (1 + 3 * a + b) for a in (0, 1) for b in (0, 1))
    assert abs(c[0, 0] - expect) < 1e-6


@pytest.mark.parametrize("tile,overlap", [(5, 2), (16, 6), (23, 4), (8, 16)])
def test_blended_tiles_exact_when_context_covers_receptive_field(tile, overlap):
    m = SRModel(Local(), dict(arch="Local", scale=2, pre_pad=10, pad_mode="reflect"))
    img = _img()
    whole = m.upscale(img)
    # Local's receptive-field radius is 3: 3 px of context beyond every kept pixel is exact,
    # and averaging equal values must give the value itself, bit for bit
    assert np.array_equal(m.upscale(img, tile=tile, tile_pad=3, overlap=overlap), whole)
    f = img.astype(np.float32) / 255
    # float outputs: convolutions of different input sizes round differently (oneDNN picks the
    # algorithm by shape), so equal up to float32 rounding only
    np.testing.assert_allclose(m.upscale(f, tile=tile, tile_pad=3, overlap=overlap), m.upscale(f), rtol=0, atol=2e-6)
    # with too little context the blend is not exact (the test would see a tiling without context)
    assert not np.array_equal(m.upscale(img, tile=tile, tile_pad=0, overlap=overlap), whole)


def test_defaults_by_architecture_and_explicit_tile_pad_keeps_real_esrgan_tiling():
    assert tiling.resolve({"arch": "RRDBNet"}, None, None) == tiling.DEFAULT_TILING["RRDBNet"]
    assert tiling.resolve({"arch": "SRMD"}, None, None) == (12, 0)
    assert tiling.resolve({"arch": "RRDBNet"}, 10, None) == (10, 0)
    assert tiling.resolve({"arch": "RRDBNet", "tile_pad": 7, "tile_overlap": 2}, None, None) == (7, 2)
    m, calls = _counting_model()
    img = np.zeros((8, 40, 3), np.float32)
    out = m.upscale(img, tile=16, tile_pad=2, pre_pad=0)       # crop-only: a hard step at 16
    assert [c[3] for c in calls] == [18, 20, 10]
    assert np.allclose(out[0, 15, 0], 0.01) and np.allclose(out[0, 16, 0], 0.02)
    with pytest.raises(ValueError, match="overlap"):
        m.upscale(img, tile=16, overlap=-1)


def test_parse_memory():
    assert tiling.parse_memory("512M") == 512 << 20
    assert tiling.parse_memory("1.5GiB") == 3 << 29
    assert tiling.parse_memory("2GB") == 2 * 1000 ** 3
    assert tiling.parse_memory(4096) == 4096
    for bad in ("lots", "-1G", "0", "2 parsecs", True):
        with pytest.raises(ValueError, match="memory size"):
            tiling.parse_memory(bad)


def test_auto_tile_fits_the_budget_and_grows_with_it():
    torch.manual_seed(0)
    from desra_fast.models import RRDBNet

    m = SRModel(RRDBNet(num_feat=8, num_block=1, num_grow_ch=4), dict(arch="RRDBNet", scale=4))
    bpp = tiling.model_bytes_per_pixel(m.module, m.info, "cpu")
    # the estimate covers the 4x-resolution features: 8 channels at 16 px per LR px, in + out
    assert bpp >= 2 * 8 * 16 * 4
    h, w = 300, 400
    tp, ov = tiling.resolve(m.info, None, None)
    fixed = sum(p.numel() * 4 for p in m.module.parameters())
    canvas = (h + 20) * (w + 20) * 16 * (12 + 4)          # output + blend weights, float32

    def fits(t, mib):
        return fixed + canvas + (t + 2 * tp + ov) ** 2 * bpp <= mib << 20

    tiles = []
    for mib in (60, 120, 240):
        t = m.auto_tile(h, w, max_memory=f"{mib}M")
        assert t > 0 and t % 8 == 0 and fits(t, mib) and not fits(t + 8, mib), (mib, t)
        tiles.append(t)
    assert tiles[0] < tiles[1] < tiles[2]
    assert m.auto_tile(20, 20, max_memory="1G") == 0                  # the whole image fits
    with pytest.raises(ValueError, match="too small"):
        m.auto_tile(h, w, max_memory="1M")
    # a run through tile="auto": Local (receptive-field radius 3) with 4 px of context is exact
    loc = SRModel(Local(), dict(arch="Local", scale=2, pre_pad=10, pad_mode="reflect", tile_pad=4, tile_overlap=2))
    img = _img(60, 50)
    lbpp = tiling.model_bytes_per_pixel(loc.module, loc.info, "cpu")
    lfixed = sum(p.numel() * 4 for p in loc.module.parameters())
    budget = int(lfixed + 80 * 70 * 4 * 16 + 80 * 70 * lbpp * 0.6)     # the whole image does not fit
    out, st = loc.upscale(img, tile="auto", max_memory=budget, return_stats=True)
    assert st["tiles"] > 1 and np.array_equal(out, loc.upscale(img))
    assert np.array_equal(loc.upscale(img, tile="auto"), loc.upscale(img))    # 2 GiB: untiled


def _seam_ratio(out, tile, pre_pad, scale):
    """Mean |neighbour difference| across tile borders over the same mean elsewhere (cols + rows)."""
    o = out.astype(np.float64)
    num = den = 0.0
    nb = ne = 0
    for axis in (0, 1):
        d = np.abs(np.diff(o, axis=axis)).mean(axis=tuple(i for i in range(3) if i != axis))
        n_lr = o.shape[axis] // scale
        border = [(k * tile - pre_pad) * scale - 1 for k in range(1, (n_lr + 2 * pre_pad) // tile + 1)
                  if 0 < k * tile - pre_pad < n_lr]
        mask = np.zeros(d.shape[0], bool)
        mask[border] = True
        num, nb = num + d[mask].sum(), nb + mask.sum()
        den, ne = den + d[~mask].sum(), ne + (~mask).sum()
    assert nb > 0
    return (num / nb) / (den / ne)


def test_x4plus_tile64_matches_untiled_without_seams():
    """Acceptance: real x4plus weights, a real LR photo, tile 64 with the default context."""
    from desra_fast.models import load_sr

    try:
        gan = load_sr("realesrgan-x4plus", runtime="torch")
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(f"packaged Real-ESRGAN x4plus weights not installed: {exc}")
    lr = cv2.cvtColor(cv2.imread(str(ROOT / "samples" / "lr" / "rocket.png")), cv2.COLOR_BGR2RGB)
    assert lr.shape == (106, 160, 3)                 # 2 x 3 tiles of 64 after the 10-px pre-pad
    whole = gan.upscale(lr)
    tiled, st = gan.upscale(lr, tile=64, return_stats=True)
    assert st["tiles"] == 6
    d = np.abs(tiled.astype(np.int32) - whole)
    assert (d <= 2).mean() >= 0.99, (d <= 2).mean()
    assert _seam_ratio(tiled, 64, 10, 4) <= 1.2
    # Real-ESRGAN's own tiling (10 px of context, no blend) fails both, so the test can fail
    old = gan.upscale(lr, tile=64, tile_pad=10)
    d_old = np.abs(old.astype(np.int32) - whole)
    assert (d_old <= 2).mean() < 0.99
