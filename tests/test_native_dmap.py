"""desra_fast._C.dmap / premask (csrc/cpu/dmap.cpp) against an independent float64 oracle.

The oracle below is written from the authors' recipe (cv2.filter2D on float64, valid region,
per-channel D with C in the numerator, channel mean) and never calls desra_fast code.
Requirements checked: max |D - oracle| <= 1e-5 on every input, premask equal to the oracle's
``clip(D * W[label], 0, 1) < threshold`` pixel for pixel, ValueError on bad inputs.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from oracle import oracle_postprocess

_C = pytest.importorskip("desra_fast._C")

GAUSSIAN, BOX = 0, 1
C_CONST = (0.03 * 255) ** 2
TOL = 1e-5
SCALES = {np.uint8: 1.0, np.uint16: 255.0 / 65535.0, np.float32: 255.0, np.float64: 255.0}


# ---- independent float64 oracle -------------------------------------------------------------
def _window(window: int) -> np.ndarray:
    if window == GAUSSIAN:
        k = cv2.getGaussianKernel(11, 1.5)
        return np.outer(k, k.transpose())
    return np.ones((11, 11), dtype=np.float64) / 121.0


def _var(ch: np.ndarray, win: np.ndarray) -> np.ndarray:
    ch = np.ascontiguousarray(ch, dtype=np.float64)
    mu = cv2.filter2D(ch, -1, win)[5:-5, 5:-5]
    return cv2.filter2D(ch**2, -1, win)[5:-5, 5:-5] - mu**2


def oracle_d(gan: np.ndarray, mse: np.ndarray, window: int, scale: float) -> np.ndarray:
    """float64 (N, H-10, W-10) D map of (N, H, W, C) arrays, values used = element * scale."""
    win = _window(window)
    out = []
    for g, m in zip(gan, mse):
        g = g.astype(np.float64) * scale
        m = m.astype(np.float64) * scale
        ds = []
        for c in range(g.shape[2]):
            s1, s2 = _var(m[:, :, c], win), _var(g[:, :, c], win)
            ds.append((2 * (s1 + 1e-8) ** 0.5 * (s2 + 1e-8) ** 0.5 + C_CONST) / (s1 + s2 + C_CONST))
        out.append(np.mean(np.stack(ds, axis=0), axis=0))
    return np.stack(out)


def oracle_mask(d64: np.ndarray, labels, weights, threshold: float) -> np.ndarray:
    if labels is None:
        dp = d64
    else:
        dp = np.clip(d64 * np.asarray(weights, np.float64)[labels[:, 5:-5, 5:-5].astype(np.int64)], 0, 1)
    return dp < threshold


def d_prime(d64, labels, weights):
    return d64 if labels is None else np.clip(d64 * weights[labels[:, 5:-5, 5:-5].astype(np.int64)], 0, 1)


#: Bound on the float64 oracle's own error in D (observed up to 3e-8 on uint16 inputs).
ORACLE_RESOLUTION = 1e-7


def exact_d(gan, mse, window: int, scale: float, n: int, i: int, j: int):
    """D of one pixel (image n, window top-left (i, j)) with exact rational window sums and
    60-digit square roots: the arbiter where the float64 oracle is at its resolution."""
    from decimal import Decimal, localcontext
    from fractions import Fraction

    win = _window(window)
    sc = Fraction(float(scale))
    eps, c_const = Fraction(1e-8), Fraction(C_CONST)

    def variance(ch):
        mu = e2 = Fraction(0)
        for a in range(11):
            for b in range(11):
                wv, x = Fraction(float(win[a, b])), Fraction(ch[i + a, j + b].item()) * sc
                mu += wv * x
                e2 += wv * x * x
        return e2 - mu * mu

    def dec(f):
        return Decimal(f.numerator) / Decimal(f.denominator)

    g, m = np.asarray(gan)[n], np.asarray(mse)[n]
    with localcontext() as ctx:
        ctx.prec = 60
        total = Decimal(0)
        for c in range(g.shape[2]):
            s1, s2 = variance(m[:, :, c]), variance(g[:, :, c])
            total += (2 * dec(s1 + eps).sqrt() * dec(s2 + eps).sqrt() + dec(c_const)) / dec(s1 + s2 + c_const)
        return total / g.shape[2]


def exact_decision(gan, mse, labels, weights, threshold, window, scale, n, i, j) -> bool:
    """The pre-mask's exact value at one pixel: clip(D * W[label], 0, 1) < threshold."""
    from decimal import Decimal

    d = exact_d(gan, mse, window, scale, n, i, j)
    if labels is not None:
        w = Decimal(float(np.asarray(weights, np.float64)[int(labels[n, i + 5, j + 5])]))
        d = min(max(d * w, Decimal(0)), Decimal(1))
    return d < Decimal(float(threshold))


# ---- test images ----------------------------------------------------------------------------
def _to_dtype(img255: np.ndarray, dtype) -> np.ndarray:
    """0..255 float image -> dtype such that element * SCALES[dtype] ~ img255."""
    img255 = np.clip(img255, 0, 255)
    if dtype == np.uint8:
        return np.rint(img255).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(img255 * (65535 / 255)).astype(np.uint16)
    return (img255 / 255).astype(dtype)


def textured_pair(rng, h, w, c=3):
    """Smooth 'MSE' image and a 'GAN' image with noise texture added in part of it."""
    base = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, c)), (0, 0), 3).reshape(h, w, c)
    base = (base - base.min()) / (np.ptp(base) + 1e-9) * 200 + 20
    gan = base.copy()
    gan[: h // 2] += rng.normal(0, 20, gan[: h // 2].shape)
    return gan, base


def flat_mse_pair(rng, h, w, c=3):
    """The hard case: MSE nearly flat (var ~ 0.01..1) on a high mean, GAN textured."""
    mse = np.full((h, w, c), 200.0)
    mse += (rng.random((h, w, c)) < 0.02) * 1.0  # sparse 1-level bumps: tiny variances
    mse[:, : w // 3] += rng.normal(0, 0.3, (h, w // 3, c))  # sigma^2 ~ 0.1 (float dtypes)
    gan = 120 + rng.normal(0, 40, (h, w, c))
    gan[h // 2 :, w // 2 :] = 200.0  # and a flat/flat corner (D = 1 exactly)
    return gan, mse


def photo_pair(name, rng, crop=(160, 200)):
    from skimage import data

    img = getattr(data, name)().astype(np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    y0, x0 = (img.shape[0] - crop[0]) // 2, (img.shape[1] - crop[1]) // 2
    mse = cv2.GaussianBlur(img[y0 : y0 + crop[0], x0 : x0 + crop[1]], (0, 0), 1.0).reshape(crop + (img.shape[2],))
    gan = mse.copy()
    gan[: crop[0] // 2, : crop[1] // 2] += rng.normal(0, 15, gan[: crop[0] // 2, : crop[1] // 2].shape)
    return gan, mse


def batch(pairs, dtype):
    gan = np.stack([_to_dtype(g, dtype) for g, _ in pairs])
    mse = np.stack([_to_dtype(m, dtype) for _, m in pairs])
    return gan, mse


def check_dmap(gan, mse, window, scale):
    d = _C.dmap(gan, mse, window, scale)
    ref = oracle_d(gan, mse, window, scale)
    assert d.dtype == np.float32 and d.shape == ref.shape
    assert np.isfinite(d).all()
    err = np.abs(d.astype(np.float64) - ref).max()
    assert err <= TOL, f"max |D - oracle| = {err:.3g}"
    return d, ref


# ---- D map ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("window", [GAUSSIAN, BOX])
def test_dmap_dtypes_windows(dtype, window):
    rng = np.random.default_rng(1)
    gan, mse = batch([textured_pair(rng, 57, 70), flat_mse_pair(rng, 57, 70)], dtype)
    check_dmap(gan, mse, window, SCALES[dtype])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("c", [1, 3])
def test_dmap_flat_mse_textured_gan(dtype, c):
    # |dD/dvar_x| is large where var_x ~ 0.01..1 and var_y is large: float32 E[x^2]-mu^2 fails here.
    rng = np.random.default_rng(2)
    gan, mse = batch([flat_mse_pair(rng, 80, 96, c)], dtype)
    d, ref = check_dmap(gan, mse, GAUSSIAN, SCALES[dtype])
    assert (ref < 0.5).any() and (ref == ref.max()).any()  # the case is really exercised
    # ... and it is hard: the naive float32 E[x^2] - mu^2 misses the tolerance by orders of magnitude.
    assert np.abs(naive_float32_d(gan, mse, SCALES[dtype]) - ref).max() > 100 * TOL


def naive_float32_d(gan, mse, scale):
    """What a straightforward float32 implementation computes (cv2.filter2D in float32)."""
    win = _window(GAUSSIAN).astype(np.float32)
    out = []
    for g, m in zip(gan, mse):
        ds = []
        for c in range(g.shape[2]):
            v = []
            for im in (m, g):
                ch = np.ascontiguousarray(im[:, :, c].astype(np.float32) * np.float32(scale))
                mu = cv2.filter2D(ch, -1, win)[5:-5, 5:-5]
                v.append(np.maximum(cv2.filter2D(ch * ch, -1, win)[5:-5, 5:-5] - mu * mu, 0))
            ds.append((2 * np.sqrt(v[0] + 1e-8) * np.sqrt(v[1] + 1e-8) + C_CONST) / (v[0] + v[1] + C_CONST))
        out.append(np.mean(ds, axis=0))
    return np.stack(out)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_dmap_real_photos(name):
    rng = np.random.default_rng(3)
    gan, mse = batch([photo_pair(name, rng)], np.uint8)
    for window in (GAUSSIAN, BOX):
        check_dmap(gan, mse, window, 1.0)


@pytest.mark.parametrize("h,w", [(11, 11), (12, 11), (11, 30), (23, 17), (40, 139), (40, 266), (24, 267), (26, 139), (33, 30), (31, 523)])
@pytest.mark.parametrize("c", [1, 3])
def test_dmap_sizes(h, w, c):
    # 11x11 gives one output pixel; 139, 266, 267 and 523 end at or cross the column tile boundaries
    # (128 columns on the float64 path, 256 on the float32 path; + halo); the heights leave every
    # remainder of the 4- and 5-row vertical passes (1, 2, 13, 14, 16, 21, 23, 30 output rows).
    rng = np.random.default_rng(h * 1000 + w)
    gan = rng.integers(0, 256, (2, h, w, c), dtype=np.uint8)
    mse = rng.integers(0, 256, (2, h, w, c), dtype=np.uint8)
    d, _ = check_dmap(gan, mse, GAUSSIAN, 1.0)
    assert d.shape == (2, h - 10, w - 10)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_dmap_strided_views(dtype):
    rng = np.random.default_rng(4)
    g, m = batch([textured_pair(rng, 45, 61), flat_mse_pair(rng, 45, 61)], dtype)
    ref = oracle_d(g, m, GAUSSIAN, SCALES[dtype])
    # NCHW tensors seen as NHWC: channel stride = H*W elements.
    g_nchw, m_nchw = np.ascontiguousarray(g.transpose(0, 3, 1, 2)), np.ascontiguousarray(m.transpose(0, 3, 1, 2))
    d = _C.dmap(g_nchw.transpose(0, 2, 3, 1), m_nchw.transpose(0, 2, 3, 1), GAUSSIAN, SCALES[dtype])
    assert np.abs(d - ref).max() <= TOL
    # Step slices of a larger array, and reversed channels + negative strides.
    big_g = np.zeros((2, 90, 183, 3), dtype)
    big_m = np.zeros((2, 90, 183, 3), dtype)
    big_g[:, ::2, ::3], big_m[:, ::2, ::3] = g, m
    d = _C.dmap(big_g[:, ::2, ::3], big_m[:, ::2, ::3], GAUSSIAN, SCALES[dtype])
    assert np.abs(d - ref).max() <= TOL
    d = _C.dmap(g[:, ::-1, ::-1, ::-1], m[:, ::-1, ::-1, ::-1], GAUSSIAN, SCALES[dtype])
    assert np.abs(d - ref[:, ::-1, ::-1]).max() <= TOL  # D does not depend on channel order


def test_dmap_float_values_beyond_range_and_tiny_variance():
    # float64 input with sigma^2 ~ 1e-4..1 on a large mean, scale 1: cancellation on 255^2 values.
    rng = np.random.default_rng(5)
    mse = 250 + rng.normal(0, 1, (1, 60, 60, 3)) * np.linspace(0.01, 1, 60)[None, :, None, None]
    gan = 250 + rng.normal(0, 30, (1, 60, 60, 3))
    check_dmap(gan, mse, GAUSSIAN, 1.0)
    check_dmap(mse, mse, BOX, 1.0)


def test_dmap_identical_and_flat_inputs_never_nan():
    flat = np.full((1, 20, 20, 3), 77, np.uint8)
    d = _C.dmap(flat, flat, GAUSSIAN, 1.0)
    assert np.isfinite(d).all() and np.abs(d - 1).max() <= TOL
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (1, 30, 40, 3), dtype=np.uint8)
    d = _C.dmap(img, img, GAUSSIAN, 1.0)  # var_x == var_y -> D == 1
    assert np.abs(d - 1).max() <= TOL


def test_dmap_thread_count_does_not_change_result():
    rng = np.random.default_rng(7)
    gan, mse = batch([textured_pair(rng, 150, 300), flat_mse_pair(rng, 150, 300)], np.uint8)
    old = _C.num_threads()
    try:
        _C.set_num_threads(1)
        one = _C.dmap(gan, mse, GAUSSIAN, 1.0)
        _C.set_num_threads(2)
        two = _C.dmap(gan, mse, GAUSSIAN, 1.0)
    finally:
        _C.set_num_threads(old)
    assert np.array_equal(one, two)


# ---- premask --------------------------------------------------------------------------------
def near_tie_thresholds(dp: np.ndarray, count: int, rng, max_gap: float = 2e-6) -> list[float]:
    """Thresholds halfway between two close oracle values (gap 2e-8..2e-6): float32 D cannot tell
    these pixels apart (its error is ~1e-7), float64 can. Gaps below 2e-8 are avoided because two
    float64 evaluations (the oracle's DFT-based cv2.filter2D and direct sums) differ by up to ~1e-8
    on near-flat windows: an exact tie is below the resolution of any float64 reference."""
    v = np.unique(dp[(dp > 0) & (dp < 1)])
    gaps = np.diff(v)
    idx = np.flatnonzero((gaps > 2e-8) & (gaps < max_gap))
    assert idx.size > 0, "no near-ties in this image"
    pick = rng.choice(idx, size=min(count, idx.size), replace=False)
    return [float((v[i] + v[i + 1]) / 2) for i in pick]


def check_premask(gan, mse, labels, weights, threshold, window, scale, d64=None):
    if d64 is None:
        d64 = oracle_d(gan, mse, window, scale)
    got = _C.premask(gan, mse, labels, weights, threshold, window, scale)
    want = oracle_mask(d64, labels, weights, threshold)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert set(np.unique(got)) <= {0, 1}
    bad = np.argwhere(got.astype(bool) != want)
    # The float64 oracle is itself rounded: E[x^2] - mu^2 of large, near-flat values loses ~1e-8
    # of D (more with uint16's scale, and cv2.filter2D rounds differently on each SIMD path). A
    # pixel that the oracle puts within that resolution of the threshold is decided by the exact
    # value of D (rational window sums, 60-digit square roots), never by either float evaluation.
    bad = [tuple(int(v) for v in b) for b in bad
           if not (abs(d_prime(d64, labels, weights)[tuple(b)] - threshold) < ORACLE_RESOLUTION
                   and bool(got[tuple(b)]) == exact_decision(gan, mse, labels, weights, threshold,
                                                             window, scale, *b))]
    assert not bad, f"{len(bad)} pixels differ, first {bad[:3]}, threshold {threshold!r}"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("window", [GAUSSIAN, BOX])
def test_premask_without_labels(dtype, window):
    rng = np.random.default_rng(8)
    gan, mse = batch([textured_pair(rng, 64, 90), flat_mse_pair(rng, 64, 90)], dtype)
    d64 = oracle_d(gan, mse, window, SCALES[dtype])
    for thr in [0.7, 0.5, 0.95, 1.0, 1.5, 0.0, -1.0] + near_tie_thresholds(d64, 3, rng):
        check_premask(gan, mse, None, None, thr, window, SCALES[dtype], d64)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_premask_real_photos_with_labels_and_random_weights(name):
    rng = np.random.default_rng(9)
    gan, mse = batch([photo_pair(name, rng)], np.uint8)
    labels = rng.integers(0, 150, gan.shape[:3], dtype=np.uint8)
    labels[:, 40:90, 50:150] = 2  # a large region of one class, like a real segmentation
    weights = rng.uniform(0.5, 2.0, 150)
    weights[[0, 7]] = [-0.5, 0.0]  # clip(<= 0) < t for any t > 0
    d64 = oracle_d(gan, mse, GAUSSIAN, 1.0)
    dp = d_prime(d64, labels, weights)
    for thr in [0.7, 0.3] + near_tie_thresholds(dp, 4, rng):
        check_premask(gan, mse, labels, weights, thr, GAUSSIAN, 1.0, d64)
    # Labels as a non-contiguous view (full-size, read at the +5 offset).
    big = np.zeros((1, gan.shape[1], gan.shape[2] * 2), np.uint8)
    big[:, :, ::2] = labels
    check_premask(gan, mse, big[:, :, ::2], weights, 0.7, GAUSSIAN, 1.0, d64)


def test_premask_non_finite_tiny_and_huge_weights():
    # The kernel compares D with a per-class threshold t / W; weights whose decision does not
    # depend on D (W <= 0, +inf, NaN) or that push t / W far out of range must still follow numpy's
    # clip(D * W, 0, 1) < t, for thresholds inside and outside (0, 1].
    rng = np.random.default_rng(17)
    for dtype in (np.uint8, np.float32):
        gan, mse = batch([textured_pair(rng, 60, 80), flat_mse_pair(rng, 60, 80)], dtype)
        labels = rng.integers(0, 8, gan.shape[:3], dtype=np.uint8)
        weights = np.ones(150)
        weights[:8] = [np.inf, -np.inf, np.nan, 1e-30, 1e30, -2.0, 0.0, 0.9]
        d64 = oracle_d(gan, mse, GAUSSIAN, SCALES[dtype])
        dp = d_prime(d64, labels, weights)
        finite = np.isfinite(dp) & (dp > 0) & (dp < 1)
        for thr in [0.7, 1.0, 1.5, 0.0, -1.0, 1e-31] + near_tie_thresholds(dp[finite], 3, rng):
            check_premask(gan, mse, labels, weights, thr, GAUSSIAN, SCALES[dtype], d64)


def test_float32_path_error_stays_within_its_band():
    # The float32 path's D error bound (rel * var + abs1 * sqrt(var) + abs0 per variance, see
    # csrc/cpu/dmap.cpp) must hold where it is tightest: near-flat windows on dark, middle and
    # bright levels (the row means are rounded relative to |x - K|), one-level specks and steps,
    # textured and inverted GAN images; and the band must stay small (it sets the float64 work).
    rng = np.random.default_rng(23)
    h, w = 72, 96
    for dtype, scale, k, name in ((np.uint8, 1.0, 1, "uint8"), (np.uint16, 255.0 / 65535.0, 257, "uint16")):
        for level in (0, 1, 127, 128, 200, 255):
            mse = np.full((2, h, w, 3), level, np.int64)
            mse[0] += (rng.random((h, w, 3)) < 0.03) * rng.choice([-1, 1], (h, w, 3))
            mse[1] += (np.arange(w)[None, :, None] // 5) % 2
            mse = np.clip(mse, 0, 255)
            gan = mse + rng.normal(0, 20, mse.shape) * (rng.random((2, h, 1, 1)) < 0.6)
            gan[:, :, : w // 4] = 255 - mse[:, :, : w // 4]
            g = np.clip(np.rint(gan), 0, 255).astype(np.int64) * k
            m = mse * k
            if dtype == np.uint16:  # single-unit specks on the uint16 scale too
                m = np.clip(m + (rng.random(m.shape) < 0.02), 0, 65535)
            g, m = g.astype(dtype), m.astype(dtype)
            for window in (GAUSSIAN, BOX):
                band = _C._error_band32(window, name, scale)
                assert band < (3e-4 if window == GAUSSIAN else 4e-4)
                for a, b in ((g, m), (m, g)):
                    err = np.abs(_C.dmap(a, b, window, scale).astype(np.float64) - oracle_d(a, b, window, scale)).max()
                    assert err <= min(band, TOL), (name, level, window, err, band)


def test_d_formula_error_within_its_bound():
    # Float inputs take float64 moments (variance error <= kMainVarErr a^2, a = 127.5 after
    # centring), so the D map's error is mostly that of the float32 D formula (kEvalErr32 in
    # csrc/cpu/dmap.cpp: the hardware 1/sqrt and 1/x estimates with one Newton step each on
    # AVX-512 and AVX2, sqrtf and a division elsewhere). Its stated bound on the D map output,
    # 2 * 653.7 * kMainVarErr * a^2 + kEvalErr32 (~1.6e-6, six times tighter than TOL), must hold
    # on flat, textured and inverted windows, where D spans (0, 1].
    bound = 2 * 653.7 * (80 * 2.0**-53) * 127.5**2 + 24 * 2.0**-24
    rng = np.random.default_rng(31)
    for dtype in (np.float64, np.float32):
        pairs = [textured_pair(rng, 64, 90), flat_mse_pair(rng, 64, 90)]
        inv = textured_pair(rng, 64, 90)
        pairs.append((255 - inv[0], inv[1]))
        noise = rng.uniform(0, 255, (64, 90, 3))
        pairs.append((noise, cv2.GaussianBlur(noise, (0, 0), 2)))
        gan, mse = batch(pairs, dtype)
        for window in (GAUSSIAN, BOX):
            d64 = oracle_d(gan, mse, window, SCALES[dtype])
            assert d64.min() < 0.05 and d64.max() > 0.999  # the formula's whole range is exercised
            err = np.abs(_C.dmap(gan, mse, window, SCALES[dtype]).astype(np.float64) - d64).max()
            assert err <= bound, (dtype, window, err, bound)


# ---- fused detect (premask into a reused per-thread buffer, then postprocess) -----------------
def check_fused_detect(gan, mse, labels, weights, threshold, area, out_dtype=np.bool_, window=GAUSSIAN, scale=1.0):
    """_C.detect against the float64 pre-mask oracle followed by the oracle's morphology."""
    d64 = oracle_d(gan, mse, window, scale)
    pre = oracle_mask(d64, labels, weights, threshold)
    n, h, w = pre.shape
    full = np.full((n, h + 10, w + 10), 3, np.uint8).astype(out_dtype)  # frame must stay untouched
    counts = _C.detect(gan, mse, labels, weights, threshold, window, scale, area, full[:, 5:-5, 5:-5])
    assert counts.dtype == np.int64 and counts.shape == (n,)
    for i in range(n):
        want = oracle_postprocess(pre[i], area)
        got = full[i, 5:-5, 5:-5].astype(bool)
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"image {i}: {len(bad)} pixels differ, first {bad[:3].tolist()}"
        assert counts[i] == cv2.connectedComponents(want.astype(np.uint8), connectivity=8)[0] - 1
        frame = full[i].copy()
        frame[5:-5, 5:-5] = 3
        assert (frame.astype(np.uint8) == np.uint8(np.array(3).astype(out_dtype))).all()


def test_fused_detect_matches_oracle_as_its_buffer_grows_and_shrinks():
    """Consecutive calls of different sizes reuse one pre-mask buffer: stale bytes of a larger
    earlier call must never show in a smaller later one, nor a small buffer overflow."""
    rng = np.random.default_rng(21)
    big = batch([textured_pair(rng, 180, 230) for _ in range(3)], np.uint8)
    small = batch([flat_mse_pair(rng, 60, 71)], np.uint8)
    mid = batch([photo_pair("astronaut", rng, crop=(120, 150)) for _ in range(2)], np.uint8)
    for (gan, mse), area in ((small, 10), (big, 300), (small, 10), (mid, 150), (big, 0)):
        check_fused_detect(gan, mse, None, None, 0.7, area)
    labels = rng.integers(0, 150, mid[0].shape[:3], dtype=np.uint8)
    labels[:, 30:90, 20:130] = 2
    weights = rng.uniform(0.5, 2.0, 150)
    check_fused_detect(*mid, labels, weights, 0.6, 150, out_dtype=np.uint8)
    # float inputs (the float64-moment kernel, 128-column tiles), widths across word boundaries
    wide = [textured_pair(rng, 70, 70 + 64 * 2 + 13), flat_mse_pair(rng, 70, 70 + 64 * 2 + 13)]
    check_fused_detect(*[np.stack([p[j] for p in wide]).astype(np.float32) for j in (0, 1)], None, None, 0.7, 60)


# ---- detect's eroded-only pre-mask -----------------------------------------------------------
# For integer inputs _C.detect computes D on every fifth row first and then only where the 5x5
# erosion can keep a pixel (csrc/cpu/premask_eroded_kernels.inc). Labels draw exact pre-mask
# shapes for it: class 0 (weight 0) is always set, class 1 (weight 1e6: D * W clips to 1) never,
# class 2 (weight 1) is D's own decision. Shapes of every size around the 5x5 window, at every
# offset from the screened rows and against every border, must give the oracle's masks.
DRAW_WEIGHTS = np.ones(150)
DRAW_WEIGHTS[0], DRAW_WEIGHTS[1] = 0.0, 1e6


def drawn_labels(rng, n, h, w, shapes=40, d_share=0.3):
    labels = np.ones((n, h, w), np.uint8)
    for i in range(n):
        labels[i, :, : int(w * d_share)] = 2  # a band decided by D itself
        for _ in range(shapes):
            sh, sw = rng.integers(1, 10, 2)
            y = rng.integers(5 - 2, max(6, h - 5 - sh + 3))  # may touch or cross the borders
            x = rng.integers(5 - 2, max(6, w - 5 - sw + 3))
            labels[i, y : y + sh, x : x + sw] = 0
        # 3-pixel-deep bars along the bottom and right borders of the valid region: there only
        # the last row / column is a screened row within a clipped window.
        x = rng.integers(5, max(6, w - 12))
        labels[i, h - 8 : h - 5, x : x + 7] = 0
        y = rng.integers(5, max(6, h - 12))
        labels[i, y : y + 7, w - 8 : w - 5] = 0
    return labels


@pytest.mark.parametrize("h, w", [(11, 11), (13, 40), (15, 75), (16, 75), (17, 75), (19, 140), (74, 139)])
def test_detect_eroded_premask_on_drawn_shapes(h, w):
    rng = np.random.default_rng(h * 1000 + w)
    gan, mse = batch([textured_pair(rng, h, w), flat_mse_pair(rng, h, w)], np.uint8)
    labels = drawn_labels(rng, 2, h, w, shapes=max(2, h * w // 150))
    for area in (0, 12):
        check_fused_detect(gan, mse, labels, DRAW_WEIGHTS, 0.7, area)


def test_detect_eroded_premask_dtypes_strides_and_dense_inputs():
    rng = np.random.default_rng(5)
    h, w = 90, 150
    gan, mse = batch([textured_pair(rng, h, w), photo_pair("astronaut", rng, (h, w))], np.uint8)
    labels = drawn_labels(rng, 2, h, w)
    # strided views (the evaluator converts rows through a scratch instead of reading bytes)
    check_fused_detect(gan[:, ::-1], mse[:, :, ::-1], labels, DRAW_WEIGHTS, 0.7, 5)
    g16, m16 = batch([textured_pair(rng, h, w, c=1), flat_mse_pair(rng, h, w, c=1)], np.uint16)
    check_fused_detect(g16, m16, labels, DRAW_WEIGHTS, 0.7, 5, scale=SCALES[np.uint16])
    check_fused_detect(g16, m16, labels, DRAW_WEIGHTS, 0.7, 5, window=BOX, scale=SCALES[np.uint16])
    # dense pre-masks: everything set (the full pass takes over), a threshold above 1
    check_fused_detect(gan, mse, np.zeros_like(labels), DRAW_WEIGHTS, 0.7, 5)
    check_fused_detect(gan, mse, None, None, 1.5, 5)
    # near-threshold pixels inside the shapes and in the D band: the float64 fallback decides them
    d64 = oracle_d(gan, mse, GAUSSIAN, 1.0)
    for thr in near_tie_thresholds(d64, 4, rng):
        check_fused_detect(gan, mse, labels, DRAW_WEIGHTS, thr, 0)


def test_detect_eroded_premask_mixed_batches_and_non_finite_weights():
    rng = np.random.default_rng(14)
    h, w = 80, 140
    gan, mse = batch([textured_pair(rng, h, w), flat_mse_pair(rng, h, w), textured_pair(rng, h, w)], np.uint8)
    labels = drawn_labels(rng, 3, h, w)
    labels[1] = 0  # one dense image in a batch of sparse ones
    check_fused_detect(gan, mse, labels, DRAW_WEIGHTS, 0.7, 0)
    labels = drawn_labels(rng, 3, h, w)
    labels[:, 20:60, 30:110] = rng.integers(2, 9, (3, 40, 80))  # D-decided classes 2..8
    weights = DRAW_WEIGHTS.copy()
    weights[3:9] = [np.inf, -np.inf, np.nan, 1e-30, 1e30, 0.8]
    for thr in (0.7, 1.0, 0.0, -1.0, np.nan):
        check_fused_detect(gan, mse, labels, weights, thr, 0)


def test_detect_eroded_premask_screens_in_pixels_only_float64_sets():
    # 5x5 blocks whose centre pixel lies on a screened row (a multiple of 5) and is the only pixel
    # of its block decided by D: its class weight puts D * W 1e-9 (relative) below the threshold,
    # far beyond float32 resolution. The screening must count such a pixel as possibly set (it is
    # set in float64), or the block's eroded centre, and its dilated 13x13 square, would vanish.
    rng = np.random.default_rng(12)
    h, w = 70, 160
    gan, mse = batch([textured_pair(rng, h, w)], np.uint8)
    d64 = oracle_d(gan, mse, GAUSSIAN, 1.0)[0]
    labels = np.ones((1, h, w), np.uint8)
    weights = DRAW_WEIGHTS.copy()
    k = 3
    for r in range(10, h - 10 - 5, 10):
        for c in range(5, w - 10 - 5, 10):
            labels[0, r + 3 : r + 8, c + 3 : c + 8] = 0
            labels[0, r + 5, c + 5] = k
            weights[k] = 0.7 / d64[r, c] * (1 - 1e-9)
            k += 1
    assert k > 50
    check_fused_detect(gan, mse, labels, weights, 0.7, 0)


def test_detect_eroded_premask_skips_most_pixels_of_a_sparse_mask():
    # 240 x 320 output, a few shapes: D evaluated on about every fifth row plus the shapes'
    # neighbourhoods, far below the full pre-mask's count; masks still the oracle's.
    rng = np.random.default_rng(8)
    h, w = 250, 330
    gan, mse = batch([textured_pair(rng, h, w)], np.uint8)
    labels = drawn_labels(rng, 1, h, w, shapes=30, d_share=0.0)
    out = np.zeros((1, h - 10, w - 10), np.uint8)
    _C._premask_evaluated_count(True)
    _C.detect(gan, mse, labels, DRAW_WEIGHTS, 0.7, GAUSSIAN, 1.0, 0, out)
    evaluated = _C._premask_evaluated_count(True)
    assert (h - 10) * (w - 10) / 5 < evaluated < 0.45 * (h - 10) * (w - 10)
    check_fused_detect(gan, mse, labels, DRAW_WEIGHTS, 0.7, 0)
    # the same call on a dense pre-mask evaluates every pixel (plus part of the screening)
    _C.detect(gan, mse, np.zeros_like(labels), DRAW_WEIGHTS, 0.7, GAUSSIAN, 1.0, 0, out)
    assert _C._premask_evaluated_count(True) >= (h - 10) * (w - 10)


def test_detect_eroded_premask_checks_labels_it_does_not_need():
    rng = np.random.default_rng(9)
    gan, mse = batch([textured_pair(rng, 60, 80)], np.uint8)
    labels = np.ones((1, 60, 80), np.uint8)  # class 1: nothing set, so no pixel is evaluated
    labels[0, 40, 70] = 200
    out = np.zeros((1, 50, 70), np.uint8)
    with pytest.raises(ValueError, match="< 150"):
        _C.detect(gan, mse, labels, DRAW_WEIGHTS, 0.7, GAUSSIAN, 1.0, 0, out)
    labels[0, 40, 70] = 1
    labels[0, 2, 3] = 200  # outside the pixels the pre-mask reads (label (y + 5, x + 5))
    _C.detect(gan, mse, labels, DRAW_WEIGHTS, 0.7, GAUSSIAN, 1.0, 0, out)
    assert not out.any()


def test_fused_detect_bad_inputs_raise_value_error():
    rng = np.random.default_rng(2)
    gan, mse = batch([textured_pair(rng, 40, 50)], np.uint8)
    ok = np.zeros((1, 30, 40), np.bool_)
    with pytest.raises(ValueError, match="valid region"):
        _C.detect(gan, mse, None, None, 0.7, GAUSSIAN, 1.0, 10, np.zeros((1, 40, 50), np.bool_))
    with pytest.raises(ValueError, match="valid region"):
        _C.detect(gan, mse, None, None, 0.7, GAUSSIAN, 1.0, 10, np.zeros((2, 30, 40), np.bool_))
    with pytest.raises(ValueError, match="dtype"):
        _C.detect(gan, mse, None, None, 0.7, GAUSSIAN, 1.0, 10, np.zeros((1, 30, 40), np.float32))
    ro = ok.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _C.detect(gan, mse, None, None, 0.7, GAUSSIAN, 1.0, 10, ro)
    with pytest.raises(ValueError, match="area_threshold"):
        _C.detect(gan, mse, None, None, 0.7, GAUSSIAN, 1.0, -1, ok)
    with pytest.raises(ValueError, match="shapes differ"):
        _C.detect(gan, mse[:, :-1], None, None, 0.7, GAUSSIAN, 1.0, 10, ok)
    with pytest.raises(ValueError, match="< 150"):
        _C.detect(gan, mse, np.full(gan.shape[:3], 200, np.uint8), np.ones(150), 0.7, GAUSSIAN, 1.0, 10, ok)
    assert not ok.any()  # nothing written by the failed calls


def test_premask_float_values_outside_0_255():
    # Float inputs are not clamped: the kernel's error band grows with the magnitudes it reads.
    rng = np.random.default_rng(13)
    gan, mse = textured_pair(rng, 60, 70)
    gan, mse = (gan * 2.5 - 200)[None], (mse * 2.5 - 200)[None]  # about -150..400
    d64 = oracle_d(gan, mse, GAUSSIAN, 1.0)
    assert np.abs(_C.dmap(gan, mse, GAUSSIAN, 1.0) - d64).max() <= TOL
    for thr in [0.7] + near_tie_thresholds(d64, 5, rng):
        check_premask(gan, mse, None, None, thr, GAUSSIAN, 1.0, d64)


def test_premask_near_threshold_stress_uses_float64_fallback():
    # Many thresholds placed between nearly tied oracle values: the decisions there are beyond
    # float32 resolution and must come from the float64 recomputation (counted by the kernel).
    rng = np.random.default_rng(10)
    gan, mse = batch([photo_pair("astronaut", rng, (120, 160)), flat_mse_pair(rng, 120, 160)], np.uint8)
    d64 = oracle_d(gan, mse, GAUSSIAN, 1.0)
    _C._premask_fallback_count(True)
    for thr in near_tie_thresholds(d64, 40, rng, max_gap=4e-7):
        check_premask(gan, mse, None, None, thr, GAUSSIAN, 1.0, d64)
    assert _C._premask_fallback_count(True) >= 40  # each threshold sits between two pixels' D


def test_premask_threshold_equal_to_oracle_value():
    # threshold = an oracle D' value itself (quantiles of the pixels whose D' has no other pixel
    # within 1e-9; repeated values such as D = 1 times a class weight are ties by construction).
    # Every other pixel is more than 1e-9 away -- far above float64 noise, far below float32
    # resolution -- and must be decided exactly; the tied pixel itself is float64 noise.
    rng = np.random.default_rng(11)
    gan, mse = batch([textured_pair(rng, 100, 120)], np.uint8)
    labels = rng.integers(0, 150, gan.shape[:3], dtype=np.uint8)
    weights = rng.uniform(0.8, 1.25, 150)
    d64 = oracle_d(gan, mse, GAUSSIAN, 1.0)
    dp = d_prime(d64, labels, weights)
    v = np.sort(dp.ravel())
    gap = np.minimum(np.diff(v, prepend=-np.inf), np.diff(v, append=np.inf))
    lonely = v[(gap > 1e-9) & (v > 0) & (v < 1)]
    for q in [0.5, 0.1, 0.9, 0.3]:
        t = float(np.quantile(lonely, q, method="nearest"))
        got = _C.premask(gan, mse, labels, weights, t, GAUSSIAN, 1.0).astype(bool)
        decided = np.abs(dp - t) > 1e-9
        assert np.count_nonzero(~decided) == 1
        assert np.array_equal(got[decided], (dp < t)[decided])


def test_premask_without_labels_equals_dmap_threshold_far_from_band():
    rng = np.random.default_rng(12)
    gan, mse = batch([textured_pair(rng, 50, 50)], np.float32)
    d = _C.dmap(gan, mse, GAUSSIAN, 255.0)
    m = _C.premask(gan, mse, None, None, 0.7, GAUSSIAN, 255.0)
    far = np.abs(d - 0.7) > 1e-4
    assert np.array_equal(m.astype(bool)[far], (d < 0.7)[far])


# ---- bad inputs -----------------------------------------------------------------------------
def _ok(shape=(1, 20, 20, 3), dtype=np.uint8):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "gan,mse,window,scale",
    [
        (_ok((20, 20, 3)), _ok((20, 20, 3)), 0, 1.0),  # 3-D
        (_ok(), _ok((1, 20, 21, 3)), 0, 1.0),  # shapes differ
        (_ok((1, 20, 20, 2)), _ok((1, 20, 20, 2)), 0, 1.0),  # C = 2
        (_ok((1, 20, 20, 4)), _ok((1, 20, 20, 4)), 0, 1.0),  # C = 4
        (_ok((1, 10, 20, 3)), _ok((1, 10, 20, 3)), 0, 1.0),  # H < 11
        (_ok((1, 20, 10, 3)), _ok((1, 20, 10, 3)), 0, 1.0),  # W < 11
        (_ok((0, 20, 20, 3)), _ok((0, 20, 20, 3)), 0, 1.0),  # empty batch
        (_ok(dtype=np.int32), _ok(dtype=np.int32), 0, 1.0),  # unsupported dtype
        (_ok(dtype=np.float16), _ok(dtype=np.float16), 0, 1.0),
        (_ok(dtype=np.uint8), _ok(dtype=np.uint16), 0, 1.0),  # dtypes differ
        (_ok(), _ok(), 2, 1.0),  # unknown window
        (_ok(), _ok(), 0, 0.0),  # scale
        (_ok(), _ok(), 0, float("nan")),
    ],
)
def test_bad_inputs_raise_value_error(gan, mse, window, scale):
    with pytest.raises(ValueError):
        _C.dmap(gan, mse, window, scale)
    with pytest.raises(ValueError):
        _C.premask(gan, mse, None, None, 0.7, window, scale)


@pytest.mark.parametrize(
    "labels,weights",
    [
        (np.zeros((1, 20, 20), np.int32), np.ones(150)),  # labels dtype
        (np.zeros((1, 10, 10), np.uint8), np.ones(150)),  # labels shape (cropped, not full size)
        (np.zeros((20, 20), np.uint8), np.ones(150)),  # labels ndim
        (np.zeros((1, 20, 20), np.uint8), np.ones(149)),  # weights length
        (np.zeros((1, 20, 20), np.uint8), np.ones((150, 1))),
        (np.zeros((1, 20, 20), np.uint8), None),  # labels without weights
        (np.full((1, 20, 20), 150, np.uint8), np.ones(150)),  # label out of range
    ],
)
def test_premask_bad_labels_weights(labels, weights):
    with pytest.raises(ValueError):
        _C.premask(_ok(), _ok(), labels, weights, 0.7, 0, 1.0)
