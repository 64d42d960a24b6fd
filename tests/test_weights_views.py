"""Weights given as strided / unaligned views (a field of a structured array, as np.genfromtxt
returns) must act exactly like the same values in a contiguous array (regression: they were read
with the wrong stride and gave silently wrong masks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import desra_fast
from desra_fast import _native
from images import blocky_seg, photo_pair, to_u8
from oracle import oracle_detect

TSV = Path(desra_fast.__file__).parent / "data" / "ade20k_semantic_weights.tsv"


def _field_view() -> np.ndarray:
    table = np.genfromtxt(TSV, delimiter="\t", names=True, dtype=None, encoding="utf-8")
    w = table["weight"]
    assert w.strides != (8,)  # really a strided view, else this test proves nothing
    return w


def test_detect_with_structured_array_weights_matches_oracle():
    gan, mse = photo_pair(300, 420, seed=7)
    gan, mse = to_u8(gan), to_u8(mse)
    seg = blocky_seg(300, 420, seed=7)
    w = _field_view()
    got = desra_fast.detect(gan, mse, seg, weights=w, area_threshold=200, backend="cpu")
    want = oracle_detect(gan, mse, seg, area_threshold=200, weights=np.ascontiguousarray(w))
    assert np.array_equal(got, want)


def test_native_premask_reads_strided_weights():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (1, 120, 130, 3), dtype=np.uint8)
    m = (g // 4 + 90).astype(np.uint8)  # D ~ 0.48: weight 1 -> kept, weight 1.33 -> dropped at 0.55
    lab = rng.integers(0, 150, (1, 120, 130)).astype(np.uint8)
    w = _field_view()
    a = _native.C.premask(g, m, lab, np.ascontiguousarray(w, np.float64), 0.55, 0, 1.0)
    b = _native.C.premask(g, m, lab, w, 0.55, 0, 1.0)
    assert a.any() and not a.all()
    assert np.array_equal(a, b)
