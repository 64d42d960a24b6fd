"""The CUDA post-processing kernels, run by the CPU emulator (desra_fast.testing), against the
independent OpenCV/scipy oracle (tests/oracle.py) -- on every machine, no GPU needed.

Every batch runs in launch order and under >= 20 shuffle seeds (blocks shuffled, union-find
threads interleaved step by step): the kernels must give the oracle's mask in every order.
Inputs: random blob masks and structured ones (spirals, nested holes, components touching every
border, one-pixel diagonals, a single component covering the image), for the whole pipeline and
for single stages (hole filling, labelling) on inputs the morphology would never produce (thin
lines, checkerboards). A fault-injection run shows the shuffled emulator does catch an
order-dependent union-find. The GPU tests at the end skip without a CUDA device.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import (mask_diff, oracle_components, oracle_dilate, oracle_erode, oracle_fill_holes,
                    oracle_filter_components, oracle_postprocess)

from desra_fast import _native
from desra_fast.testing import emulate_cuda_postprocess

N_SEEDS = 20  # shuffle seeds per batch (plus one run in launch order)


# ---- expected values (oracle only) -------------------------------------------------------------
def expected(mask: np.ndarray, area_threshold: int, start: str):
    """(dilated, filled, output, kept count) of the authors' pipeline entered at `start`."""
    m = np.asarray(mask, dtype=bool)
    dilated = oracle_dilate(oracle_erode(m)) if start == "erode" else m
    filled = oracle_fill_holes(dilated) if start in ("erode", "fill") else m
    out = oracle_filter_components(filled, area_threshold)
    if start == "erode":  # the composed recipe of the released script, as a cross-check
        assert np.array_equal(out, oracle_postprocess(m, area_threshold))
    count = int((oracle_components(filled)[1] > area_threshold).sum())
    return dilated, filled, out, count


def check_batch(batch: np.ndarray, area_threshold: int, start: str, first_seed: int, n_seeds: int = N_SEEDS):
    """Emulates `batch` (N, h, w) in launch order and under n_seeds shuffle seeds; every run must
    equal the oracle, stage by stage."""
    exp = [expected(m, area_threshold, start) for m in batch]
    for seed in [None] + [first_seed + k for k in range(n_seeds)]:
        out, counts, stages = emulate_cuda_postprocess(batch, area_threshold, seed, return_counts=True,
                                                       return_stages=True, start=start)
        for i, (dil, fil, o, c) in enumerate(exp):
            where = f"image {i} of {batch.shape}, start={start}, thr={area_threshold}, seed={seed}"
            assert np.array_equal(stages["dilated"][i], dil), f"dilation, {where}: {mask_diff(stages['dilated'][i], dil)}"
            assert np.array_equal(stages["filled"][i], fil), f"hole filling, {where}: {mask_diff(stages['filled'][i], fil)}"
            assert np.array_equal(out[i], o), f"output, {where}: {mask_diff(out[i], o)}"
            assert counts[i] == c, f"kept count {counts[i]} != {c}, {where}"


# ---- mask generators ---------------------------------------------------------------------------
def blobs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Rectangles of foreground minus rectangles of background plus salt-and-pepper noise: after
    erosion + dilation this leaves components of all sizes, some with holes."""
    m = np.zeros((h, w), dtype=bool)
    for value, count in ((True, rng.integers(0, 8)), (False, rng.integers(0, 6))):
        for _ in range(count):
            y0, x0 = rng.integers(-4, max(h, 1)), rng.integers(-4, max(w, 1))
            m[max(y0, 0):max(y0 + rng.integers(2, 40), 0), max(x0, 0):max(x0 + rng.integers(2, 40), 0)] = value
    noise = rng.random((h, w)) < rng.uniform(0, 0.15)
    return m ^ noise


def spiral(size: int, width: int = 1) -> np.ndarray:
    """Square spiral wall, `width` pixels wide with `width`-wide corridors, from a corner inward:
    one long component and a background corridor that reaches the border."""
    n = (size + width - 1) // width
    m = np.zeros((n, n), dtype=bool)
    y, x, dy, dx, turns = 0, 0, 0, 1, 0
    m[0, 0] = True
    while turns < 2:  # two turns in a row without a step: the spiral is complete
        ny, nx, fy, fx = y + dy, x + dx, y + 2 * dy, x + 2 * dx
        ahead_free = 0 <= ny < n and 0 <= nx < n and not m[ny, nx]
        beyond_wall = 0 <= fy < n and 0 <= fx < n and m[fy, fx]
        if ahead_free and not beyond_wall:
            y, x, turns = ny, nx, 0
            m[y, x] = True
        else:
            dy, dx, turns = dx, -dy, turns + 1
    return zoom(m, width)[:size, :size]


def nested_rings(size: int, widths) -> np.ndarray:
    """Concentric square rings alternating foreground/background: holes inside holes."""
    m = np.zeros((size, size), dtype=bool)
    r, value, k = 0, True, 0
    while r < (size + 1) // 2:
        wdt = widths[k % len(widths)]
        m[r:size - r, r:size - r] = value
        r, value, k = r + wdt, not value, k + 1
    return m


def border_touching(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Components touching each border and corner, and enclosed background next to the border."""
    m = np.zeros((h, w), dtype=bool)
    t = max(1, min(h, w) // 6)
    m[:t, rng.integers(0, w):] = True
    m[-t:, :rng.integers(1, w + 1)] = True
    m[rng.integers(0, h):, :t] = True
    m[:rng.integers(1, h + 1), -t:] = True
    if h > 4 * t + 2 and w > 4 * t + 2:  # a ring whose hole is one pixel from the border
        m[t + 1:h - t - 1, t + 1:w - t - 1] = True
        m[2 * t + 1:h - 2 * t - 1, 2 * t + 1:w - 2 * t - 1] = False
    return m


def diagonals(rng: np.random.Generator, h: int, w: int, background: bool) -> np.ndarray:
    """One-pixel diagonal lines (both directions). background=True draws them as background cuts
    through a full foreground: 8-connected background leaks through a diagonal gap."""
    m = np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(rng.integers(1, 5)):
        off = rng.integers(-w, h)
        m |= (yy - xx == off) if rng.random() < 0.5 else (yy + xx == off + w)
    return ~m if background else m


def structured(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    s = min(h, w)
    if kind == "spiral":
        m = spiral(s, int(rng.integers(1, 3)))
    elif kind == "nested":
        m = nested_rings(s, [int(v) for v in rng.integers(1, 4, size=4)])
    elif kind == "border":
        m = border_touching(rng, h, w)
    elif kind == "diagonal":
        m = diagonals(rng, h, w, False)
    elif kind == "diagonal_cut":
        m = diagonals(rng, h, w, True)
    elif kind == "checker":
        m = (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(bool)
    elif kind == "full":
        m = np.ones((h, w), dtype=bool)
    elif kind == "empty":
        m = np.zeros((h, w), dtype=bool)
    else:
        raise AssertionError(kind)
    full = np.zeros((h, w), dtype=bool)
    full[:m.shape[0], :m.shape[1]] = m
    return full


STRUCTURED_KINDS = ["spiral", "nested", "border", "diagonal", "diagonal_cut", "checker", "full", "empty"]


def transform(rng: np.random.Generator, m: np.ndarray) -> np.ndarray:
    """Random flip/rotation so every structure meets every border and tile edge orientation."""
    quarter_turns = int(rng.integers(0, 4)) if m.shape[0] == m.shape[1] else 2 * int(rng.integers(0, 2))
    m = np.rot90(m, quarter_turns)
    return np.ascontiguousarray(m[::-1] if rng.random() < 0.5 else m)


def zoom(m: np.ndarray, k: int) -> np.ndarray:
    """Each pixel -> k x k block: thin structures survive the 5x5 erosion and 13x13 dilation."""
    return np.kron(m, np.ones((k, k), dtype=bool))


# ---- the whole pipeline -------------------------------------------------------------------------
@settings(max_examples=150)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(1, 48), w=st.integers(1, 80), thr=st.integers(0, 400))
def test_pipeline_random_blobs(seed, h, w, thr):
    rng = np.random.default_rng(seed)
    batch = np.stack([blobs(rng, h, w) for _ in range(8)])
    check_batch(batch, thr, "erode", first_seed=seed % 100_000 * N_SEEDS)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(STRUCTURED_KINDS), base=st.integers(3, 6),
       thr=st.integers(0, 3000))
def test_pipeline_structured_zoomed(seed, kind, base, thr):
    """Spirals, nested holes, border-touching, diagonals, full cover at a scale (x16) where they
    survive the morphology, so hole filling and labelling see them. Sizes cross tile edges
    (morphology 64x32, labelling 32x16)."""
    rng = np.random.default_rng(seed)
    masks = [zoom(transform(rng, structured(rng, kind, base, base + int(rng.integers(0, 2)))), 16)
             for _ in range(3)]
    h = min(m.shape[0] for m in masks)
    w = min(m.shape[1] for m in masks)
    batch = np.stack([m[:h, :w] for m in masks])
    check_batch(batch, thr, "erode", first_seed=seed % 100_000 * N_SEEDS)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 37), (29, 1), (2, 2), (16, 32), (32, 64), (33, 65), (17, 31), (64, 128)])
@pytest.mark.parametrize("fill", ["full", "blobs"])
def test_pipeline_tile_edge_shapes(h, w, fill):
    """Shapes at and around the tile sizes and degenerate ones; a full mask is one component
    covering the image (erosion must not erode from outside the image)."""
    rng = np.random.default_rng(h * 1000 + w)
    batch = np.stack([np.ones((h, w), bool) if fill == "full" else blobs(rng, h, w) for _ in range(3)])
    check_batch(batch, 0, "erode", first_seed=7)
    check_batch(batch, h * w - 1, "erode", first_seed=9)  # full cover: area h*w > h*w-1 is kept


def test_empty_batch_and_images():
    out, counts = emulate_cuda_postprocess(np.zeros((0, 5, 5), np.uint8), 3, seed=1, return_counts=True)
    assert out.shape == (0, 5, 5) and counts.shape == (0,)
    out = emulate_cuda_postprocess(np.zeros((2, 0, 4), np.uint8), 3, seed=1)
    assert out.shape == (2, 0, 4)


# ---- single stages on inputs the morphology never produces ---------------------------------------
@settings(max_examples=100)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(1, 40), w=st.integers(1, 72),
       density=st.floats(0.2, 0.8), thr=st.integers(0, 30))
def test_labelling_random_noise(seed, h, w, density, thr):
    """i.i.d. noise near the percolation threshold: long thin 8-connected components whose every
    union is a bridge -- the hardest case for a racy union-find."""
    rng = np.random.default_rng(seed)
    batch = rng.random((8, h, w)) < density
    check_batch(batch, thr, "label", first_seed=seed % 100_000 * N_SEEDS)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(1, 40), w=st.integers(1, 72),
       density=st.floats(0.3, 0.9), thr=st.integers(0, 60))
def test_hole_filling_random_noise(seed, h, w, density, thr):
    rng = np.random.default_rng(seed)
    batch = rng.random((8, h, w)) < density
    check_batch(batch, thr, "fill", first_seed=seed % 100_000 * N_SEEDS)


@settings(max_examples=120)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(STRUCTURED_KINDS), h=st.integers(3, 48),
       w=st.integers(3, 80), thr=st.integers(0, 200), start=st.sampled_from(["fill", "label"]))
def test_stages_structured(seed, kind, h, w, thr, start):
    """One-pixel spirals (one long component winding across many tiles, and a hole-free
    background corridor), nested holes, diagonals that connect only through corners, etc."""
    rng = np.random.default_rng(seed)
    batch = np.stack([transform(rng, structured(rng, kind, h, h) if kind in ("spiral", "nested")
                                else structured(rng, kind, h, w)) for _ in range(8)])
    check_batch(batch, thr, start, first_seed=seed % 100_000 * N_SEEDS)


def test_one_pixel_spiral_is_one_component():
    """A 1-px spiral with 1-px corridors across 2x4 labelling tiles: one component, its
    corridor is background connected to the border (nothing to fill)."""
    m = spiral(63)
    areas = oracle_components(m)[1]
    assert len(areas) == 1
    for start in ("fill", "label"):
        check_batch(m[None], int(areas[0]) - 1, start, first_seed=1234, n_seeds=N_SEEDS)


# ---- the emulator can fail -------------------------------------------------------------------------
def test_shuffled_emulator_catches_order_dependent_union_find():
    """inject_fault drops the retry after a failed atomic link (naive atomicMin union). That
    kernel is correct in launch order, so in-order emulation must still match the oracle, but
    interleaved runs must produce wrong components: proof that these tests can fail."""
    rng = np.random.default_rng(2024)
    batch = rng.random((10, 40, 70)) < 0.6
    thr = 3
    exp = [expected(m, thr, "label") for m in batch]
    out, counts = emulate_cuda_postprocess(batch, thr, None, return_counts=True, start="label", inject_fault=True)
    for i, (_, _, o, c) in enumerate(exp):
        assert np.array_equal(out[i], o) and counts[i] == c, f"in-order run of the faulty kernel, image {i}"
    wrong = 0
    for seed in range(N_SEEDS):
        out, counts = emulate_cuda_postprocess(batch, thr, seed, return_counts=True, start="label",
                                               inject_fault=True)
        wrong += sum(not (np.array_equal(out[i], o) and counts[i] == c) for i, (_, _, o, c) in enumerate(exp))
    assert wrong > 0, "the shuffled emulator did not expose the lost-union fault"


def test_seed_reproducible_and_orders_differ():
    rng = np.random.default_rng(5)
    batch = rng.random((2, 30, 50)) < 0.6
    a = emulate_cuda_postprocess(batch, 0, 17, start="label", inject_fault=True)
    b = emulate_cuda_postprocess(batch, 0, 17, start="label", inject_fault=True)
    assert np.array_equal(a, b)


# ---- API contract -----------------------------------------------------------------------------
def test_emulator_2d_input_and_default_threshold():
    m = np.zeros((80, 90), np.uint8)
    m[5:75, 5:85] = 1  # 70 x 80 = 5600 > 4000 after erosion + dilation back
    out, count = emulate_cuda_postprocess(m, seed=3, return_counts=True)
    assert out.shape == m.shape and out.dtype == bool and count == 1
    assert np.array_equal(out, oracle_postprocess(m, 4000))


@pytest.mark.parametrize("bad,exc", [
    (np.zeros((4, 4), np.float32), TypeError),
    (np.zeros((4,), np.uint8), ValueError),
    (np.zeros((1, 2, 3, 4), np.uint8), ValueError),
])
def test_emulator_rejects_bad_masks(bad, exc):
    with pytest.raises(exc):
        emulate_cuda_postprocess(bad, 4, seed=0)


def test_emulator_rejects_bad_arguments():
    m = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError):
        emulate_cuda_postprocess(m, 4, seed=-3)
    with pytest.raises(ValueError):
        emulate_cuda_postprocess(m, 4, start="dilate")
    with pytest.raises(TypeError):
        emulate_cuda_postprocess(m, 4.5)
    with pytest.raises(ValueError):
        emulate_cuda_postprocess(m, 2**40)


def test_cuda_status_is_clear_without_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert not _native.cuda_available()
    status = _native.cuda_status()
    assert isinstance(status, str) and status
    if getattr(_native.C, "built_with_cuda", False):
        assert "no CUDA device" in status, status
    else:
        assert "without CUDA" in status, status


def test_postprocess_cuda_rejects_host_tensors():
    """Argument checks run before anything touches CUDA, so they work on any machine."""
    torch = pytest.importorskip("torch")
    from desra_fast.cuda_postprocess import postprocess_cuda

    pre = torch.zeros((2, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match="CUDA device"):
        postprocess_cuda(pre, 0, torch.zeros((2, 8, 8), dtype=torch.bool))
    with pytest.raises(TypeError, match="torch tensors"):
        postprocess_cuda(pre.numpy(), 0, pre)


# ---- on a GPU --------------------------------------------------------------------------------------
def _cuda_or_skip():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    if not _native.cuda_available():
        pytest.skip(f"desra_fast CUDA kernels unavailable: {_native.cuda_status()}")
    return torch


@pytest.mark.gpu
def test_gpu_postprocess_matches_oracle_and_emulator():
    torch = _cuda_or_skip()
    from desra_fast.cuda_postprocess import postprocess_cuda

    rng = np.random.default_rng(11)
    for h, w, thr in [(1, 1, 0), (37, 91, 50), (130, 260, 400), (517, 301, 4000)]:
        batch = np.stack([blobs(rng, h, w) for _ in range(5)])
        pre = torch.from_numpy(batch.astype(np.uint8)).cuda()
        full = torch.zeros((5, h + 10, w + 10), dtype=torch.bool, device="cuda")
        counts = postprocess_cuda(pre, thr, full[:, 5:-5, 5:-5])
        got = full.cpu().numpy()
        assert not got[:, :5].any() and not got[:, -5:].any() and not got[:, :, :5].any() and not got[:, :, -5:].any()
        emu, emu_counts = emulate_cuda_postprocess(batch, thr, 0, return_counts=True)
        for i in range(5):
            exp = oracle_postprocess(batch[i], thr)
            assert np.array_equal(got[i, 5:-5, 5:-5], exp), mask_diff(got[i, 5:-5, 5:-5], exp)
            assert np.array_equal(emu[i], exp)
        assert np.array_equal(counts.cpu().numpy(), emu_counts)


@pytest.mark.gpu
def test_gpu_workspace_reused_in_a_loop():
    torch = _cuda_or_skip()
    from desra_fast import cuda_postprocess as cp

    pre = torch.zeros((4, 64, 64), dtype=torch.uint8, device="cuda")
    out = torch.empty((4, 64, 64), dtype=torch.bool, device="cuda")
    cp.postprocess_cuda(pre, 0, out)
    ptrs = {k: v.data_ptr() for k, v in cp._workspaces.items()}
    for _ in range(3):
        cp.postprocess_cuda(pre, 0, out)
    assert {k: v.data_ptr() for k, v in cp._workspaces.items()} == ptrs
    torch.cuda.synchronize()
    assert not out.any()


@pytest.mark.gpu
def test_gpu_rejects_bad_arguments():
    torch = _cuda_or_skip()
    from desra_fast.cuda_postprocess import postprocess_cuda

    pre = torch.zeros((2, 8, 8), dtype=torch.uint8, device="cuda")
    with pytest.raises(ValueError):
        postprocess_cuda(pre.cpu(), 0, torch.empty((2, 8, 8), dtype=torch.bool))
    with pytest.raises(TypeError):
        postprocess_cuda(pre.float(), 0, torch.empty((2, 8, 8), dtype=torch.bool, device="cuda"))
    with pytest.raises(ValueError):
        postprocess_cuda(pre, 0, torch.empty((2, 8, 9), dtype=torch.bool, device="cuda"))
