"""Fixtures of the pytest-benchmark suite (``python -m pytest benchmarks --benchmark-enable``).

Not collected by the default test run (``testpaths = ["tests"]``). Sizes default to
0.25, 1, 4 and 16 Mpx; ``DESRA_BENCH_SIZES=0.25,1`` restricts them. Benchmarks are grouped by
size (``benchmark.group``), so each table compares the implementations and stages of one size.
Slow callables (the authors' pipeline, anything >= 4 Mpx) run a fixed, small number of rounds
via ``benchmark.pedantic``. No test asserts on time; the tests do check that what they time is
correct (masks equal to the authors' float64 pipeline).
"""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from benchmarks import authors, inputs


def _sizes() -> list[float]:
    env = os.environ.get("DESRA_BENCH_SIZES")
    if not env:
        return list(inputs.SIZES)
    return [float(s) for s in env.split(",") if s.strip()]


SIZES = _sizes()
SIZE_IDS = [f"{s:g}Mpx" for s in SIZES]


@pytest.fixture(scope="session")
def weights() -> np.ndarray:
    return inputs.load_weights()


@pytest.fixture(params=SIZES, ids=SIZE_IDS)
def size(request) -> float:
    return request.param


@pytest.fixture(params=[True, False], ids=["seg", "noseg"])
def with_seg(request) -> bool:
    return request.param


@pytest.fixture
def pair(size) -> inputs.Pair:
    return inputs.make_pair(size)


@functools.lru_cache(maxsize=None)
def reference_mask(size: float, with_seg: bool) -> np.ndarray:
    """The authors' float64 pipeline's bool (H-10, W-10) mask for a benchmark pair (memoised)."""
    p = inputs.make_pair(size)
    return authors.detect(p.gan, p.mse, p.seg if with_seg else None, inputs.load_weights())


def run(benchmark, fn, *, size: float, slow: bool = False):
    """Time ``fn`` in the size's group; few fixed rounds when it is slow or the image is large."""
    benchmark.group = f"{size:g} Mpx"
    benchmark.extra_info["mpx"] = size
    if slow:
        rounds = 3 if size <= 1 else 1
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    if size >= 4:
        return benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    return benchmark(fn)
