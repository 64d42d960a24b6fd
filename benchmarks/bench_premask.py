"""Benchmark of desra_fast's pre-mask: D map + semantic weights + threshold, fused (with the
float64 re-check near the threshold), on the pipeline's own inputs. A column of the stage
breakdown of ``python -m benchmarks.compare``."""
from __future__ import annotations

from typing import Callable

import numpy as np

from benchmarks import inputs


def stage_fns(pair: inputs.Pair, weights: np.ndarray, fast_mod) -> dict[str, Callable[[], object]]:
    return {"premask": lambda: fast_mod.premask(pair.gan, pair.mse, pair.seg, weights)}
