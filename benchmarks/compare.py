"""Compare the authors' pipeline, the best OpenCV/scipy composition and desra_fast (CPU).

    python -m benchmarks.compare [--sizes 0.25,1,4,16] [--repeats 5] [--out benchmarks/RESULTS.md]
    python -m benchmarks.compare --isa-paths-only [--reference-module OTHER_BUILD/_C.so]

``--isa-paths-only`` (also part of a full run): every CPU-kernel instruction-set path of
desra_fast (forced one after another), the authors' pipeline and the composition on a 4 Mpx pair
made only of real SR outputs, without and with seg, all interleaved round by round; ratios are
medians of per-round ratios (see :func:`run_isa_paths`).

All three run in this one process on the same inputs (``benchmarks.inputs``: real-looking pairs
and ADE20K label maps), timed with ``time.perf_counter`` after one untimed warm-up call each;
the median is reported (see :func:`bench`). The authors' pipeline takes seconds at 4-16 Mpx: it
is timed in a block of its own and gets as many calls as fit in ``--authors-budget`` seconds (at
least 1, at most ``--repeats``); composition and desra_fast are interleaved round-robin.
Peak memory is measured in a fresh process per size and implementation (``benchmarks.memory``).
Prints the tables and writes them, with the machine description, to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from benchmarks import authors, composition, inputs

ROOT = Path(__file__).resolve().parent.parent
HALO = 5
IMPLS = ("authors", "composition", "desra_fast")

# Targets of GitHub issue 3 (4 Mpx pair, this machine).
TARGET_VS_AUTHORS = 50.0
TARGET_VS_COMPOSITION = 3.0
TARGET_DMAP_MPXS = 150.0
TARGET_SCALING = 4.5          # time(16 Mpx) / time(4 Mpx)
TARGET_EXTRA_BPP = 12.0       # bytes per pixel above the inputs, one pair


# ----------------------------------------------------------------------------------- timing
def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(fns: dict[str, Callable[[], object]], repeats: int, budgets: dict[str, float] | None = None
          ) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Time each callable; return (times in seconds, the result of each one's first call).

    Every callable first gets one untimed warm-up call (its result is the one returned). Callables
    with a ``budgets[name]`` (seconds; the authors' pipeline) then get ``max(1, min(repeats,
    budget // warm-up time))`` timed calls in a block of their own, and when even that one call
    would exceed the budget the warm-up call is used as the single measurement. After that block
    and a short pause (so that the OS settles after the slow pipeline frees its gigabyte of
    float64 arrays), the other callables get ``repeats`` timed calls each, interleaved
    round-robin so that a change of machine load hits them alike.
    """
    budgets = budgets or {}
    times: dict[str, list[float]] = {k: [] for k in fns}
    first: dict[str, object] = {}
    for name, fn in fns.items():
        if name not in budgets:
            continue
        t, first[name] = _timed(fn)
        if t > budgets[name]:
            times[name].append(t)
            continue
        for _ in range(max(1, min(repeats, int(budgets[name] // max(t, 1e-9))))):
            times[name].append(_timed(fn)[0])
    if budgets:
        gc.collect()
        time.sleep(0.5)
    rest = {k: fn for k, fn in fns.items() if k not in budgets}
    for name, fn in rest.items():
        _, first[name] = _timed(fn)
    for _ in range(repeats):
        for name, fn in rest.items():
            times[name].append(_timed(fn)[0])
    return times, first


def med(ts: list[float] | None) -> float | None:
    return statistics.median(ts) if ts else None


# ----------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ", ".join(x for x in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl")
                                     if x in flags)
    except OSError:
        pass
    return "?"


def _mem_total_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "?"


def _version(mod: str) -> str:
    try:
        m = __import__(mod)
        return str(getattr(m, "__version__", "?"))
    except Exception:  # noqa: BLE001 - optional packages
        return "not installed"


def _git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine(fast_threads: int | None) -> dict[str, str]:
    return {
        "CPU": _cpu_model(),
        "cores (os.cpu_count)": str(os.cpu_count()),
        "SIMD": _cpu_flags(),
        "memory": _mem_total_gib(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "numpy / scipy / OpenCV": f"{np.__version__} / {_version('scipy')} / {cv2.__version__}",
        "torch": _version("torch"),
        "desra_fast": f"{_version('desra_fast')} at git {_git_rev()}",
        "threads": f"OpenCV {cv2.getNumThreads()}, desra_fast {fast_threads if fast_threads else 'n/a'}, "
                   "numpy 1 (element-wise)",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


class OtherLoad:
    """CPU time used by OTHER processes while the benchmark runs (from /proc/stat minus our own
    process and its children): tells whether the machine was really quiet. The load average
    cannot, since it also counts this benchmark (and decays over minutes)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal: busy = all but idle and iowait
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def result(self) -> tuple[float, float] | None:
        """(others' CPU seconds, wall seconds), or None without /proc/stat."""
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return None
        others = max(0.0, (busy - self.busy0) - (self._own() - self.own0))
        return others, time.monotonic() - self.t0


# ----------------------------------------------------------------------------------- memory
def measure_memory(impl: str, mpx: float, seg: bool) -> dict | None:
    cmd = [sys.executable, "-m", "benchmarks.memory", "--impl", impl, "--mpx", repr(mpx)]
    if seg:
        cmd.append("--seg")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  memory {impl} {mpx:g} Mpx failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- run
def run_size(mpx: float, repeats: int, budget: float, weights: np.ndarray, fast_mod, do_memory: bool
             ) -> dict:
    pair = inputs.make_pair(mpx)
    px = pair.pixels
    res: dict = {"mpx": mpx, "shape": pair.shape, "pixels": px}
    print(f"\n== {mpx:g} Mpx ({pair.shape[0]}x{pair.shape[1]} = {px} px)", flush=True)

    # Full detection, with and without the segmentation map.
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

    # D map alone.
    fns = {
        "authors": lambda: authors.d_map(pair.gan, pair.mse),
        "composition": lambda: composition.d_map(pair.gan, pair.mse),
    }
    if fast_mod is not None:
        fns["desra_fast"] = lambda: fast_mod.d_map(pair.gan, pair.mse)
    times, first = bench(fns, repeats, {"authors": budget})
    ref = first["authors"]
    res["dmap"] = {
        "times": times, "median": {k: med(v) for k, v in times.items()},
        "max_abs_err": {k: float(np.max(np.abs(np.asarray(v, np.float64) - ref)))
                        for k, v in first.items() if k != "authors"},
    }
    print("  d_map: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in res["dmap"]["median"].items())
          + f"; max |D - D64|: {res['dmap']['max_abs_err']}", flush=True)

    # desra_fast stage breakdown (seg variant: the released pipeline).
    if fast_mod is not None:
        pre = fast_mod.premask(pair.gan, pair.mse, pair.seg, weights)
        er = np.asarray(fast_mod.erode(pre[0]))
        di = np.asarray(fast_mod.dilate(er))
        fi = np.asarray(fast_mod.fill_holes(di))
        stage_fns = {
            "d_map": lambda: fast_mod.d_map(pair.gan, pair.mse),
            "premask": lambda: fast_mod.premask(pair.gan, pair.mse, pair.seg, weights),
            "postprocess": lambda: fast_mod.postprocess(pre),
            "erode": lambda: fast_mod.erode(pre[0]),
            "dilate": lambda: fast_mod.dilate(er),
            "fill_holes": lambda: fast_mod.fill_holes(di),
            "filter_components": lambda: fast_mod.filter_components(fi),
            "detect": lambda: fast_mod.detect(pair.gan, pair.mse, pair.seg),
        }
        times, _ = bench(stage_fns, repeats)
        res["stages"] = {k: med(v) for k, v in times.items()}
        print("  desra_fast stages: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in res["stages"].items()),
              flush=True)

    if do_memory:
        res["memory"] = {}
        for impl in ("fast", "composition", "authors"):
            if impl == "fast" and fast_mod is None:
                continue
            r = measure_memory(impl, mpx, seg=True)
            if r is not None:
                res["memory"][impl] = r
                print(f"  memory {impl}: {r['extra_bytes_per_pixel']:.2f} B/px extra peak "
                      f"({r['method']}), numpy-traced {r['traced_peak_bytes_per_pixel']:.2f} B/px", flush=True)
    return res


# ----------------------------------------------------------------------------------- ISA paths
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


def _rounds(fns: dict[str, Callable[[], object]], repeats: int, cpu: dict | None = None
            ) -> tuple[dict[str, list[float]], dict]:
    """One untimed warm-up call each, then ``repeats`` rounds calling every function once per round.
    ``cpu`` (optional) receives each function's process CPU seconds per call (all its threads)."""
    first = {k: fn() for k, fn in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0 = time.process_time()
            times[k].append(_timed(fn)[0])
            if cpu is not None:
                cpu.setdefault(k, []).append(time.process_time() - c0)
    return times, first


def _ratio(times: dict[str, list[float]], num: str, den: str) -> float | None:
    """Median over rounds of times[num][i] / times[den][i]."""
    if num not in times or den not in times:
        return None
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


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
            times, first = _rounds(fns, repeats)
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
        times, first = _rounds(fns, repeats, cpu)
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
    a("outputs in `samples/` (crops, flips, mild rescales; no synthetic texture: `compare.real_photo_pair`).")
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
            vs_a = _ratio(t, "authors", k)
            vs_c = _ratio(t, "composition", k)
            a(f"| {k} | {_s(m[k])} | {_mpxs(px, m[k])} | {vs_a:.1f}x | {vs_c:.2f}x | {v['diff'].get(k, 0) if k != 'authors' else 0} |")
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
        vb = _ratio(d["times"], base, k)
        a(f"| {k} | {_s(d['median'][k])} | {_mpxs(px, d['median'][k])} | {_mpxs(px, d['cpu'][k])} | {vb:.2f}x "
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
    va, vc = _ratio(tn, "authors", best), _ratio(tn, "composition", best)
    a(f"| detect (no seg, {best}) >= {TARGET_ISA_VS_AUTHORS:g}x the authors' pipeline | {va:.1f}x | {'yes' if va >= TARGET_ISA_VS_AUTHORS else 'no'} |")
    a(f"| detect (no seg, {best}) >= {TARGET_ISA_VS_COMPOSITION:g}x the OpenCV composition | {vc:.1f}x | {'yes' if vc >= TARGET_ISA_VS_COMPOSITION else 'no'} |")
    dm = px / d["median"][best] / 1e6
    dc = px / d["cpu"][best] / 1e6 * (os.cpu_count() or 1)
    a(f"| D map ({best}) >= {TARGET_ISA_DMAP_MPXS:g} Mpx/s on {os.cpu_count()} cores | {dm:.0f} Mpx/s wall "
      f"(CPU-time equivalent {dc:.0f}) | {'yes' if dm >= TARGET_ISA_DMAP_MPXS else 'no'} |")
    if "avx2" in d["times"] and "baseline" in d["times"]:
        q = _ratio(d["times"], "baseline", "avx2")
        a(f"| D map: avx2 >= {TARGET_AVX2_VS_BASELINE:g}x baseline | {q:.2f}x | {'yes' if q >= TARGET_AVX2_VS_BASELINE else 'no'} |")
    if "reference build" in d["times"]:
        q = _ratio(d["times"], "reference build", best)
        qd = _ratio(r["noseg"]["times"], "reference build", f"{best} (raw kernels)")
        a(f"| {best} path vs the reference build: D map / detect kernels (no seg) | {q:.2f}x / {qd:.2f}x | {'yes' if min(q, qd) >= 1 else 'no'} |")
    diffs = [n for v in ("noseg", "seg") for k, n in r[v]["diff"].items() if k not in ("composition",)]
    a(f"| masks identical to the float64 pipeline on every path | {sum(diffs)} differing pixels | {'yes' if sum(diffs) == 0 else 'no'} |")
    a("")
    if "avx2" in tn and "baseline" in tn:
        a(f"The paths compare on the D map, where they do the same work. In `detect` avx2 is "
          f"{_ratio(tn, 'baseline', 'avx2'):.2f}x baseline: D is")
        a("computed on a small share of the pixels there, and the post-processing, the same code on every")
        a("path, is a larger part of the call.")
        a("")
    return "\n".join(L)


# ----------------------------------------------------------------------------------- report
def _s(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if v >= 0.1 else f"{v * 1e3:.1f} ms"


def _x(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.1f}x"


def _mpxs(px: int, t: float | None) -> str:
    return "n/a" if not t else f"{px / t / 1e6:.0f}"


def _n(times: dict, k: str) -> str:
    return str(len(times.get(k, [])))


def render(results: list[dict], mach: dict, command: str, load: tuple, other: tuple | None, repeats: int,
           budget: float, fast_note: str) -> str:
    L: list[str] = []
    a = L.append
    a("# desra_fast benchmark results")
    a("")
    a("Generated by `benchmarks/compare.py`; reproduce with:")
    a("")
    a("```")
    a(f"cd /path/to/desra_fast && {command}")
    a("```")
    a("")
    a("Three implementations of the same DeSRA detection (threshold 0.7, area > 4000, Gaussian window),")
    a("run in one process on the same inputs:")
    a("")
    a("- **authors**: the released pipeline (`benchmarks/authors.py`): float64 `cv2.filter2D` with the")
    a("  11x11 window per channel, Python loop over labels for the semantic weights, `cv2.erode`/`dilate`")
    a("  on the float64 mask, `scipy.ndimage.binary_fill_holes`, their per-region loop")
    a("  `image_filtered[labels == i] = 255`. Their PNG write + read between hole filling and labelling")
    a("  is I/O and is left out (replaced by the equivalent `(dst * 255).astype(uint8)`), as is the")
    a("  segmentation network (the label map is an input).")
    a("- **composition**: the fastest OpenCV/scipy/numpy composition we could write without a compiler")
    a("  (`benchmarks/composition.py`): float32 separable Gaussian (`cv2.sepFilter2D`) in cache-sized")
    a("  row strips, clamped variance, `cv2.compare`, `cv2.erode` 5x5 + `cv2.dilate` 13x13, hole filling")
    a("  by `cv2.floodFill` from the border of a padded copy (checked equal to scipy's), and")
    a("  `cv2.connectedComponentsWithStats` + a lookup table (no per-region loop).")
    a("- **desra_fast**: `desra_fast.detect(gan, mse, seg, backend=\"cpu\")` (C++ kernels, `desra_fast._C`).")
    a("")
    a("Inputs (`benchmarks/inputs.py`): deterministic 4:3 pairs tiled from real photographs and from two")
    a("real Real-ESRGAN / SRMD output pairs (`samples/`), MSE = smoothed, GAN = sharp + synthetic GAN-like")
    a("texture in elliptical regions; seg = blocky ADE20K label maps. uint8 RGB; Mpx = H*W / 10^6;")
    a("Mpx/s = H*W / median seconds / 10^6.")
    a("")
    a(f"Timing: `time.perf_counter`, median of {repeats} calls per cell after one untimed warm-up call")
    a("of each implementation on the same input. Composition and desra_fast calls are interleaved")
    a("round-robin (a change of machine load hits both alike). The authors' pipeline is timed in a block")
    a(f"of its own before them (then a 0.5 s pause) and gets as many calls as fit in {budget:g} s, at least")
    a("one; when a single call exceeds that budget (16 Mpx), the warm-up call is the measurement. The")
    a("`n` columns give the counts.")
    a("")
    a("## Machine")
    a("")
    a("| | |")
    a("|---|---|")
    for k, v in mach.items():
        a(f"| {k} | {v} |")
    a(f"| load average (1 min) before / after | {load[0]:.2f} / {load[1]:.2f} |")
    busy_share = None
    if other is not None:
        busy_share = other[0] / (other[1] * (os.cpu_count() or 1))
        a(f"| CPU used by other processes during the run | {other[0]:.1f} s over {other[1]:.0f} s wall "
          f"({100 * busy_share:.1f}% of the cores) |")
    a("")
    if (busy_share is not None and busy_share > 0.05) or (busy_share is None and load[0] > 0.5):
        a("**Note:** other processes used the CPU during this run (see above); numbers are noisy.")
        a("")
    if fast_note:
        a(f"**Note:** {fast_note}")
        a("")

    for variant, title in (("seg", "Full detection with a segmentation map (the released pipeline)"),
                           ("noseg", "Full detection without a segmentation map")):
        a(f"## {title}")
        a("")
        a("| size | H x W | authors | n | composition | n | desra_fast | n | desra_fast Mpx/s "
          "| vs authors | vs composition | mask px | diff composition | diff desra_fast |")
        a("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            v = r[variant]
            m, t = v["median"], v["times"]
            d = v["diff_vs_authors"]
            a(f"| {r['mpx']:g} Mpx | {r['shape'][0]} x {r['shape'][1]} | {_s(m.get('authors'))} | {_n(t, 'authors')} "
              f"| {_s(m.get('composition'))} | {_n(t, 'composition')} | {_s(m.get('desra_fast'))} | {_n(t, 'desra_fast')} "
              f"| {_mpxs(r['pixels'], m.get('desra_fast'))} | {_x(m.get('authors'), m.get('desra_fast'))} "
              f"| {_x(m.get('composition'), m.get('desra_fast'))} | {v['mask_pixels']} "
              f"| {d.get('composition', 'n/a')} | {d.get('desra_fast', 'n/a')} |")
        a("")
    a("Times in seconds unless marked ms. `mask px`: artifact pixels in the authors' mask; `diff ...`:")
    a("pixels where that implementation's mask differs from the authors' (valid region; desra_fast's")
    a("5-pixel frame is checked to be False). The composition computes D in float32 and so flips")
    a("the few pixels whose D lies within float32 error of the threshold.")
    a("")

    a("## D map alone")
    a("")
    a("| size | authors | Mpx/s | composition | Mpx/s | desra_fast | Mpx/s | vs authors | vs composition "
      "| max abs err composition | max abs err desra_fast |")
    a("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["dmap"]["median"]
        e = r["dmap"]["max_abs_err"]
        px = r["pixels"]
        a(f"| {r['mpx']:g} Mpx | {_s(m.get('authors'))} | {_mpxs(px, m.get('authors'))} | {_s(m.get('composition'))} "
          f"| {_mpxs(px, m.get('composition'))} | {_s(m.get('desra_fast'))} | {_mpxs(px, m.get('desra_fast'))} "
          f"| {_x(m.get('authors'), m.get('desra_fast'))} | {_x(m.get('composition'), m.get('desra_fast'))} "
          f"| {e.get('composition', float('nan')):.1e} | "
          + (f"{e['desra_fast']:.1e} |" if "desra_fast" in e else "n/a |"))
    a("")
    a("Errors are against the authors' float64 D map.")
    a("")

    if any("stages" in r for r in results):
        a("## desra_fast stage breakdown (with segmentation map, ms)")
        a("")
        names = ["d_map", "premask", "postprocess", "erode", "dilate", "fill_holes", "filter_components",
                 "detect"]
        a("| size | " + " | ".join(names) + " |")
        a("|---|" + "---|" * len(names))
        for r in results:
            if "stages" in r:
                a(f"| {r['mpx']:g} Mpx | " + " | ".join(f"{r['stages'][k] * 1e3:.1f}" for k in names) + " |")
        a("")
        a("`premask` = D map + semantic weights + threshold, fused (with the float64 re-check near the")
        a("threshold); `postprocess` = erode + dilate + fill holes + area filter, fused. `detect` =")
        a("premask + postprocess + argument checks + the full-size output. `d_map` and the four single")
        a("stages are the public functions, timed alone on the pipeline's intermediate masks.")
        a("")

    if any(r.get("memory") for r in results):
        a("## Peak memory above the inputs (one pair, with segmentation map)")
        a("")
        a("Bytes per pixel of the H x W input, i.e. MB per Mpx.")
        a("")
        a("| size | inputs B/px | desra_fast B/px | desra_fast numpy-traced B/px | composition B/px | authors B/px |")
        a("|---|---|---|---|---|---|")
        for r in results:
            mm = r.get("memory") or {}
            f = mm.get("fast")
            g = lambda k: f"{mm[k]['extra_bytes_per_pixel']:.1f}" if k in mm else "n/a"  # noqa: E731
            inp = next(iter(mm.values()))["input_bytes"] / r["pixels"] if mm else float("nan")
            a(f"| {r['mpx']:g} Mpx | {inp:.1f} | {g('fast')} | "
              + (f"{f['traced_peak_bytes_per_pixel']:.1f}" if f else "n/a")
              + f" | {g('composition')} | {g('authors')} |")
        a("")
        a("Method (`benchmarks/memory.py`): a fresh process")
        a("per cell builds the inputs and warms up on a small pair; after `gc.collect()` + `malloc_trim(0)`")
        a("its resident set size is the baseline; writing 5 to `/proc/self/clear_refs` resets the kernel's")
        a("peak-RSS mark; one `detect` call runs and `VmHWM - baseline` is its peak extra memory: every page")
        a("it touched (numpy, OpenCV, C++ buffers), the returned H x W mask included. The numpy-traced")
        a("column is `tracemalloc`'s peak over the same call (numpy buffers only, no C++ heap).")
        a("")

    a("## Targets (GitHub issue 3: 4 Mpx pair; scaling 4 -> 16 Mpx)")
    a("")
    a("| target | measured | met |")
    a("|---|---|---|")
    by = {r["mpx"]: r for r in results}
    r4 = by.get(4.0)
    if r4:
        for variant, label in (("seg", "with seg, as released"),
                               ("noseg", "without seg; informational, the released script always segments")):
            m = r4[variant]["median"]
            va = m["authors"] / m["desra_fast"] if m.get("desra_fast") else None
            vc = m["composition"] / m["desra_fast"] if m.get("desra_fast") else None
            a(f"| full detect ({label}) >= {TARGET_VS_AUTHORS:g}x the authors' pipeline | "
              + (f"{va:.1f}x | {'yes' if va >= TARGET_VS_AUTHORS else 'no'} |" if va else "n/a | n/a |"))
            a(f"| full detect ({label}) >= {TARGET_VS_COMPOSITION:g}x the OpenCV/scipy composition | "
              + (f"{vc:.1f}x | {'yes' if vc >= TARGET_VS_COMPOSITION else 'no'} |" if vc else "n/a | n/a |"))
        dm = r4["dmap"]["median"].get("desra_fast")
        dm_mpxs = r4["pixels"] / dm / 1e6 if dm else None
        a(f"| D map >= {TARGET_DMAP_MPXS:g} Mpx/s | "
          + (f"{dm_mpxs:.0f} Mpx/s | {'yes' if dm_mpxs >= TARGET_DMAP_MPXS else 'no'} |" if dm_mpxs else "n/a | n/a |"))
    r16 = by.get(16.0)
    if r4 and r16:
        for label, get in (("detect", lambda r: r["seg"]["median"].get("desra_fast")),
                           ("D map", lambda r: r["dmap"]["median"].get("desra_fast"))):
            t4, t16 = get(r4), get(r16)
            if t4 and t16:
                q = t16 / t4
                exp = r16["pixels"] / r4["pixels"]
                a(f"| {label}: time(16 Mpx) <= {TARGET_SCALING:g}x time(4 Mpx) (pixel ratio {exp:.2f}) | "
                  f"{q:.2f}x | {'yes' if q <= TARGET_SCALING else 'no'} |")
    mems = [r["memory"]["fast"] for r in results if r.get("memory", {}).get("fast")]
    if mems:
        worst = max(mems, key=lambda x: x["extra_bytes_per_pixel"])
        a(f"| extra memory <= {TARGET_EXTRA_BPP:g} B/px (one pair) | max {worst['extra_bytes_per_pixel']:.1f} B/px "
          f"({worst['mpx']:g} Mpx) | {'yes' if worst['extra_bytes_per_pixel'] <= TARGET_EXTRA_BPP else 'no'} |")
    diffs = [r[v]["diff_vs_authors"].get("desra_fast") for r in results for v in ("seg", "noseg")]
    if diffs and all(d is not None for d in diffs):
        ok = all(d == 0 for d in diffs) and all(r[v]["frame_false"] for r in results for v in ("seg", "noseg"))
        a(f"| masks identical to the float64 pipeline | {sum(diffs)} differing pixels over all sizes | "
          f"{'yes' if ok else 'no'} |")
    a("")
    return "\n".join(L)


def _machine_table(mach: dict, load: tuple, other: tuple | None) -> list[str]:
    L = ["## Machine", "", "| | |", "|---|---|"]
    L += [f"| {k} | {v} |" for k, v in mach.items()]
    L.append(f"| load average (1 min) before / after | {load[0]:.2f} / {load[1]:.2f} |")
    if other is not None:
        share = other[0] / (other[1] * (os.cpu_count() or 1))
        L.append(f"| CPU used by other processes during the run | {other[0]:.1f} s over {other[1]:.0f} s wall "
                 f"({100 * share:.1f}% of the cores) |")
        if share > 0.05:
            L += ["", "**Note:** other processes used the CPU during this run (see above): absolute times are",
                  "pessimistic and noisy; the per-round ratios are less affected."]
    return L + [""]


def render_isa_page(isa: dict, mach: dict, command: str, load: tuple, other: tuple | None) -> str:
    from desra_fast import cpu_info

    mach = dict(mach, **{"desra_fast CPU kernels": f"{cpu_info()['compiled']} compiled, {cpu_info()['available']} runnable"})
    head = ["# desra_fast CPU-kernel paths", "", "Generated by `benchmarks/compare.py`; reproduce with:", "",
            "```", f"cd /path/to/desra_fast && {command}", "```", ""]
    return "\n".join(head + _machine_table(mach, load, other)) + "\n" + render_isa(isa)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.25,1,4,16", help="comma-separated megapixels (default 0.25,1,4,16)")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per cell (median; default 7)")
    ap.add_argument("--authors-budget", type=float, default=20.0,
                    help="seconds of authors' pipeline calls per cell (at least 1 call; default 20)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--isa-paths-only", action="store_true",
                    help="only the CPU-kernel ISA paths section (real-photo 4 Mpx pair); default output "
                         "benchmarks/RESULTS_ISA.md")
    ap.add_argument("--no-isa-paths", action="store_true", help="skip the ISA paths section")
    ap.add_argument("--reference-module", default=None,
                    help="path of another build of desra_fast._C (e.g. a -march=native one) to time beside ours")
    ap.add_argument("--out", default=None,
                    help="markdown output (default: benchmarks/RESULTS.md of this checkout; '-' for none)")
    args = ap.parse_args(argv)
    try:
        sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes must be comma-separated numbers, got {args.sizes!r}")
    if not sizes or any(s <= 0 for s in sizes):
        ap.error("--sizes must be positive")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    command = "python -m benchmarks.compare" + (" " + shlex.join(argv) if argv else "")
    weights = inputs.load_weights()
    fast_mod, fast_note, fast_threads = None, "", None
    try:
        from benchmarks import fast as fast_mod
        ok, why = fast_mod.ready()
        if not ok:
            fast_mod, fast_note = None, f"desra_fast not benchmarked: {why}."
        else:
            fast_threads = fast_mod.num_threads()
    except ImportError as e:
        fast_mod, fast_note = None, f"desra_fast not benchmarked: {e}."
    if fast_note:
        print(fast_note, flush=True)

    load0 = os.getloadavg()[0]
    print(f"load average before: {load0:.2f}", flush=True)
    other_load = OtherLoad()
    warm = inputs.make_pair(0.25, seed=1)                   # warm-up: imports, thread pools, caches
    authors.detect(warm.gan, warm.mse, warm.seg, weights)
    composition.detect(warm.gan, warm.mse, warm.seg, weights)
    if fast_mod is not None:
        fast_mod.detect(warm.gan, warm.mse, warm.seg)
        fast_mod.d_map(warm.gan, warm.mse)

    results = [] if args.isa_paths_only else [
        run_size(s, args.repeats, args.authors_budget, weights, fast_mod, not args.no_memory) for s in sizes]
    isa = None
    if fast_mod is not None and not args.no_isa_paths:
        isa = run_isa_paths(args.repeats, weights, fast_mod, args.reference_module)
    load1 = os.getloadavg()[0]
    other = other_load.result()
    if other is not None:
        print(f"CPU used by other processes: {other[0]:.1f} s over {other[1]:.0f} s", flush=True)
    if args.isa_paths_only:
        text = render_isa_page(isa, machine(fast_threads), command, (load0, load1), other) if isa else fast_note
    else:
        text = render(results, machine(fast_threads), command, (load0, load1), other, args.repeats,
                      args.authors_budget, fast_note)
        if isa:
            text += "\n" + render_isa(isa)
    print("\n" + text)
    if args.out != "-":
        default = "RESULTS_ISA.md" if args.isa_paths_only else "RESULTS.md"
        out = Path(args.out) if args.out else ROOT / "benchmarks" / default
        out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
