"""Compare the authors' pipeline, the best OpenCV/scipy composition and desra_fast (CPU).

    python -m benchmarks.compare [--sizes 0.25,1,4,16] [--repeats 5] [--out benchmarks/RESULTS.md]
    python -m benchmarks.compare --isa-paths-only [--reference-module OTHER_BUILD/_C.so]

``--isa-paths-only`` (also part of a full run): every CPU-kernel instruction-set path of
desra_fast (forced one after another), the authors' pipeline and the composition on a 4 Mpx pair
made only of real SR outputs, without and with seg, all interleaved round by round; ratios are
medians of per-round ratios (see :func:`benchmarks.isa_paths.run_isa_paths`).

All three run in this one process on the same inputs (``benchmarks.inputs``: real-looking pairs
and ADE20K label maps), timed with ``time.perf_counter`` after one untimed warm-up call each;
the median is reported (see :func:`benchmarks.timing.bench`). The authors' pipeline takes seconds at 4-16 Mpx: it
is timed in a block of its own and gets as many calls as fit in ``--authors-budget`` seconds (at
least 1, at most ``--repeats``); composition and desra_fast are interleaved round-robin.
Peak memory is measured in a fresh process per size and implementation (``benchmarks.memory``).
Prints the tables and writes them, with the machine description, to ``--out``.

One benchmark per operation, beside the shared timing helpers of ``benchmarks.timing``:
``bench_dmap`` (D map), ``bench_premask`` (pre-mask), ``bench_postprocess`` (post-processing),
``bench_detect`` (whole detection), ``isa_paths`` (every CPU-kernel path); this module runs them
per size and assembles the report.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks import (authors, bench_detect, bench_dmap, bench_postprocess, bench_premask, composition,
                        inputs)
from benchmarks.isa_paths import render_isa, render_isa_page, run_isa_paths
from benchmarks.timing import ROOT, OtherLoad, bench, machine, med

IMPLS = ("authors", "composition", "desra_fast")

# Targets of the CPU detection (4 Mpx pair, this machine).
TARGET_VS_AUTHORS = 50.0
TARGET_VS_COMPOSITION = 3.0
TARGET_DMAP_MPXS = 150.0
TARGET_SCALING = 4.5          # time(16 Mpx) / time(4 Mpx)
TARGET_EXTRA_BPP = 12.0       # bytes per pixel above the inputs, one pair


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
    res.update(bench_detect.run(pair, repeats, budget, weights, fast_mod))

    # D map alone.
    res["dmap"] = bench_dmap.run(pair, repeats, budget, fast_mod)

    # desra_fast stage breakdown (seg variant: the released pipeline).
    if fast_mod is not None:
        stage_fns = {}
        for op in (bench_dmap, bench_premask, bench_postprocess, bench_detect):
            stage_fns.update(op.stage_fns(pair, weights, fast_mod))
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


# ----------------------------------------------------------------------------------- report
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

    L += bench_detect.render(results)
    L += bench_dmap.render(results)

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

    a("## Targets (4 Mpx pair; scaling 4 -> 16 Mpx)")
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
