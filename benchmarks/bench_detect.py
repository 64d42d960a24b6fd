"""Benchmark of the whole detection (D map -> pre-mask -> post-processing), with and without a
segmentation map: the authors' pipeline, the OpenCV/scipy composition and ``desra_fast.detect``
on the same pair, masks compared with the authors'. Part of ``python -m benchmarks.compare``."""
from __future__ import annotations

from typing import Callable

import numpy as np

from benchmarks import authors, composition, inputs
from benchmarks.timing import HALO, bench, fmt_mpxs, fmt_n, fmt_s, fmt_x, med

VARIANTS = (("seg", "Full detection with a segmentation map (the released pipeline)"),
            ("noseg", "Full detection without a segmentation map"))


def stage_fns(pair: inputs.Pair, weights: np.ndarray, fast_mod) -> dict[str, Callable[[], object]]:
    """desra_fast's whole call, for the stage breakdown."""
    return {"detect": lambda: fast_mod.detect(pair.gan, pair.mse, pair.seg)}


def run(pair: inputs.Pair, repeats: int, budget: float, weights: np.ndarray, fast_mod) -> dict:
    """{"seg": ..., "noseg": ...}: times, medians, mask differences against the authors'."""
    res: dict = {}
    for variant, seg in (("seg", pair.seg), ("noseg", None)):
        fns = {
            "authors": lambda: authors.detect(pair.gan, pair.mse, seg, weights),
            "composition": lambda: composition.detect(pair.gan, pair.mse, seg, weights),
        }
        if fast_mod is not None:
            fns["desra_fast"] = lambda: fast_mod.detect(pair.gan, pair.mse, seg)
        times, first = bench(fns, repeats, {"authors": budget})
        ref = first["authors"]
        masks = {"authors": ref, "composition": first["composition"]}
        if "desra_fast" in first:
            full = np.asarray(first["desra_fast"])
            masks["desra_fast"] = full[HALO:-HALO, HALO:-HALO]
            frame_ok = int(np.count_nonzero(full)) == int(np.count_nonzero(masks["desra_fast"]))
        else:
            frame_ok = True
        res[variant] = {
            "times": times,
            "median": {k: med(v) for k, v in times.items()},
            "diff_vs_authors": {k: int(np.count_nonzero(np.asarray(m, bool) != ref)) for k, m in masks.items()
                                if k != "authors"},
            "mask_pixels": int(np.count_nonzero(ref)),
            "frame_false": frame_ok,
        }
        m = res[variant]["median"]
        print(f"  detect ({variant}): " + ", ".join(
            f"{k} {v * 1e3:.1f} ms (n={len(times[k])})" for k, v in m.items())
            + f"; mask diff vs authors: {res[variant]['diff_vs_authors']}", flush=True)
    return res


def render(results: list[dict]) -> list[str]:
    """The two detection tables (one row per size)."""
    L: list[str] = []
    a = L.append
    for variant, title in VARIANTS:
        a(f"## {title}")
        a("")
        a("| size | H x W | authors | n | composition | n | desra_fast | n | desra_fast Mpx/s "
          "| vs authors | vs composition | mask px | diff composition | diff desra_fast |")
        a("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            v = r[variant]
            m, t = v["median"], v["times"]
            d = v["diff_vs_authors"]
            a(f"| {r['mpx']:g} Mpx | {r['shape'][0]} x {r['shape'][1]} | {fmt_s(m.get('authors'))} | {fmt_n(t, 'authors')} "
              f"| {fmt_s(m.get('composition'))} | {fmt_n(t, 'composition')} | {fmt_s(m.get('desra_fast'))} | {fmt_n(t, 'desra_fast')} "
              f"| {fmt_mpxs(r['pixels'], m.get('desra_fast'))} | {fmt_x(m.get('authors'), m.get('desra_fast'))} "
              f"| {fmt_x(m.get('composition'), m.get('desra_fast'))} | {v['mask_pixels']} "
              f"| {d.get('composition', 'n/a')} | {d.get('desra_fast', 'n/a')} |")
        a("")
    a("Times in seconds unless marked ms. `mask px`: artifact pixels in the authors' mask; `diff ...`:")
    a("pixels where that implementation's mask differs from the authors' (valid region; desra_fast's")
    a("5-pixel frame is checked to be False). The composition computes D in float32 and so flips")
    a("the few pixels whose D lies within float32 error of the threshold.")
    a("")
    return L
