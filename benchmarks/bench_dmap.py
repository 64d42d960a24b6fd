"""Benchmark of the D map alone (Eq. 6 of the paper with the released Gaussian window): the
authors' float64 ``filter2D`` pipeline, the OpenCV composition and ``desra_fast.d_map`` on the
same pair, errors against the authors' float64 map. Part of ``python -m benchmarks.compare``."""
from __future__ import annotations

from typing import Callable

import numpy as np

from benchmarks import authors, composition, inputs
from benchmarks.timing import bench, fmt_mpxs, fmt_s, fmt_x, med


def stage_fns(pair: inputs.Pair, weights: np.ndarray, fast_mod) -> dict[str, Callable[[], object]]:
    """desra_fast's D map, for the stage breakdown."""
    return {"d_map": lambda: fast_mod.d_map(pair.gan, pair.mse)}


def run(pair: inputs.Pair, repeats: int, budget: float, fast_mod) -> dict:
    """Times, medians and the largest |D - D_authors| of each implementation."""
    fns = {
        "authors": lambda: authors.d_map(pair.gan, pair.mse),
        "composition": lambda: composition.d_map(pair.gan, pair.mse),
    }
    if fast_mod is not None:
        fns["desra_fast"] = lambda: fast_mod.d_map(pair.gan, pair.mse)
    times, first = bench(fns, repeats, {"authors": budget})
    ref = first["authors"]
    res = {
        "times": times, "median": {k: med(v) for k, v in times.items()},
        "max_abs_err": {k: float(np.max(np.abs(np.asarray(v, np.float64) - ref)))
                        for k, v in first.items() if k != "authors"},
    }
    print("  d_map: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in res["median"].items())
          + f"; max |D - D64|: {res['max_abs_err']}", flush=True)
    return res


def render(results: list[dict]) -> list[str]:
    """The D-map table (one row per size)."""
    L: list[str] = []
    a = L.append
    a("## D map alone")
    a("")
    a("| size | authors | Mpx/s | composition | Mpx/s | desra_fast | Mpx/s | vs authors | vs composition "
      "| max abs err composition | max abs err desra_fast |")
    a("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["dmap"]["median"]
        e = r["dmap"]["max_abs_err"]
        px = r["pixels"]
        a(f"| {r['mpx']:g} Mpx | {fmt_s(m.get('authors'))} | {fmt_mpxs(px, m.get('authors'))} | {fmt_s(m.get('composition'))} "
          f"| {fmt_mpxs(px, m.get('composition'))} | {fmt_s(m.get('desra_fast'))} | {fmt_mpxs(px, m.get('desra_fast'))} "
          f"| {fmt_x(m.get('authors'), m.get('desra_fast'))} | {fmt_x(m.get('composition'), m.get('desra_fast'))} "
          f"| {e.get('composition', float('nan')):.1e} | "
          + (f"{e['desra_fast']:.1e} |" if "desra_fast" in e else "n/a |"))
    a("")
    a("Errors are against the authors' float64 D map.")
    a("")
    return L
