"""The exactness suites of the CPU kernels, re-run on every other instruction-set path this CPU
can execute (forced one after another through ``_C._set_cpu_isa``).

The default path (the best one) is what ``test_native_dmap.py`` and ``test_native_postprocess.py``
run themselves; here every test of the D-map suite (float64-oracle parity, near-threshold probes
decided by the float64 fallback, strides, bad inputs) and the post-processing tests that go
through the per-ISA bit packing (odd widths, interior views, strides, large structures) run again
on each remaining path. Masks must equal the oracle's on every path, hence across paths.
"""
from __future__ import annotations

import pytest

from desra_fast import _native

_BEST = _native.C.cpu_isas_available()[0]
_OTHERS = [isa for isa in _native.C.cpu_isas_available() if isa != _BEST]


@pytest.fixture(autouse=True, params=_OTHERS or [pytest.param(None, marks=pytest.mark.skip(
    reason="this CPU runs only one CPU-kernel path; the default suites cover it"))])
def forced_cpu_isa(request):
    before = _native.C.cpu_isa()
    assert _native.C._set_cpu_isa(request.param) == request.param
    yield request.param
    _native.C._set_cpu_isa(before)


# Every test function of the D-map suite, collected again under the fixture above.
from test_native_dmap import *  # noqa: E402,F401,F403

# The post-processing tests whose inputs and outputs cross the per-ISA pack/unpack kernels.
from test_native_postprocess import (  # noqa: E402,F401
    test_large_structured,
    test_nonzero_counts_as_one_and_bool_input,
    test_postprocess_any_strides_and_strided_input,
    test_postprocess_writes_interior_view_only,
    test_thin_shapes,
)
