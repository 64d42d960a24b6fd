"""Benchmark of the CPU-kernel instruction-set paths: every path of ``desra_fast._C`` the CPU can
run (forced one after another), the authors' pipeline and the OpenCV composition on a 4 Mpx pair
made only of real SR outputs, detect without and with seg and the D map, all interleaved round
by round; ratios are medians of per-round ratios. Run by ``python -m benchmarks.compare``
(``--isa-paths-only`` for this section alone).
"""
from __future__ import annotations

import os
from typing import Callable

import cv2
import numpy as np

from benchmarks import authors, composition, inputs
from benchmarks.timing import HALO, fmt_mpxs, fmt_s, machine_table, med, ratio, rounds

# Targets of the CPU-kernel dispatch work (4 Mpx real-photo pair, this machine).
TARGET_ISA_VS_AUTHORS = 50.0       # detect without seg, best path
TARGET_ISA_VS_COMPOSITION = 10.0
TARGET_ISA_DMAP_MPXS = 250.0
TARGET_AVX2_VS_BASELINE = 3.0


def real_photo_pair(mpx: float = 4.0, seed: int = 0) -> inputs.Pair:
    """A pair of ~``mpx`` Mpx tiled ONLY from the real SR outputs in ``samples/`` (Real-ESRGAN x4plus =
    GAN, SRMD x4 = MSE of the same LR images; random crops, flips, mild rescales): no synthetic
    texture, so the regions are the ones the real models produced (few). seg = blocky label map."""
    h, w = inputs.shape_for(mpx)
    rng = np.random.default_rng([int(round(mpx * 1000)), seed, 14])
    _, real_pairs = inputs._sources()
    gan = np.empty((h, w, 3), np.uint8)
    mse = np.empty((h, w, 3), np.uint8)
    y = 0
    for ch in inputs._splits(h, 300, 420, rng):
        x = 0
        for cw in inputs._splits(w, 300, 420, rng):
            g, m = inputs._cut(real_pairs[int(rng.integers(len(real_pairs)))], ch, cw, rng)
            gan[y:y + ch, x:x + cw] = np.clip(np.rint(g), 0, 255)
            mse[y:y + ch, x:x + cw] = np.clip(np.rint(m), 0, 255)
            x += cw
        y += ch
    return inputs.Pair(gan=gan, mse=mse, seg=inputs._label_map(h, w, rng), mpx_nominal=float(mpx))


def _load_reference_module(path: str):
    """Another build of desra_fast._C (e.g. the old -march=native one), loaded beside ours."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_C", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_isa_paths(repeats: int, weights: np.ndarray, fast_mod, reference: str | None) -> dict:
    """Every ISA path of desra_fast side by side with the authors and the composition.

    Per round each callable runs once (authors, composition, then desra_fast on every path the CPU
    can run, the path switched right before its call), so a change of machine load hits all alike;
    a ratio is the median of the per-round ratios. ``reference``: the path of another build of
    ``desra_fast._C`` (e.g. the former default ``-march=native`` one) timed in the same rounds on
    the raw kernels (``detect``, or ``premask`` + ``postprocess`` in builds without it, and ``dmap``).
    """
    C = _native_C()
    isas = list(C.cpu_isas_available())
    before = C.cpu_isa()
    ref = _load_reference_module(reference) if reference else None
    pair = real_photo_pair(4.0)
    g1, m1 = pair.gan[None], pair.mse[None]
    res: dict = {"shape": pair.shape, "pixels": pair.pixels, "isas": isas, "reference": reference}
    print(f"\n== ISA paths, real-photo pair {pair.shape[0]}x{pair.shape[1]} ({pair.pixels} px): {isas}", flush=True)

    def on(isa, fn):
        def call():
            C._set_cpu_isa(isa)
            return fn()
        return call

    def raw_detect(mod, seg):
        labels = None if seg is None else seg[None]
        w = None if seg is None else weights

        def call():
            full = np.zeros((1,) + pair.shape, np.bool_)
            if hasattr(mod, "detect"):  # the fused entry point (no pre-mask array)
                mod.detect(g1, m1, labels, w, fast_mod.THRESHOLD, 0, 1.0, fast_mod.AREA_THRESHOLD,
                           full[:, HALO:-HALO, HALO:-HALO])
            else:  # builds before it
                pre = mod.premask(g1, m1, labels, w, fast_mod.THRESHOLD, 0, 1.0)
                mod.postprocess(pre, fast_mod.AREA_THRESHOLD, full[:, HALO:-HALO, HALO:-HALO])
            return full[0]
        return call

    try:
        for variant, seg in (("noseg", None), ("seg", pair.seg)):
            fns: dict[str, Callable[[], object]] = {
                "authors": lambda seg=seg: authors.detect(pair.gan, pair.mse, seg, weights),
                "composition": lambda seg=seg: composition.detect(pair.gan, pair.mse, seg, weights),
            }
            for isa in isas:
                fns[isa] = on(isa, lambda seg=seg: fast_mod.detect(pair.gan, pair.mse, seg))
            if ref is not None:
                fns["reference build"] = raw_detect(ref, seg)
                fns[f"{isas[0]} (raw kernels)"] = on(isas[0], raw_detect(C, seg))
            times, first = rounds(fns, repeats)
            evaluated = None
            if hasattr(C, "_premask_evaluated_count"):  # share of pixels whose D detect computed
                C._set_cpu_isa(isas[0])
                C._premask_evaluated_count(True)
                fast_mod.detect(pair.gan, pair.mse, seg)
                evaluated = C._premask_evaluated_count(True) / ((pair.shape[0] - 2 * HALO) * (pair.shape[1] - 2 * HALO))
            want = np.asarray(first["authors"], bool)
            diff = {}
            for k, m in first.items():
                if k == "authors":
                    continue
                m = np.asarray(m, bool)
                if m.shape != want.shape:  # full-size desra_fast masks: compare the valid region
                    assert not m[:HALO].any() and not m[-HALO:].any() and not m[:, :HALO].any() and not m[:, -HALO:].any()
                    m = m[HALO:-HALO, HALO:-HALO]
                diff[k] = int(np.count_nonzero(m != want))
            res[variant] = {"times": times, "median": {k: med(v) for k, v in times.items()}, "diff": diff,
                            "evaluated": evaluated,
                            "mask_pixels": int(np.count_nonzero(want)),
                            "regions": int(cv2.connectedComponents(want.astype(np.uint8), connectivity=8)[0] - 1)}
            print(f"  detect ({variant}): " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in res[variant]["median"].items())
                  + f"; mask diff vs authors {diff}", flush=True)

        fns = {"composition": lambda: composition.d_map(pair.gan, pair.mse)}
        for isa in isas:
            fns[isa] = on(isa, lambda: C.dmap(g1, m1, 0, 1.0))
        if ref is not None:
            fns["reference build"] = lambda: ref.dmap(g1, m1, 0, 1.0)
        cpu: dict[str, list[float]] = {}
        times, first = rounds(fns, repeats, cpu)
        d64 = authors.d_map(pair.gan, pair.mse)
        res["dmap"] = {"times": times, "median": {k: med(v) for k, v in times.items()},
                       "cpu": {k: min(v) for k, v in cpu.items()},
                       "max_abs_err": {k: float(np.max(np.abs(np.asarray(v, np.float64).reshape(d64.shape) - d64)))
                                       for k, v in first.items()}}
        print("  d_map: " + ", ".join(f"{k} {pair.pixels / v / 1e6:.0f} Mpx/s" for k, v in res["dmap"]["median"].items()),
              flush=True)
    finally:
        C._set_cpu_isa(before)
    return res


def _native_C():
    from desra_fast import _native

    return _native.C


def render_isa(r: dict) -> str:
    L: list[str] = []
    a = L.append
    isas, px = r["isas"], r["pixels"]
    best = isas[0]
    a("## CPU-kernel instruction-set paths side by side (real-photo 4 Mpx pair)")
    a("")
    a(f"Pair: {r['shape'][0]} x {r['shape'][1]}, tiled only from the real Real-ESRGAN x4plus (GAN) / SRMD x4 (MSE)")
    a("outputs in `samples/` (crops, flips, mild rescales; no synthetic texture: `isa_paths.real_photo_pair`).")
    a("One build of `desra_fast._C`; each path forced with `_C._set_cpu_isa` right before its call. Every")
    a("round calls each column once (authors, composition, then every path), after one warm-up call each;")
    a("`x` columns are medians of the per-round ratios, times are medians.")
    if r.get("reference"):
        a(f"`reference build` = another build of the module (`{r['reference']}`), timed on its raw kernels")
        a(f"(`_C.detect`, or `premask` + `postprocess` where it has none, as `{best} (raw kernels)` is for ours) in the same rounds.")
    a("")
    for variant, title in (("noseg", "detect without seg"), ("seg", "detect with seg")):
        v = r[variant]
        t, m = v["times"], v["median"]
        a(f"### {title} (authors' mask: {v['mask_pixels']} px in {v['regions']} regions)")
        a("")
        a("| implementation | median | Mpx/s | vs authors | vs composition | mask px != authors |")
        a("|---|---|---|---|---|---|")
        for k in t:
            vs_a = ratio(t, "authors", k)
            vs_c = ratio(t, "composition", k)
            a(f"| {k} | {fmt_s(m[k])} | {fmt_mpxs(px, m[k])} | {vs_a:.1f}x | {vs_c:.2f}x | {v['diff'].get(k, 0) if k != 'authors' else 0} |")
        a("")
        if v.get("evaluated") is not None:
            a(f"`detect` computed D on {100 * v['evaluated']:.1f} % of the pixels (`_C._premask_evaluated_count`): every fifth")
            a("row first, then only where the 5x5 erosion can keep a pixel (the full pass when that is most of them).")
            a("")
    d = r["dmap"]
    a("### D map alone")
    a("")
    a("| implementation | median | Mpx/s | Mpx per CPU-second | vs baseline | max abs err vs float64 |")
    a("|---|---|---|---|---|---|")
    base = isas[-1]
    for k in d["times"]:
        vb = ratio(d["times"], base, k)
        a(f"| {k} | {fmt_s(d['median'][k])} | {fmt_mpxs(px, d['median'][k])} | {fmt_mpxs(px, d['cpu'][k])} | {vb:.2f}x "
          f"| {d['max_abs_err'][k]:.1e} |")
    a("")
    a("`Mpx per CPU-second`: pixels / the process CPU time of the fastest call (all threads). On a loaded")
    a("machine the wall-clock Mpx/s drops with the share of the cores this process gets; the CPU-time")
    a("figure mostly does not (cache and memory contention still lower it): with the kernels' threads")
    a(f"scaling, an otherwise idle {os.cpu_count()}-core machine gives about {os.cpu_count()}x it.")
    a("")
    a("### Targets")
    a("")
    a("| target | measured | met |")
    a("|---|---|---|")
    tn = r["noseg"]["times"]
    va, vc = ratio(tn, "authors", best), ratio(tn, "composition", best)
    a(f"| detect (no seg, {best}) >= {TARGET_ISA_VS_AUTHORS:g}x the authors' pipeline | {va:.1f}x | {'yes' if va >= TARGET_ISA_VS_AUTHORS else 'no'} |")
    a(f"| detect (no seg, {best}) >= {TARGET_ISA_VS_COMPOSITION:g}x the OpenCV composition | {vc:.1f}x | {'yes' if vc >= TARGET_ISA_VS_COMPOSITION else 'no'} |")
    dm = px / d["median"][best] / 1e6
    dc = px / d["cpu"][best] / 1e6 * (os.cpu_count() or 1)
    a(f"| D map ({best}) >= {TARGET_ISA_DMAP_MPXS:g} Mpx/s on {os.cpu_count()} cores | {dm:.0f} Mpx/s wall "
      f"(CPU-time equivalent {dc:.0f}) | {'yes' if dm >= TARGET_ISA_DMAP_MPXS else 'no'} |")
    if "avx2" in d["times"] and "baseline" in d["times"]:
        q = ratio(d["times"], "baseline", "avx2")
        a(f"| D map: avx2 >= {TARGET_AVX2_VS_BASELINE:g}x baseline | {q:.2f}x | {'yes' if q >= TARGET_AVX2_VS_BASELINE else 'no'} |")
    if "reference build" in d["times"]:
        q = ratio(d["times"], "reference build", best)
        qd = ratio(r["noseg"]["times"], "reference build", f"{best} (raw kernels)")
        a(f"| {best} path vs the reference build: D map / detect kernels (no seg) | {q:.2f}x / {qd:.2f}x | {'yes' if min(q, qd) >= 1 else 'no'} |")
    diffs = [n for v in ("noseg", "seg") for k, n in r[v]["diff"].items() if k not in ("composition",)]
    a(f"| masks identical to the float64 pipeline on every path | {sum(diffs)} differing pixels | {'yes' if sum(diffs) == 0 else 'no'} |")
    a("")
    if "avx2" in tn and "baseline" in tn:
        a(f"The paths compare on the D map, where they do the same work. In `detect` avx2 is "
          f"{ratio(tn, 'baseline', 'avx2'):.2f}x baseline: D is")
        a("computed on a small share of the pixels there, and the post-processing, the same code on every")
        a("path, is a larger part of the call.")
        a("")
    return "\n".join(L)


def render_isa_page(isa: dict, mach: dict, command: str, load: tuple, other: tuple | None) -> str:
    from desra_fast import cpu_info

    mach = dict(mach, **{"desra_fast CPU kernels": f"{cpu_info()['compiled']} compiled, {cpu_info()['available']} runnable"})
    head = ["# desra_fast CPU-kernel paths", "", "Generated by `benchmarks/compare.py`; reproduce with:", "",
            "```", f"cd /path/to/desra_fast && {command}", "```", ""]
    return "\n".join(head + machine_table(mach, load, other)) + "\n" + render_isa(isa)
