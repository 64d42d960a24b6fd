"""Input handling of the public API: dtypes and their scaling, layouts (numpy HWC/NHWC, torch
CHW/NCHW), grayscale, RGBA, non-contiguous views — each checked against the oracle on explicitly
scaled values — and a clear ValueError/TypeError naming the problem for every bad input."""
from __future__ import annotations

import numpy as np
import pytest

import desra_fast
import images as I
from oracle import mask_diff, oracle_detect

torch = pytest.importorskip("torch")

AREA = 120  # small enough that the 97x120 test pairs keep some regions
SHAPE = (97, 120)


@pytest.fixture(scope="module")
def pair():
    gan, mse = I.photo_pair(*SHAPE, 4242)
    exp = oracle_detect(gan, mse, area_threshold=AREA)
    assert exp.any(), "test pair must produce a non-empty mask"
    return gan, mse


def expect(gan64, mse64, **kw):
    """Oracle mask for images already on the 0..255 float64 scale."""
    kw.setdefault("area_threshold", AREA)
    return oracle_detect(gan64, mse64, **kw)


def assert_same(got, expected, what):
    got = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
    assert got.dtype == np.bool_
    assert np.array_equal(got, expected), f"{what}: {mask_diff(got, expected)}"


# ---- accepted inputs ----------------------------------------------------------------------------

def test_uint8_rgb(pair):
    gan, mse = pair
    assert_same(desra_fast.detect(gan, mse, area_threshold=AREA, backend="cpu"), expect(gan, mse), "uint8")


def test_uint16_scaled(pair):
    gan, mse = pair
    rng = np.random.default_rng(0)
    g16 = (gan.astype(np.uint16) * 257 + rng.integers(0, 200, gan.shape)).astype(np.uint16)
    m16 = (mse.astype(np.uint16) * 257 + rng.integers(0, 200, mse.shape)).astype(np.uint16)
    s = 255.0 / 65535.0
    got = desra_fast.detect(g16, m16, area_threshold=AREA, backend="cpu")
    assert_same(got, expect(g16 * s, m16 * s), "uint16")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_in_unit_range_scaled(pair, dtype):
    gan, mse = pair
    rng = np.random.default_rng(1)
    gf = np.clip(gan / 255 + rng.normal(0, 0.002, gan.shape), 0, 1).astype(dtype)
    mf = np.clip(mse / 255 + rng.normal(0, 0.002, mse.shape), 0, 1).astype(dtype)
    got = desra_fast.detect(gf, mf, area_threshold=AREA, backend="cpu")
    assert_same(got, expect(gf.astype(np.float64) * 255, mf.astype(np.float64) * 255), str(np.dtype(dtype)))


def test_float_slight_overshoot_is_accepted(pair):
    gan, mse = pair
    gf = gan / 255 * 1.08 - 0.04  # [-0.04, 1.04]: within the tolerated model-output overshoot
    mf = mse / 255
    got = desra_fast.detect(gf, mf, area_threshold=AREA)
    assert got.shape == SHAPE and got.dtype == np.bool_


def test_grayscale_2d_and_single_channel(pair):
    gan, mse = pair
    g, m = gan[..., 0], mse[..., 0]
    exp = expect(g.astype(np.float64), m.astype(np.float64))
    assert_same(desra_fast.detect(g, m, area_threshold=AREA, backend="cpu"), exp, "HxW gray")
    assert_same(desra_fast.detect(g[..., None], m[..., None], area_threshold=AREA), exp, "HxWx1")
    tg, tm = torch.from_numpy(np.ascontiguousarray(g)), torch.from_numpy(np.ascontiguousarray(m))
    assert_same(desra_fast.detect(tg, tm, area_threshold=AREA), exp, "torch HxW")
    assert_same(desra_fast.detect(tg[None], tm[None], area_threshold=AREA), exp, "torch 1xHxW")
    # gray equals the RGB image with three identical channels
    g3, m3 = np.repeat(g[..., None], 3, -1), np.repeat(m[..., None], 3, -1)
    assert_same(desra_fast.detect(g3, m3, area_threshold=AREA), exp, "gray replicated to RGB")


def test_rgba_gives_the_rgb_mask(pair):
    gan, mse = pair
    rng = np.random.default_rng(2)
    alpha_g = rng.integers(0, 256, SHAPE + (1,), dtype=np.uint8)  # noisy alpha would change D if used
    alpha_m = np.full(SHAPE + (1,), 255, np.uint8)
    ga, ma = np.concatenate([gan, alpha_g], -1), np.concatenate([mse, alpha_m], -1)
    exp = expect(gan, mse)
    assert_same(desra_fast.detect(ga, ma, area_threshold=AREA, backend="cpu"), exp, "RGBA numpy")
    assert_same(desra_fast.detect(torch.from_numpy(ga).permute(2, 0, 1), torch.from_numpy(ma).permute(2, 0, 1),
                                  area_threshold=AREA), exp, "RGBA torch")
    # and would differ if alpha were used as a 4th channel
    d4 = oracle_detect(ga.astype(float), ma.astype(float), area_threshold=AREA)
    assert not np.array_equal(d4, exp), "test alpha must be one that would change the mask"


def test_numpy_batch_nhwc(pair):
    gan, mse = pair
    g2, m2 = I.synthetic_pair(*SHAPE, 99)
    got = desra_fast.detect(np.stack([gan, g2]), np.stack([mse, m2]), area_threshold=AREA, backend="cpu")
    assert got.shape == (2, *SHAPE)
    assert_same(got[0], expect(gan, mse), "batch[0]")
    assert_same(got[1], expect(g2, m2), "batch[1]")


def test_non_contiguous_numpy_views():
    big_g, big_m = I.photo_pair(2 * SHAPE[0], 2 * SHAPE[1] + 3, 4243)
    cases = {
        "strided": (big_g[::2, 1::2], big_m[::2, 1::2]),
        "transposed": (big_g[:150, :130].transpose(1, 0, 2), big_m[:150, :130].transpose(1, 0, 2)),
        "reversed channels": (big_g[:90, :100, ::-1], big_m[:90, :100, ::-1]),
        "fortran": (np.asfortranarray(big_g[:80, :90]), np.asfortranarray(big_m[:80, :90])),
        "channel view of RGBA-ish buffer": (np.dstack([big_g[:70, :75], big_g[:70, :75, :1]])[..., :3],
                                            np.dstack([big_m[:70, :75], big_m[:70, :75, :1]])[..., :3]),
    }
    for name, (g, m) in cases.items():
        assert not g.flags.c_contiguous or name == "channel view of RGBA-ish buffer"
        exp = oracle_detect(g.astype(float), m.astype(float), area_threshold=60)
        assert_same(desra_fast.detect(g, m, area_threshold=60, backend="cpu"), exp, name)


def test_torch_chw_nchw_uint8(pair):
    gan, mse = pair
    exp = expect(gan, mse)
    tg = torch.from_numpy(gan).permute(2, 0, 1)  # non-contiguous CHW view
    tm = torch.from_numpy(mse).permute(2, 0, 1)
    out = desra_fast.detect(tg, tm, area_threshold=AREA, backend="cpu")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bool and tuple(out.shape) == SHAPE
    assert out.device == tg.device
    assert_same(out, exp, "torch CHW")
    out = desra_fast.detect(tg.contiguous()[None], tm.contiguous()[None], area_threshold=AREA, backend="auto")
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, *SHAPE)
    assert_same(out[0], exp, "torch NCHW")
    cl_g = tg[None].float().div(255).contiguous(memory_format=torch.channels_last)
    cl_m = tm[None].float().div(255).contiguous(memory_format=torch.channels_last)
    out = desra_fast.detect(cl_g, cl_m, area_threshold=AREA, backend="cpu")
    exp_f = expect(cl_g[0].permute(1, 2, 0).double().numpy() * 255, cl_m[0].permute(1, 2, 0).double().numpy() * 255)
    assert_same(out[0], exp_f, "torch channels_last float32")


def test_torch_uint16_and_strided_views():
    big_g, big_m = I.photo_pair(2 * SHAPE[0], 2 * SHAPE[1], 4244)
    tg = torch.from_numpy(big_g).permute(2, 0, 1)[:, ::2, 1::2]  # strided, channels-first view
    tm = torch.from_numpy(big_m).permute(2, 0, 1)[:, ::2, 1::2]
    g, m = big_g[::2, 1::2].astype(np.float64), big_m[::2, 1::2].astype(np.float64)
    assert not tg.is_contiguous()
    assert_same(desra_fast.detect(tg, tm, area_threshold=AREA, backend="cpu"), expect(g, m), "strided torch")
    if not hasattr(torch, "uint16"):
        return
    rng = np.random.default_rng(5)
    g16 = big_g[::2, 1::2].astype(np.uint16) * 257 + rng.integers(0, 257, g.shape).astype(np.uint16)
    m16 = big_m[::2, 1::2].astype(np.uint16) * 257
    t16g = torch.from_numpy(g16).permute(2, 0, 1)
    t16m = torch.from_numpy(m16).permute(2, 0, 1)
    s = 255.0 / 65535.0
    out = desra_fast.detect(t16g, t16m, area_threshold=AREA, backend="cpu")
    assert_same(out, expect(g16 * s, m16 * s), "torch uint16")


def test_torch_float32_and_bfloat16(pair):
    gan, mse = pair
    g2, m2 = I.synthetic_pair(*SHAPE, 7)
    tg = torch.from_numpy(np.stack([gan, g2])).permute(0, 3, 1, 2).float() / 255
    tm = torch.from_numpy(np.stack([mse, m2])).permute(0, 3, 1, 2).float() / 255
    for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        g, m = tg.to(dt), tm.to(dt)
        out = desra_fast.detect(g, m, area_threshold=AREA, backend="cpu")
        assert out.dtype == torch.bool and tuple(out.shape) == (2, *SHAPE)
        for i in range(2):
            g64 = g[i].permute(1, 2, 0).double().numpy() * 255
            m64 = m[i].permute(1, 2, 0).double().numpy() * 255
            assert_same(out[i], expect(g64, m64), f"torch {dt} item {i}")


def test_torch_seg_and_numpy_seg(pair):
    gan, mse = pair
    seg = I.blocky_seg(*SHAPE, 5, block=12)
    exp = expect(gan, mse, seg=seg)
    tg, tm = torch.from_numpy(gan).permute(2, 0, 1), torch.from_numpy(mse).permute(2, 0, 1)
    assert_same(desra_fast.detect(tg, tm, torch.from_numpy(seg).long()), expect(gan, mse, seg=seg,
                area_threshold=4000), "torch seg default area")
    assert_same(desra_fast.detect(tg, tm, torch.from_numpy(seg), area_threshold=AREA), exp, "torch seg")
    assert_same(desra_fast.detect(gan, mse, seg.astype(np.int64), area_threshold=AREA), exp, "int64 seg")


# ---- errors -------------------------------------------------------------------------------------

def small(h=20, w=20, c=3, dtype=np.uint8):
    return np.zeros((h, w, c), dtype) if c else np.zeros((h, w), dtype)


@pytest.mark.parametrize("fn", ["detect", "d_map"])
def test_shape_and_channel_mismatch(fn):
    f = getattr(desra_fast, fn)
    with pytest.raises(ValueError, match="same shape"):
        f(small(20, 20), small(20, 21))
    with pytest.raises(ValueError, match="same shape"):
        f(small(20, 20, 3), small(20, 20, 4))
    with pytest.raises(ValueError, match="same shape"):
        f(small(20, 20, 3), small(20, 20, 0))
    with pytest.raises(ValueError, match="same shape"):
        f(np.zeros((2, 20, 20, 3), np.uint8), np.zeros((3, 20, 20, 3), np.uint8))
    with pytest.raises((ValueError, TypeError), match="dtype"):
        f(small(), small(dtype=np.uint16))
    with pytest.raises(ValueError, match=r"\(H, W, C\)|channel|C in"):
        f(small(20, 20, 2), small(20, 20, 2))
    with pytest.raises(ValueError, match=r"C in|channel"):
        f(np.zeros((2, 20, 20, 5), np.uint8), np.zeros((2, 20, 20, 5), np.uint8))
    with pytest.raises(ValueError, match=r"C in|channel|shape"):
        f(torch.zeros(2, 20, 20, dtype=torch.uint8), torch.zeros(2, 20, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"-D|shape"):
        f(np.zeros((1, 1, 20, 20, 3), np.uint8), np.zeros((1, 1, 20, 20, 3), np.uint8))
    with pytest.raises(ValueError, match=r"-D|shape"):
        f(np.zeros(20, np.uint8), np.zeros(20, np.uint8))


@pytest.mark.parametrize("hw", [(10, 10), (10, 40), (40, 10), (1, 1)])
def test_too_small(hw):
    for f in (desra_fast.detect, desra_fast.d_map):
        with pytest.raises(ValueError, match="11x11"):
            f(small(*hw), small(*hw))
    with pytest.raises(ValueError, match="11x11"):
        desra_fast.detect(torch.zeros(3, *hw, dtype=torch.uint8), torch.zeros(3, *hw, dtype=torch.uint8))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf(bad):
    g = np.full((20, 20, 3), 0.5, np.float32)
    b = g.copy()
    b[7, 3, 1] = bad
    for f in (desra_fast.detect, desra_fast.d_map):
        with pytest.raises(ValueError, match="NaN or inf"):
            f(b, g)
        with pytest.raises(ValueError, match="NaN or inf"):
            f(g, b)
    tg, tb = torch.from_numpy(g).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        desra_fast.detect(tg, tb)
    with pytest.raises(ValueError, match="NaN or inf"):
        desra_fast.detect(tb.to(torch.bfloat16), tg.to(torch.bfloat16))


def test_float_out_of_range_suggests_dividing():
    g = np.full((20, 20, 3), 128.0, np.float32)  # 0..255 data passed as float
    with pytest.raises(ValueError, match="255"):
        desra_fast.detect(g, g)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        desra_fast.d_map(g / 255 - 0.6, g / 255)
    t = torch.full((3, 20, 20), 2.0)
    with pytest.raises(ValueError, match="255"):
        desra_fast.detect(t, t)


def test_float_range_boundaries():
    base = np.full((20, 20, 3), 0.5)
    for ok in (1.049, -0.049, 1.0, 0.0):
        g = base.copy()
        g[3, 4, 2] = ok
        assert desra_fast.d_map(g, base).shape == (10, 10)
    for bad in (1.051, -0.051, 255.0):
        g = base.copy()
        g[3, 4, 2] = bad
        with pytest.raises(ValueError, match="255"):
            desra_fast.detect(g, base)
        with pytest.raises(ValueError, match="255"):
            desra_fast.detect(base, g)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, np.complex128, object])
def test_non_image_dtypes_are_type_errors(dtype):
    a = np.zeros((20, 20, 3), dtype=dtype)
    for f in (desra_fast.detect, desra_fast.d_map):
        with pytest.raises(TypeError, match=r"bool|complex|object"):
            f(a, a)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_other_integer_dtypes_are_type_errors(dtype):
    a = np.zeros((20, 20, 3), dtype=dtype)
    with pytest.raises(TypeError, match="dtype"):
        desra_fast.detect(a, a)
    with pytest.raises(TypeError, match="dtype"):
        desra_fast.d_map(a, a)


@pytest.mark.parametrize("dtype", ["bool", "int32", "int64", "int16", "complex64"])
def test_torch_bad_dtypes(dtype):
    t = torch.zeros(3, 20, 20, dtype=getattr(torch, dtype))
    with pytest.raises(TypeError, match=r"bool|complex|dtype"):
        desra_fast.detect(t, t)


def test_mixing_numpy_and_torch():
    a = small()
    t = torch.zeros(3, 20, 20, dtype=torch.uint8)
    with pytest.raises(TypeError, match="numpy.*torch|torch.*numpy"):
        desra_fast.detect(a, t)
    with pytest.raises(TypeError, match="numpy.*torch|torch.*numpy"):
        desra_fast.d_map(t, a)


def test_not_arrays():
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        desra_fast.detect([[0] * 20] * 20, [[0] * 20] * 20)
    with pytest.raises(TypeError):
        desra_fast.detect(None, None)


def test_seg_errors():
    a = small(30, 40)
    with pytest.raises(ValueError, match="seg"):
        desra_fast.detect(a, a, np.zeros((30, 41), np.uint8))
    with pytest.raises(ValueError, match="seg"):
        desra_fast.detect(a, a, np.zeros((20, 30), np.uint8))  # the cropped size is not accepted by detect
    with pytest.raises(ValueError, match="seg"):
        desra_fast.detect(a, a, np.zeros((2, 30, 40), np.uint8))
    with pytest.raises(ValueError, match="seg"):
        desra_fast.detect(a, a, np.zeros((30, 40, 3), np.uint8))
    for bad in (150, 255):
        s = np.zeros((30, 40), np.uint8)
        s[3, 4] = bad
        with pytest.raises(ValueError, match="0..149"):
            desra_fast.detect(a, a, s)
    s = np.zeros((30, 40), np.int32)
    s[0, 0] = -1
    with pytest.raises(ValueError, match="0..149"):
        desra_fast.detect(a, a, s)
    with pytest.raises(ValueError, match="0..149"):
        desra_fast.detect(torch.zeros(3, 30, 40, dtype=torch.uint8), torch.zeros(3, 30, 40, dtype=torch.uint8),
                          torch.full((30, 40), 150))
    with pytest.raises(TypeError, match="seg"):
        desra_fast.detect(a, a, np.zeros((30, 40), np.float32))
    batch = np.zeros((2, 30, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="seg"):
        desra_fast.detect(batch, batch, np.zeros((30, 40), np.uint8))
    with pytest.raises(ValueError, match="seg"):
        desra_fast.detect(batch, batch, np.zeros((3, 30, 40), np.uint8))


def test_unknown_window_and_backend():
    a = small()
    for f in (desra_fast.detect, desra_fast.d_map):
        with pytest.raises(ValueError, match="window"):
            f(a, a, window="hann")
        with pytest.raises(ValueError, match="backend"):
            f(a, a, backend="gpu")
        with pytest.raises(ValueError, match="backend"):
            f(a, a, backend="triton")  # numpy inputs cannot run on Triton


def test_weight_errors():
    a = small()
    seg = np.zeros((20, 20), np.uint8)
    with pytest.raises(ValueError, match="150"):
        desra_fast.detect(a, a, seg, weights=np.ones(149))
    with pytest.raises(ValueError, match="150"):
        desra_fast.load_weights(np.ones((150, 1)))
    with pytest.raises(ValueError, match="unknown.*'skyy'|'skyy'"):
        desra_fast.detect(a, a, seg, weights={"skyy": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        desra_fast.detect(a, a, seg, weights={"sky": -1.0})
    w = np.ones(150)
    w[3] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        desra_fast.detect(a, a, seg, weights=w)
    for bad in (np.nan, np.inf):
        w = np.ones(150)
        w[7] = bad
        with pytest.raises(ValueError, match="finite"):
            desra_fast.detect(a, a, seg, weights=w)
        with pytest.raises(ValueError, match="finite"):
            desra_fast.load_weights({"wall": bad})
    with pytest.raises(TypeError):
        desra_fast.load_weights("sky")


def test_parameter_errors():
    a = small()
    with pytest.raises((ValueError, TypeError), match="area_threshold"):
        desra_fast.detect(a, a, area_threshold=-1)
    with pytest.raises((ValueError, TypeError), match="area_threshold"):
        desra_fast.detect(a, a, area_threshold=3.5)
    with pytest.raises((ValueError, TypeError), match="threshold"):
        desra_fast.detect(a, a, threshold=float("nan"))
    with pytest.raises((ValueError, TypeError), match="threshold"):
        desra_fast.detect(a, a, threshold="high")


def test_stage_input_errors():
    m = np.zeros((20, 20), bool)
    with pytest.raises(TypeError, match="mask"):
        desra_fast.erode(m.astype(np.float32))
    with pytest.raises(ValueError, match="mask"):
        desra_fast.dilate(np.zeros(20, bool))
    with pytest.raises(ValueError, match="mask"):
        desra_fast.fill_holes(np.zeros((2, 2, 20, 20), bool))
    with pytest.raises(ValueError, match="radius"):
        desra_fast.erode(m, radius=-1)
    with pytest.raises(ValueError, match="radius"):
        desra_fast.dilate(m, radius=1.5)
    with pytest.raises((ValueError, TypeError), match="area_threshold"):
        desra_fast.filter_components(m, area_threshold=-3)
    with pytest.raises((ValueError, TypeError), match="area_threshold"):
        desra_fast.postprocess(m, area_threshold=-3)
    d = np.full((20, 20), 0.5)
    with pytest.raises(ValueError, match="seg"):
        desra_fast.threshold(d, np.zeros((25, 25), np.uint8))
    with pytest.raises(ValueError, match="0..149"):
        desra_fast.threshold(d, np.full((20, 20), 150, np.int32))
    with pytest.raises((ValueError, TypeError), match="d "):
        desra_fast.threshold(np.zeros((20, 20), np.uint8))
