"""pytest-benchmark: desra_fast (backend="cpu") — D map, each stage, full detect."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from benchmarks import inputs
from benchmarks.conftest import reference_mask, run

fast = pytest.importorskip("benchmarks.fast", reason="desra_fast is not importable")
_ready, _why = fast.ready()
pytestmark = pytest.mark.skipif(not _ready, reason=_why or "desra_fast kernels missing")

HALO = 5


@functools.lru_cache(maxsize=None)
def _intermediates(size: float, with_seg: bool) -> dict[str, np.ndarray]:
    """The pipeline's intermediate masks (inputs of the single-stage benchmarks)."""
    p = inputs.make_pair(size)
    pre = fast.premask(p.gan, p.mse, p.seg if with_seg else None, inputs.load_weights())[0]
    er = np.asarray(fast.erode(pre))
    di = np.asarray(fast.dilate(er))
    fi = np.asarray(fast.fill_holes(di))
    return {"premask": pre, "erode": er, "dilate": di, "fill_holes": fi}


def test_d_map(benchmark, size, pair):
    d = run(benchmark, lambda: fast.d_map(pair.gan, pair.mse), size=size)
    assert d.shape == (pair.shape[0] - 10, pair.shape[1] - 10) and d.dtype == np.float32


def test_premask(benchmark, size, with_seg, pair, weights):
    seg = pair.seg if with_seg else None
    pre = run(benchmark, lambda: fast.premask(pair.gan, pair.mse, seg, weights), size=size)
    assert pre.shape == (1, pair.shape[0] - 10, pair.shape[1] - 10)


@pytest.mark.parametrize("stage", ["erode", "dilate", "fill_holes", "filter_components"])
def test_stage(benchmark, size, with_seg, stage):
    steps = _intermediates(size, with_seg)
    source = {"erode": "premask", "dilate": "erode", "fill_holes": "dilate",
              "filter_components": "fill_holes"}[stage]
    fn = getattr(fast, stage)
    mask = steps[source]
    out = run(benchmark, lambda: fn(mask), size=size)
    if stage == "filter_components":
        np.testing.assert_array_equal(np.asarray(out, bool), reference_mask(size, with_seg))


def test_postprocess(benchmark, size, with_seg):
    pre = _intermediates(size, with_seg)["premask"][None]
    out = run(benchmark, lambda: fast.postprocess(pre), size=size)
    np.testing.assert_array_equal(out[0, HALO:-HALO, HALO:-HALO], reference_mask(size, with_seg))


def test_detect(benchmark, size, with_seg, pair):
    seg = pair.seg if with_seg else None
    mask = run(benchmark, lambda: fast.detect(pair.gan, pair.mse, seg), size=size)
    benchmark.extra_info["pixels"] = pair.pixels
    assert mask.shape == pair.shape and not mask[:HALO].any() and not mask[:, -HALO:].any()
    np.testing.assert_array_equal(mask[HALO:-HALO, HALO:-HALO], reference_mask(size, with_seg))
