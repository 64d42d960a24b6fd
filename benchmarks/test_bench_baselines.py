"""pytest-benchmark: the baselines — the authors' released pipeline and the best OpenCV/scipy
composition — on the same inputs as desra_fast (same groups, so the tables line up)."""
from __future__ import annotations

import numpy as np

from benchmarks import authors, composition
from benchmarks.conftest import reference_mask, run


def test_authors_d_map(benchmark, size, pair):
    run(benchmark, lambda: authors.d_map(pair.gan, pair.mse), size=size, slow=True)


def test_authors_detect(benchmark, size, with_seg, pair, weights):
    seg = pair.seg if with_seg else None
    mask = run(benchmark, lambda: authors.detect(pair.gan, pair.mse, seg, weights), size=size, slow=True)
    np.testing.assert_array_equal(mask, reference_mask(size, with_seg))


def test_composition_d_map(benchmark, size, pair):
    d = run(benchmark, lambda: composition.d_map(pair.gan, pair.mse), size=size)
    # float32 E[x^2] - mu^2 cancellation: close to, not equal to, the float64 D
    assert np.abs(d - authors.d_map(pair.gan, pair.mse)).max() < 0.05


def test_composition_detect(benchmark, size, with_seg, pair, weights):
    seg = pair.seg if with_seg else None
    mask = run(benchmark, lambda: composition.detect(pair.gan, pair.mse, seg, weights), size=size)
    diff = int(np.count_nonzero(mask != reference_mask(size, with_seg)))
    benchmark.extra_info["mask_diff_vs_authors"] = diff   # float32 flips a few pixels; reported


def test_composition_fill_holes_equals_scipy(size, with_seg, pair, weights):
    """The composition's flood-fill hole filling is scipy's binary_fill_holes (not timed)."""
    seg = pair.seg if with_seg else None
    m = composition.dilate(composition.erode(
        composition.premask(composition.d_map(pair.gan, pair.mse), seg, weights)))
    np.testing.assert_array_equal(composition.fill_holes(m), composition.fill_holes_scipy(m))
