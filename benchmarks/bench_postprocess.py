"""Benchmark of desra_fast's post-processing: the fused erode 5x5 + dilate 13x13 + hole filling +
area filter, and each of the four public stages alone on the pipeline's intermediate masks.
Columns of the stage breakdown of ``python -m benchmarks.compare``."""
from __future__ import annotations

from typing import Callable

import numpy as np

from benchmarks import inputs


def stage_fns(pair: inputs.Pair, weights: np.ndarray, fast_mod) -> dict[str, Callable[[], object]]:
    pre = fast_mod.premask(pair.gan, pair.mse, pair.seg, weights)
    er = np.asarray(fast_mod.erode(pre[0]))
    di = np.asarray(fast_mod.dilate(er))
    fi = np.asarray(fast_mod.fill_holes(di))
    return {
        "postprocess": lambda: fast_mod.postprocess(pre),
        "erode": lambda: fast_mod.erode(pre[0]),
        "dilate": lambda: fast_mod.dilate(er),
        "fill_holes": lambda: fast_mod.fill_holes(di),
        "filter_components": lambda: fast_mod.filter_components(fi),
    }
