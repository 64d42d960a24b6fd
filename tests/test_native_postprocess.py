"""desra_fast._C post-processing (CPU: csrc/cpu/{morphology,fill_holes,components,postprocess}.cpp)
against OpenCV / scipy called exactly as the authors' scripts call them.

Every stage and the fused ``postprocess`` are compared for exact equality on thousands of
hypothesis-drawn masks (1x1 .. 200x200: noise of any density, blobs with holes and islands,
spirals, nested rings, shapes touching every border, one-pixel diagonals, full and empty
images) and on a few large structured ones; plus strided / aliased / bool outputs and bad input.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from desra_fast import _C

# ---- oracle: the authors' calls (independent of desra_fast) ---------------------------------
ONES5 = np.ones((5, 5), np.uint8)


def ref_erode(m: np.ndarray, r: int) -> np.ndarray:
    return cv2.erode(m.astype(np.float64), np.ones((2 * r + 1, 2 * r + 1), np.uint8), iterations=1) > 0


def ref_dilate(m: np.ndarray, r: int) -> np.ndarray:
    return cv2.dilate(m.astype(np.float64), np.ones((2 * r + 1, 2 * r + 1), np.uint8), iterations=1) > 0


def ref_fill_holes(m: np.ndarray) -> np.ndarray:
    return ndimage.binary_fill_holes(m.astype(np.float64), structure=np.ones((3, 3)))


def ref_filter(m: np.ndarray, area_threshold: int) -> tuple[np.ndarray, int, np.ndarray]:
    """(kept mask, kept count, all component areas) as cv2.connectedComponentsWithStats sees it."""
    dst = (m.astype(np.float64) * 255).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dst, connectivity=8)
    areas = stats[1:n, cv2.CC_STAT_AREA]
    keep = np.nonzero(areas > area_threshold)[0] + 1
    return np.isin(labels, keep), len(keep), areas


def ref_before_filter(m: np.ndarray) -> np.ndarray:
    """The authors' morphology on the float64 0/1 mask: erode 5x5 once, dilate 5x5 three times,
    fill holes with a 3x3 structure."""
    erosion = cv2.erode(m.astype(np.float64), ONES5, iterations=1)
    dilation = cv2.dilate(erosion, ONES5, iterations=3)
    return ndimage.binary_fill_holes(dilation, structure=np.ones((3, 3)))


def ref_postprocess(m: np.ndarray, area_threshold: int) -> tuple[np.ndarray, int]:
    kept, count, _ = ref_filter(ref_before_filter(m), area_threshold)
    return kept, count


# ---- mask generators ----------------------------------------------------------------------
def _disc(img, cy, cx, rad, val):
    h, w = img.shape
    yy, xx = np.ogrid[:h, :w]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= rad * rad] = val


def gen_noise(h, w, rng):
    return (rng.random((h, w)) < rng.uniform(0, 1)).astype(np.uint8)


def gen_blobs(h, w, rng):
    """Discs and rectangles, some with holes punched and islands inside the holes."""
    img = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 12))):
        cy, cx = rng.integers(-h // 4, h + h // 4 + 1), rng.integers(-w // 4, w + w // 4 + 1)
        rad = int(rng.integers(1, max(2, min(h, w) // 2 + 2)))
        if rng.random() < 0.5:
            _disc(img, cy, cx, rad, 1)
        else:
            img[max(0, cy - rad):max(0, cy + rad), max(0, cx - int(rng.integers(1, rad + 2))):max(0, cx + rad)] = 1
        if rng.random() < 0.6 and rad > 2:
            hr = int(rng.integers(1, rad))
            _disc(img, cy, cx, hr, 0)                       # a hole
            if rng.random() < 0.5 and hr > 2:
                _disc(img, cy, cx, int(rng.integers(0, hr - 1)), 1)  # an island in the hole
    if rng.random() < 0.5:
        img ^= (rng.random((h, w)) < rng.uniform(0, 0.08)).astype(np.uint8)  # salt and pepper
    return img


def gen_spiral(h, w, rng):
    """A square spiral wall: one long winding background corridor (open or closed at its end)."""
    img = np.zeros((h, w), np.uint8)
    gap = int(rng.integers(1, 4))
    t, l, b, r = 0, 0, h - 1, w - 1
    side = 0
    while t <= b and l <= r:
        if side == 0:
            img[t, l:r + 1] = 1
            t += gap + 1
        elif side == 1:
            img[t - gap - 1:b + 1, r] = 1
            r -= gap + 1
        elif side == 2:
            img[b, l:r + 2 + gap] = 1
            b -= gap + 1
        else:
            img[t:b + 2 + gap, l] = 1
            l += gap + 1
        side = (side + 1) % 4
    if rng.random() < 0.5:
        img = 1 - img
    return img


def gen_rings(h, w, rng):
    """Nested square rings (holes within islands within holes), optionally with diagonal leaks."""
    img = np.zeros((h, w), np.uint8)
    step = int(rng.integers(2, 5))
    for k in range(0, min(h, w) // 2 + 1, step):
        if k % (2 * step) == 0:
            img[k:h - k, k:w - k] = 1
        else:
            img[k:h - k, k:w - k] = 0
            if rng.random() < 0.3 and h - 2 * k > 2 and w - 2 * k > 2:
                img[k, k] = 1  # closes nothing but creates corner pixels
    if rng.random() < 0.5:  # diagonal cut through walls: 8-connected background leaks through
        n = min(h, w)
        d = np.arange(n)
        img[d, d] = 0
    return img


def gen_diagonals(h, w, rng):
    """One-pixel diagonal lines and checkerboard patches (8-connected only through corners)."""
    img = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 8))):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        dy, dx = rng.choice([-1, 1]), rng.choice([-1, 1])
        for t in range(int(rng.integers(1, max(h, w) + 1))):
            y, x = y0 + t * dy, x0 + t * dx
            if 0 <= y < h and 0 <= x < w:
                img[y, x] = 1
    if rng.random() < 0.5:
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        yy, xx = np.indices((min(h - y0, 20), min(w - x0, 20)))
        img[y0:y0 + yy.shape[0], x0:x0 + yy.shape[1]] |= ((yy + xx) % 2 == 0).astype(np.uint8)
    if rng.random() < 0.5:
        img = 1 - img
    return img


def gen_borders(h, w, rng):
    """Frames and shapes touching every border, background pockets along the edges."""
    img = np.zeros((h, w), np.uint8)
    t = int(rng.integers(1, 4))
    img[:t], img[-t:], img[:, :t], img[:, -t:] = 1, 1, 1, 1
    for _ in range(int(rng.integers(0, 6))):
        y, x = rng.integers(0, h), rng.integers(0, w)
        img[max(0, y - 3):y + 3, max(0, x - 3):x + 3] = rng.integers(0, 2)
    if rng.random() < 0.3:
        img[rng.integers(0, h), :] = 0  # cut the frame
    return img


def gen_full(h, w, rng):
    return np.full((h, w), int(rng.integers(0, 2)), np.uint8)


def gen_thick_rings(h, w, rng):
    """Rings with walls and holes wide enough to survive erode 5x5 / dilate 13x13, some with
    islands, some broken by a diagonal one-pixel-wide channel after the morphology scale."""
    img = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        outer = int(rng.integers(12, max(13, min(h, w) // 2 + 8)))
        wall = int(rng.integers(5, 12))
        _disc(img, cy, cx, outer, 1)
        _disc(img, cy, cx, max(0, outer - wall), 0)
        if rng.random() < 0.5:
            _disc(img, cy, cx, max(0, outer - wall - int(rng.integers(14, 30))), 1)
    return img


GENERATORS = [gen_noise, gen_blobs, gen_spiral, gen_rings, gen_diagonals, gen_borders, gen_full,
              gen_thick_rings]


@st.composite
def masks(draw, max_side=200):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    gen = draw(st.sampled_from(GENERATORS))
    seed = draw(st.integers(0, 2**32 - 1))
    return gen(h, w, np.random.default_rng(seed))


def one(m):
    return np.ascontiguousarray(m, dtype=np.uint8)[None]


def assert_same(got, expected, what):
    got = np.asarray(got).astype(bool)
    if not np.array_equal(got, expected):
        bad = np.argwhere(got != expected)
        raise AssertionError(f"{what}: {len(bad)} pixels differ, first at {bad[:5].tolist()}")


# ---- stages ---------------------------------------------------------------------------------
@settings(max_examples=500)
@given(masks(), st.integers(0, 8) | st.integers(9, 140))
def test_erode_matches_cv2(m, r):
    got = _C.erode(one(m), r)
    assert got.dtype == np.uint8 and got.shape == (1,) + m.shape
    assert set(np.unique(got)) <= {0, 1}
    assert_same(got[0], ref_erode(m, r), f"erode r={r} {m.shape}")


@settings(max_examples=500)
@given(masks(), st.integers(0, 8) | st.integers(9, 140))
def test_dilate_matches_cv2(m, r):
    got = _C.dilate(one(m), r)
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
    assert_same(got[0], ref_dilate(m, r), f"dilate r={r} {m.shape}")


@settings(max_examples=100)
@given(masks(max_side=80))
def test_dilate_r6_is_three_5x5_dilations_and_erode_once(m):
    expected = cv2.dilate(m, ONES5, iterations=3) > 0
    assert_same(_C.dilate(one(m), 6)[0], expected, "dilate r=6 vs 5x5 x3")
    assert_same(_C.erode(one(m), 2)[0], cv2.erode(m, ONES5, iterations=1) > 0, "erode r=2")


@settings(max_examples=700)
@given(masks())
def test_fill_holes_matches_scipy(m):
    got = _C.fill_holes(one(m))
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
    assert_same(got[0], ref_fill_holes(m), f"fill_holes {m.shape}")


@st.composite
def masks_and_thresholds(draw):
    m = draw(masks())
    _, _, areas = ref_filter(m, 0)
    choices = [0, 1, draw(st.integers(0, m.size + 1))]
    if len(areas):
        a = int(areas[draw(st.integers(0, len(areas) - 1))])
        choices += [a, a - 1]  # strictness: a component of area a is kept at a-1, dropped at a
    return m, max(0, draw(st.sampled_from(choices)))


@settings(max_examples=700)
@given(masks_and_thresholds())
def test_filter_components_matches_cv2(mt):
    m, t = mt
    out, counts = _C.filter_components(one(m), t)
    expected, count, _ = ref_filter(m, t)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
    assert counts.dtype == np.int64 and counts.shape == (1,)
    assert_same(out[0], expected, f"filter_components T={t} {m.shape}")
    assert counts[0] == count


@st.composite
def premasks_and_thresholds(draw):
    """Masks that survive a 5x5 erosion in part: blobs (plus noise) dominate."""
    m = draw(masks())
    if draw(st.booleans()):
        h, w = m.shape
        gen = draw(st.sampled_from([gen_blobs, gen_thick_rings, gen_thick_rings]))
        m = gen(h, w, np.random.default_rng(draw(st.integers(0, 2**32 - 1)))) | (
            m & draw(st.sampled_from([0, 1])))
    before = ref_before_filter(m)
    _, _, areas = ref_filter(before, 0)
    choices = [0, draw(st.integers(0, 4000))]
    if len(areas):
        a = int(areas[draw(st.integers(0, len(areas) - 1))])
        choices += [a, a - 1]
    return m, max(0, draw(st.sampled_from(choices)))


@settings(max_examples=900)
@given(premasks_and_thresholds())
def test_postprocess_matches_authors_pipeline(mt):
    m, t = mt
    out = np.full((1,) + m.shape, 7, np.uint8)
    counts = _C.postprocess(one(m), t, out)
    expected, count = ref_postprocess(m, t)
    assert set(np.unique(out)) <= {0, 1}
    assert_same(out[0], expected, f"postprocess T={t} {m.shape}")
    assert counts.dtype == np.int64 and counts.tolist() == [count]


# ---- tiny shapes, batches, strides -----------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 97), (97, 1), (2, 2), (3, 3), (1, 200), (130, 1)])
@pytest.mark.parametrize("value", [0, 1, "noise"])
def test_thin_shapes(shape, value):
    rng = np.random.default_rng(sum(shape))
    m = (rng.random(shape) < 0.5).astype(np.uint8) if value == "noise" else np.full(shape, value, np.uint8)
    for r in (0, 1, 2, 6, 70):
        assert_same(_C.erode(one(m), r)[0], ref_erode(m, r), f"erode {shape} r={r}")
        assert_same(_C.dilate(one(m), r)[0], ref_dilate(m, r), f"dilate {shape} r={r}")
    assert_same(_C.fill_holes(one(m))[0], ref_fill_holes(m), "fill_holes")
    for t in (0, 1, 5):
        out, c = _C.filter_components(one(m), t)
        exp, cnt, _ = ref_filter(m, t)
        assert_same(out[0], exp, "filter")
        assert c.tolist() == [cnt]
        o = np.empty((1,) + shape, np.uint8)
        c = _C.postprocess(one(m), t, o)
        exp, cnt = ref_postprocess(m, t)
        assert_same(o[0], exp, "postprocess")
        assert c.tolist() == [cnt]


def test_huge_radius_acts_like_the_whole_image():
    rng = np.random.default_rng(12)
    for shape in [(5, 300), (70, 3), (64, 128), (130, 65)]:
        m = (rng.random(shape) < 0.97).astype(np.uint8)
        r = max(shape)
        assert_same(_C.erode(one(m), 10**12)[0], ref_erode(m, r), f"erode {shape}")
        assert_same(_C.dilate(one(1 - m), 2**62)[0], ref_dilate(1 - m, r), f"dilate {shape}")


def test_batch_mixes_images_independently():
    rng = np.random.default_rng(3)
    gens = GENERATORS * 3
    ms = np.stack([gens[i](120, 90, rng) for i in range(len(gens))])  # N=21: one image per thread
    t = 30
    out = np.empty_like(ms)
    counts = _C.postprocess(ms, t, out)
    fo, fc = _C.filter_components(ms, t)
    fh = _C.fill_holes(ms)
    er, di = _C.erode(ms, 2), _C.dilate(ms, 6)
    for i, m in enumerate(ms):
        exp, cnt = ref_postprocess(m, t)
        assert_same(out[i], exp, f"postprocess image {i}")
        assert counts[i] == cnt
        exp, cnt, _ = ref_filter(m, t)
        assert_same(fo[i], exp, f"filter image {i}")
        assert fc[i] == cnt
        assert_same(fh[i], ref_fill_holes(m), f"fill image {i}")
        assert_same(er[i], ref_erode(m, 2), f"erode image {i}")
        assert_same(di[i], ref_dilate(m, 6), f"dilate image {i}")


@pytest.mark.parametrize("dtype", [np.uint8, bool])
def test_postprocess_writes_interior_view_only(dtype):
    """The API passes full[:, 5:-5, 5:-5]: the 5-px frame must stay untouched."""
    rng = np.random.default_rng(5)
    ms = np.stack([gen_blobs(67, 131, rng) for _ in range(3)])
    sentinel = 7 if dtype == np.uint8 else True
    full = np.full((3, 77, 141), sentinel, dtype)
    counts = _C.postprocess(ms, 40, full[:, 5:-5, 5:-5])
    frame = np.ones(full.shape[1:], bool)
    frame[5:-5, 5:-5] = False
    assert (full[:, frame] == sentinel).all()
    for i in range(3):
        exp, cnt = ref_postprocess(ms[i], 40)
        assert_same(full[i, 5:-5, 5:-5], exp, f"image {i}")
        assert counts[i] == cnt


def test_postprocess_any_strides_and_strided_input():
    rng = np.random.default_rng(6)
    base = np.stack([gen_blobs(150, 110, rng) for _ in range(2)])
    m = base[:, ::-1, 5:]                                          # negative row stride input
    exp = [ref_postprocess(np.ascontiguousarray(x), 25) for x in m]
    outs = [
        np.zeros((2, 110, 150), np.uint8).transpose(0, 2, 1)[:, :, 5:],   # column-major rows
        np.zeros((2, 300, 210), bool)[:, ::2, ::-2][:, :150, :105],      # every other pixel, reversed
        np.zeros((105, 150, 2), np.uint8).transpose(2, 1, 0),            # batch innermost
    ]
    for out in outs:
        assert out.shape == m.shape
        counts = _C.postprocess(m, 25, out)
        for i in range(2):
            assert_same(out[i], exp[i][0], f"strides {out.strides}")
            assert counts[i] == exp[i][1]
    # the stage functions read strided input too
    assert_same(_C.fill_holes(m)[1], ref_fill_holes(np.ascontiguousarray(m[1])), "fill strided")
    assert_same(_C.erode(m, 3)[0], ref_erode(np.ascontiguousarray(m[0]), 3), "erode strided")


def test_postprocess_in_place_and_overlapping_out():
    rng = np.random.default_rng(8)
    ms = np.stack([gen_blobs(90, 90, rng) for _ in range(3)])
    exp = [ref_postprocess(x, 20) for x in ms]
    a = ms.copy()
    _C.postprocess(a, 20, a)                      # out is the input
    for i in range(3):
        assert_same(a[i], exp[i][0], "in place")
    buf = np.zeros((4, 90, 90), np.uint8)
    buf[:3] = ms
    _C.postprocess(buf[:3], 20, buf[1:])          # out overlaps the next image of the input
    for i in range(3):
        assert_same(buf[i + 1], exp[i][0], "overlapping")


def test_nonzero_counts_as_one_and_bool_input():
    rng = np.random.default_rng(9)
    m = gen_blobs(80, 70, rng)
    m255 = m * 255
    mb = m.astype(bool)
    for x in (m255, mb, m * 3):
        assert np.array_equal(_C.fill_holes(x[None]), _C.fill_holes(m[None]))
        assert np.array_equal(_C.erode(x[None], 2), _C.erode(m[None], 2))
        o1, o2 = np.empty((1, 80, 70), np.uint8), np.empty((1, 80, 70), np.uint8)
        assert _C.postprocess(x[None], 10, o1).tolist() == _C.postprocess(m[None], 10, o2).tolist()
        assert np.array_equal(o1, o2)


def test_empty_batches_and_sizes():
    for shape in [(0, 5, 5), (2, 0, 5), (2, 5, 0)]:
        m = np.zeros(shape, np.uint8)
        assert _C.erode(m, 2).shape == shape
        assert _C.fill_holes(m).shape == shape
        out, c = _C.filter_components(m, 3)
        assert out.shape == shape and c.tolist() == [0] * shape[0]
        assert _C.postprocess(m, 3, np.zeros(shape, bool)).tolist() == [0] * shape[0]


# ---- larger structured masks ---------------------------------------------------------------
def big_blobs(h, w, seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.uint8)
    for _ in range(120):
        _disc(img, rng.integers(0, h), rng.integers(0, w), int(rng.integers(3, 90)), 1)
    for _ in range(60):
        _disc(img, rng.integers(0, h), rng.integers(0, w), int(rng.integers(2, 40)), 0)
    for _ in range(30):
        _disc(img, rng.integers(0, h), rng.integers(0, w), int(rng.integers(1, 8)), 1)
    img ^= (rng.random((h, w)) < 0.03).astype(np.uint8)
    return img


@pytest.mark.parametrize("kind", ["blobs", "spiral", "rings", "noise"])
def test_large_structured(kind):
    h, w = 1000, 1500
    rng = np.random.default_rng(11)
    m = {"blobs": lambda: big_blobs(h, w, 1),
         "spiral": lambda: gen_spiral(h, w, rng),
         "rings": lambda: gen_rings(h, w, rng),
         "noise": lambda: (rng.random((h, w)) < 0.6).astype(np.uint8)}[kind]()
    assert_same(_C.fill_holes(one(m))[0], ref_fill_holes(m), "fill_holes")
    for t in (0, 500, 4000):
        out, c = _C.filter_components(one(m), t)
        exp, cnt, _ = ref_filter(m, t)
        assert_same(out[0], exp, f"filter T={t}")
        assert c.tolist() == [cnt]
    for t in (0, 4000):
        o = np.empty((1, h, w), bool)
        c = _C.postprocess(one(m), t, o)
        exp, cnt = ref_postprocess(m, t)
        assert_same(o[0], exp, f"postprocess T={t}")
        assert c.tolist() == [cnt]
    assert_same(_C.erode(one(m), 2)[0], ref_erode(m, 2), "erode")
    assert_same(_C.dilate(one(m), 6)[0], ref_dilate(m, 6), "dilate")
    assert_same(_C.dilate(one(m), 100)[0], ref_dilate(m, 100), "dilate r=100")


def test_single_component_covering_everything():
    m = np.ones((300, 400), np.uint8)
    out, c = _C.filter_components(one(m), 300 * 400 - 1)
    assert c.tolist() == [1] and out.all()
    out, c = _C.filter_components(one(m), 300 * 400)
    assert c.tolist() == [0] and not out.any()
    o = np.empty((1, 300, 400), np.uint8)
    assert _C.postprocess(one(m), 300 * 400 - 1, o).tolist() == [1] and o.all()


# ---- bad input -------------------------------------------------------------------------------
def test_bad_inputs_raise_value_error():
    m = np.zeros((1, 8, 8), np.uint8)
    out = np.zeros_like(m)
    with pytest.raises(ValueError, match="3-D"):
        _C.erode(np.zeros((8, 8), np.uint8), 2)
    with pytest.raises(ValueError, match="3-D"):
        _C.fill_holes(np.zeros((1, 1, 8, 8), np.uint8))
    for dt in (np.float64, np.int16, np.int8, np.float32):
        with pytest.raises(ValueError, match="dtype"):
            _C.dilate(m.astype(dt), 1)
        with pytest.raises(ValueError, match="dtype"):
            _C.postprocess(m, 1, out.astype(dt))
    with pytest.raises(ValueError, match="radius"):
        _C.erode(m, -1)
    with pytest.raises(ValueError, match="radius"):
        _C.dilate(m, -5)
    with pytest.raises(ValueError, match="area_threshold"):
        _C.filter_components(m, -1)
    with pytest.raises(ValueError, match="area_threshold"):
        _C.postprocess(m, -1, out)
    with pytest.raises(ValueError, match="shape"):
        _C.postprocess(m, 1, np.zeros((1, 8, 9), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        _C.postprocess(m, 1, np.zeros((2, 8, 8), np.uint8))
    ro = np.zeros_like(m)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _C.postprocess(m, 1, ro)
    with pytest.raises((ValueError, TypeError)):
        _C.fill_holes("not an array")
    with pytest.raises(TypeError):
        _C.erode(m, 1.5)


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_thread_splits_give_the_same_result(threads):
    """Row chunks, horizontal tiles and van Herk blocks cut at arbitrary rows must not show."""
    m = big_blobs(900, 1301, 4)  # >= 4 labelling strips at 8 threads
    expected = {
        "erode": ref_erode(m, 2), "dilate": ref_dilate(m, 6), "dilate70": ref_dilate(m, 70),
        "fill": ref_fill_holes(m), "post": ref_postprocess(m, 300),
    }
    _C.set_num_threads(threads)
    try:
        assert_same(_C.erode(one(m), 2)[0], expected["erode"], "erode")
        assert_same(_C.dilate(one(m), 6)[0], expected["dilate"], "dilate")
        assert_same(_C.dilate(one(m), 70)[0], expected["dilate70"], "dilate r=70")
        assert_same(_C.fill_holes(one(m))[0], expected["fill"], "fill")
        o = np.empty((1,) + m.shape, np.uint8)
        assert _C.postprocess(one(m), 300, o).tolist() == [expected["post"][1]]
        assert_same(o[0], expected["post"][0], "postprocess")
    finally:
        _C.set_num_threads(0)
