"""desra_fast.detect against the independent OpenCV/scipy float64 oracle (tests/oracle.py).

Every case checks: full H x W bool output, 5-pixel frame False, interior identical to the
authors' pipeline. The data (tests/images.py) is built so that regions both survive and fail the
area filter (asserted in test_data_has_kept_and_dropped_regions, so these tests can fail).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import desra_fast
import images as I
from oracle import (BORDER, mask_diff, oracle_component_areas, oracle_detect, oracle_dmap,
                    oracle_postprocess, oracle_threshold, oracle_components, oracle_postprocess_steps,
                    oracle_weights)

GENERATORS = {"photo": I.photo_pair, "synthetic": I.synthetic_pair}
SMALL_AREAS = (0, 30, 200, 4000)
MEDIUM_AREAS = (0, 500, 2500, 4000)
THRESHOLDS = (0.7, 0.55, 0.85)


def check_full_mask(got, H, W):
    assert isinstance(got, np.ndarray), type(got)
    assert got.dtype == np.bool_, got.dtype
    assert got.shape == (H, W), got.shape
    assert not got[:BORDER].any() and not got[-BORDER:].any(), "top/bottom 5-px frame must be False"
    assert not got[:, :BORDER].any() and not got[:, -BORDER:].any(), "left/right 5-px frame must be False"


def run_matrix(gan, mse, areas, thresholds, windows=("gaussian", "box"), segs=(None,), backend="cpu", label=""):
    """Compare detect with the oracle on every combination; returns (kept, dropped) region counts
    of the oracle so callers can check the data exercised both outcomes of the area filter."""
    H, W = gan.shape[:2]
    kept = dropped = 0
    for window in windows:
        d = oracle_dmap(gan, mse, window)
        for seg_i, seg in enumerate(segs):
            for thr in thresholds:
                pre_filter = oracle_postprocess_steps(oracle_threshold(d, seg, thr))
                _, areas_found = oracle_components(pre_filter)
                for area in areas:
                    expected = np.zeros((H, W), bool)
                    expected[BORDER:-BORDER, BORDER:-BORDER] = oracle_postprocess(
                        oracle_threshold(d, seg, thr), area)
                    got = desra_fast.detect(gan, mse, seg, threshold=thr, area_threshold=area,
                                            window=window, backend=backend)
                    check_full_mask(got, H, W)
                    assert np.array_equal(got, expected), (
                        f"{label} {H}x{W} window={window} seg#{seg_i}={'yes' if seg is not None else 'no'} "
                        f"threshold={thr} area_threshold={area}: {mask_diff(got, expected)}")
                    kept += int((areas_found > area).sum())
                    dropped += int((areas_found <= area).sum())
    return kept, dropped


@pytest.mark.parametrize("size", I.SMALL_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("gen", sorted(GENERATORS))
def test_small_images_match_oracle(gen, size):
    h, w = size
    seed = 1000 + 7 * h + w + (0 if gen == "photo" else 1)
    gan, mse = GENERATORS[gen](h, w, seed)
    seg = I.blocky_seg(h, w, seed)
    run_matrix(gan, mse, SMALL_AREAS, THRESHOLDS, segs=(None, seg), label=f"{gen} seed={seed}")


@pytest.mark.parametrize("rep", [0, 1])
@pytest.mark.parametrize("size", I.MEDIUM_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("gen", sorted(GENERATORS))
def test_medium_images_match_oracle(gen, size, rep):
    h, w = size
    seed = 2000 + h + w + (0 if gen == "photo" else 1) + 10000 * rep
    gan, mse = GENERATORS[gen](h, w, seed)
    seg = I.blocky_seg(h, w, seed, block=24)
    kept, dropped = run_matrix(gan, mse, MEDIUM_AREAS, (0.7, 0.6), segs=(None, seg), label=f"{gen} seed={seed}")
    assert kept > 0, "test data should contain regions that survive the area filter"


@pytest.mark.slow
@pytest.mark.parametrize("case", [("photo", 1000, 1000, 11), ("synthetic", 1023, 977, 12), ("photo", 1024, 1023, 13)],
                         ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}")
def test_megapixel_images_match_oracle(case):
    gen, h, w, seed = case
    gan, mse = GENERATORS[gen](h, w, seed)
    seg = I.blocky_seg(h, w, seed, block=64)
    kept, dropped = run_matrix(gan, mse, (4000, 15000), (0.7,), windows=("gaussian",), segs=(None, seg),
                               label=f"{gen} seed={seed}")
    assert kept > 0 and dropped > 0, (kept, dropped)


def test_megapixel_box_window_auto_backend():
    gan, mse = I.photo_pair(999, 1001, 21)
    kept, dropped = run_matrix(gan, mse, (4000,), (0.7,), windows=("box",), backend="auto", label="photo auto")
    assert kept > 0


@pytest.mark.parametrize("name", ["rocket", "motorcycle"])
def test_real_pairs_match_oracle(name):
    gan, mse = I.real_pair(name)
    H, W = gan.shape[:2]
    seg = I.blocky_seg(H, W, 5, block=40, labels=[2, 1, 4, 12, 20, 25, 84, 144])
    kept, dropped = run_matrix(gan, mse, (0, 300, 4000), (0.7, 0.65, 0.75), segs=(None, seg), label=name)
    assert dropped > 0


def test_real_rocket_default_parameters_keep_and_drop():
    """With the authors' defaults the rocket pair has regions of 3466..4971 px around the 4000 cut:
    the default call must keep exactly those above it."""
    gan, mse = I.real_pair("rocket")
    areas = oracle_component_areas(gan, mse)
    assert (areas > 4000).any() and (areas <= 4000).any(), areas
    expected = oracle_detect(gan, mse)
    got = desra_fast.detect(gan, mse)
    check_full_mask(got, *gan.shape[:2])
    assert np.array_equal(got, expected), mask_diff(got, expected)
    assert got.any()


def test_default_backend_small_auto():
    gan, mse = I.synthetic_pair(150, 201, 3)
    expected = oracle_detect(gan, mse, area_threshold=200)
    assert expected.any()
    got = desra_fast.detect(gan, mse, area_threshold=200)
    assert np.array_equal(got, expected), mask_diff(got, expected)


def test_data_has_kept_and_dropped_regions():
    """The matrices above must exercise both outcomes of the area filter for every non-zero
    area_threshold (otherwise a broken filter could pass)."""
    for areas, sizes, segs_block in ((SMALL_AREAS, I.SMALL_SIZES, None), (MEDIUM_AREAS, I.MEDIUM_SIZES, 24)):
        found = []
        for gen, (h, w) in itertools.product(sorted(GENERATORS), sizes):
            if segs_block is None:
                seed = 1000 + 7 * h + w + (0 if gen == "photo" else 1)
            else:
                seed = 2000 + h + w + (0 if gen == "photo" else 1)
            gan, mse = GENERATORS[gen](h, w, seed)
            found.append(oracle_component_areas(gan, mse))
        found = np.concatenate(found)
        for a in areas:
            if a == 0:
                assert (found > 0).any()
                continue
            if a >= 4000 and sizes is I.SMALL_SIZES:
                continue  # small images cannot hold 4000-px regions; covered by medium/large cases
            assert (found > a).any() and (found <= a).any(), (a, sorted(found.tolist()))


@pytest.mark.parametrize("window", ["gaussian", "box"])
def test_batch_equals_per_image(window):
    rng_sizes = (97, 120)
    pairs = [I.photo_pair(*rng_sizes, 300 + i) if i % 2 == 0 else I.synthetic_pair(*rng_sizes, 300 + i)
             for i in range(5)]
    gan = np.stack([p[0] for p in pairs])
    mse = np.stack([p[1] for p in pairs])
    segs = np.stack([I.blocky_seg(*rng_sizes, 400 + i) for i in range(5)])
    for seg in (None, segs):
        got = desra_fast.detect(gan, mse, seg, area_threshold=100, window=window, backend="cpu")
        assert got.shape == (5, *rng_sizes) and got.dtype == np.bool_
        assert got.any(), "test data should produce a non-empty mask"
        for i in range(5):
            s = None if seg is None else seg[i]
            single = desra_fast.detect(gan[i], mse[i], s, area_threshold=100, window=window, backend="cpu")
            expected = oracle_detect(gan[i], mse[i], s, area_threshold=100, window=window)
            assert np.array_equal(got[i], expected), f"batch item {i}: {mask_diff(got[i], expected)}"
            assert np.array_equal(single, got[i]), f"item {i}: single != batch"


def test_batch_of_one_keeps_batch_dimension():
    gan, mse = I.synthetic_pair(40, 50, 8)
    got = desra_fast.detect(gan[None], mse[None], area_threshold=10, backend="cpu")
    assert got.shape == (1, 40, 50)
    assert np.array_equal(got[0], oracle_detect(gan, mse, area_threshold=10))


def test_threshold_extremes():
    gan, mse = I.photo_pair(64, 80, 5)
    H, W = gan.shape[:2]
    # nothing is below 0: empty mask
    got = desra_fast.detect(gan, mse, threshold=0.0, area_threshold=0, backend="cpu")
    assert not got.any()
    # D' <= 1 < 1.01 everywhere: the whole interior is set (erode/dilate/fill keep it full)
    got = desra_fast.detect(gan, mse, threshold=1.01, area_threshold=0, backend="cpu")
    assert got[BORDER:-BORDER, BORDER:-BORDER].all()
    check_full_mask(got, H, W)
    # the whole interior is one component of (H-10)*(W-10) pixels: strict '>' on area
    n = (H - 10) * (W - 10)
    assert desra_fast.detect(gan, mse, threshold=1.01, area_threshold=n - 1, backend="cpu").any()
    assert not desra_fast.detect(gan, mse, threshold=1.01, area_threshold=n, backend="cpu").any()


def test_weights_vector_and_dict_match_oracle():
    gan, mse = I.photo_pair(200, 240, 77)
    H, W = gan.shape[:2]
    seg = I.blocky_seg(H, W, 78, block=20, labels=[1, 2, 4, 12, 84, 144])
    rng = np.random.default_rng(79)
    vec = rng.uniform(0, 2.5, size=150)
    for weights in (vec, list(vec), {"sky": 0.3, "tree": 2.0, "person": 0.0}, {"building": 1.0}):
        d = oracle_dmap(gan, mse)
        if isinstance(weights, dict):
            wv = oracle_weights(weights)
        else:
            wv = np.asarray(weights, float)
        pre = np.clip(d * wv[seg[5:-5, 5:-5]], 0, 1) < 0.7
        expected = np.zeros((H, W), bool)
        expected[5:-5, 5:-5] = oracle_postprocess(pre, 150)
        got = desra_fast.detect(gan, mse, seg, weights=weights, area_threshold=150, backend="cpu")
        assert np.array_equal(got, expected), f"weights={type(weights).__name__}: {mask_diff(got, expected)}"
    # weights change the result (the test can fail if weights were ignored)
    a = desra_fast.detect(gan, mse, seg, weights={"sky": 0.0, "building": 0.0, "tree": 0.0, "person": 0.0,
                                                  "tower": 0.0, "bulletin board": 0.0}, area_threshold=150)
    assert a[5:-5, 5:-5].all(), "all-zero weights give D' = 0 < 0.7 everywhere"
    b = desra_fast.detect(gan, mse, seg, area_threshold=150)
    assert not np.array_equal(a, b)


def test_seg_changes_result_and_matches_oracle():
    gan, mse = I.real_pair("motorcycle")
    H, W = gan.shape[:2]
    seg = np.full((H, W), 144, np.uint8)  # bulletin board: weight 2.22 -> D' = clip(2.22 D)
    seg[:, : W // 2] = 2  # sky: weight 1
    got = desra_fast.detect(gan, mse, seg, area_threshold=100, backend="cpu")
    expected = oracle_detect(gan, mse, seg, area_threshold=100)
    assert np.array_equal(got, expected), mask_diff(got, expected)
    plain = desra_fast.detect(gan, mse, area_threshold=100, backend="cpu")
    assert not np.array_equal(got, plain)
    # seg as other integer dtypes gives the same result
    for dt in (np.int32, np.int64, np.uint16):
        assert np.array_equal(desra_fast.detect(gan, mse, seg.astype(dt), area_threshold=100), expected)


def test_return_counts_counts_kept_regions():
    gan, mse = I.real_pair("rocket")
    mask, count = desra_fast.detect(gan, mse, area_threshold=300, return_counts=True, backend="cpu")
    areas = oracle_component_areas(gan, mse)
    assert count == int((areas > 300).sum())
    assert np.array_equal(mask, oracle_detect(gan, mse, area_threshold=300))


# ---- float64 decisions at the threshold ----------------------------------------------------------
# The float64 reference itself is reproducible only to ~2e-9 where one variance is ~0 (sqrt(s+1e-8)
# amplifies filter rounding of ~1e-10); float32 D is quantised to ~6e-8 at 0.7. A threshold placed
# DELTA = 2e-8 from a pixel's float64 D' can therefore only be decided right in float64.
DELTA = 2e-8


def visible_probes(dprime, rng, max_probes):
    """Pixels p whose side of threshold = D'[p] +- DELTA changes the final mask (area 0): a flip of
    p alone is visible after erosion/dilation/fill. Returns a list of (threshold, expected mask)."""
    h, w = dprime.shape
    order = rng.permutation(h * w)
    out = []
    for flat in order:
        v = dprime.flat[flat]
        if v >= 1.0 - 1e-6 or v <= 1e-6:
            continue  # clipped values are exact in any precision
        for thr in (v + DELTA, v - DELTA):
            if thr <= 0:
                continue
            near = np.abs(dprime - thr) < 4 * DELTA
            if near.sum() != 1:
                continue
            pre = dprime < thr
            flipped = pre.copy()
            flipped.flat[flat] = not flipped.flat[flat]
            a = oracle_postprocess(pre, 0)
            if not np.array_equal(a, oracle_postprocess(flipped, 0)):
                out.append((float(thr), a))
        if len(out) >= max_probes:
            break
    return out


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("use_seg", [False, True])
def test_float64_decision_at_threshold(dtype, use_seg):
    rng = np.random.default_rng(["uint8", "uint16", "float32"].index(dtype) * 2 + int(use_seg))
    total = 0
    for k, gen in enumerate((I.photo_pair, I.synthetic_pair, I.photo_pair)):
        gan8, mse8 = gen(48, 57, 900 + k)
        if dtype == "uint8":
            gan, mse, s = gan8, mse8, 1.0
        elif dtype == "uint16":
            gan = gan8.astype(np.uint16) * 257 + rng.integers(0, 257, gan8.shape).astype(np.uint16)
            mse = mse8.astype(np.uint16) * 257 + rng.integers(0, 257, mse8.shape).astype(np.uint16)
            s = 255.0 / 65535.0
        else:
            gan = (gan8 / 255 + rng.uniform(-1e-3, 1e-3, gan8.shape)).clip(0, 1).astype(np.float32)
            mse = (mse8 / 255).astype(np.float32)
            s = 255.0
        g64, m64 = gan.astype(np.float64) * s, mse.astype(np.float64) * s
        seg = I.blocky_seg(48, 57, 950 + k, block=6, labels=[2, 1, 4, 84, 144]) if use_seg else None
        for window in ("gaussian", "box"):
            d = oracle_dmap(g64, m64, window)
            if seg is not None:
                    d = np.clip(d * oracle_weights()[seg[5:-5, 5:-5]], 0, 1)
            for thr, inner in visible_probes(d, rng, 6):
                expected = np.zeros((48, 57), bool)
                expected[5:-5, 5:-5] = inner
                got = desra_fast.detect(gan, mse, seg, threshold=thr, area_threshold=0, window=window,
                                        backend="cpu")
                assert np.array_equal(got, expected), (
                    f"{dtype} seg={use_seg} image {k} window={window} threshold={thr!r}: {mask_diff(got, expected)}")
                total += 1
    assert total >= 12, f"only {total} visible probes found: the test would be weak"


# ---- random cases (hypothesis) -----------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(h=st.integers(11, 90), w=st.integers(11, 90), seed=st.integers(0, 10**6), n=st.integers(0, 3),
       thr=st.floats(0.2, 0.98), area=st.integers(0, 400), window=st.sampled_from(["gaussian", "box"]),
       seg_kind=st.sampled_from(["none", "blocky", "noise", "transposed"]))
def test_random_cases_match_oracle(h, w, seed, n, thr, area, window, seg_kind):
    gens = (I.photo_pair, I.synthetic_pair)
    pairs = [gens[(seed + i) % 2](h, w, seed + i) for i in range(max(n, 1))]
    segs = []
    for i in range(max(n, 1)):
        if seg_kind == "none":
            segs.append(None)
        elif seg_kind == "blocky":
            segs.append(I.blocky_seg(h, w, seed + i, block=1 + (seed % 9)))
        elif seg_kind == "noise":
            segs.append(np.random.default_rng(seed + i).integers(0, 150, (h, w)).astype(np.int32))
        else:  # a non-contiguous view
            segs.append(I.blocky_seg(w, h, seed + i, block=3).T)
    expected = [oracle_detect(g, m, s, threshold=thr, area_threshold=area, window=window)
                for (g, m), s in zip(pairs, segs)]
    if n == 0:
        got = desra_fast.detect(pairs[0][0], pairs[0][1], segs[0], threshold=thr, area_threshold=area,
                                window=window, backend="cpu")
        check_full_mask(got, h, w)
        assert np.array_equal(got, expected[0]), mask_diff(got, expected[0])
    else:
        gan = np.stack([p[0] for p in pairs])
        mse = np.stack([p[1] for p in pairs])
        seg = None if seg_kind == "none" else np.stack(segs)
        got = desra_fast.detect(gan, mse, seg, threshold=thr, area_threshold=area, window=window, backend="cpu")
        assert got.shape == (n, h, w) and got.dtype == np.bool_
        for i in range(n):
            check_full_mask(got[i], h, w)
            assert np.array_equal(got[i], expected[i]), f"item {i}: {mask_diff(got[i], expected[i])}"


def test_real_pairs_batch_as_torch_float_with_seg():
    torch = pytest.importorskip("torch")
    (g1, m1), (g2, m2) = I.real_pair("rocket"), I.real_pair("motorcycle")
    H, W = 424, 640
    gan = np.stack([g1[:H, :W], g2[38:38 + H, :W]])
    mse = np.stack([m1[:H, :W], m2[38:38 + H, :W]])
    seg = np.stack([I.blocky_seg(H, W, 60, block=50, labels=[2, 4, 1]), I.blocky_seg(H, W, 61, block=32, labels=[2, 0, 12, 14])])
    tg = torch.from_numpy(gan).permute(0, 3, 1, 2).float() / 255
    tm = torch.from_numpy(mse).permute(0, 3, 1, 2).float() / 255
    out = desra_fast.detect(tg, tm, torch.from_numpy(seg), area_threshold=150)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bool and tuple(out.shape) == (2, H, W)
    for i in range(2):
        g64 = tg[i].permute(1, 2, 0).double().numpy() * 255
        m64 = tm[i].permute(1, 2, 0).double().numpy() * 255
        expected = oracle_detect(g64, m64, seg[i], area_threshold=150)
        assert expected.any()
        assert np.array_equal(out[i].numpy(), expected), f"item {i}: {mask_diff(out[i].numpy(), expected)}"


@pytest.mark.slow
def test_upscaled_real_pair_megapixel():
    """A real GAN/MSE pair resized to ~1 Mpx (keeps real GAN texture statistics at scale)."""
    import cv2

    g, m = I.real_pair("rocket")
    gan = cv2.resize(g, (1280, 848), interpolation=cv2.INTER_CUBIC)
    mse = cv2.resize(m, (1280, 848), interpolation=cv2.INTER_CUBIC)
    seg = I.blocky_seg(848, 1280, 62, block=80, labels=[2, 1, 4, 12, 20])
    kept, dropped = run_matrix(gan, mse, (4000,), (0.7,), windows=("gaussian",), segs=(None, seg),
                               label="rocket x2")
    assert kept > 0 and dropped > 0, (kept, dropped)


@pytest.fixture(scope="module")
def motorcycle_batch():
    gan, mse = I.real_pair("motorcycle")
    seg = I.blocky_seg(*gan.shape[:2], 63, block=25, labels=[2, 0, 12])
    batch_g = np.stack([gan, gan[::-1].copy(), gan[:, ::-1].copy()])
    batch_m = np.stack([mse, mse[::-1].copy(), mse[:, ::-1].copy()])
    expected = [oracle_detect(batch_g[i], batch_m[i], seg, area_threshold=100) for i in range(3)]
    dref = [oracle_dmap(batch_g[i], batch_m[i]) for i in range(3)]
    return batch_g, batch_m, np.stack([seg] * 3), expected, dref


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_thread_count_does_not_change_results(threads, motorcycle_batch):
    batch_g, batch_m, segs, expected, dref = motorcycle_batch
    old = desra_fast.get_num_threads()
    try:
        desra_fast.set_num_threads(threads)
        got = desra_fast.detect(batch_g, batch_m, segs, area_threshold=100, backend="cpu")
        d = desra_fast.d_map(batch_g, batch_m, backend="cpu")
    finally:
        desra_fast.set_num_threads(old)
    for i in range(3):
        assert np.array_equal(got[i], expected[i]), f"threads={threads} item {i}: {mask_diff(got[i], expected[i])}"
        assert np.abs(d[i] - dref[i]).max() <= 1e-5
