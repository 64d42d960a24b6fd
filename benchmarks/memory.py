"""Peak extra memory of one detection call, measured in a fresh process.

Run by ``benchmarks.compare`` as ``python -m benchmarks.memory --impl fast --mpx 4 [--seg]``;
prints one JSON line.

Method (Linux):
1. In a new interpreter: build the input pair (gan, mse, seg), run the implementation once on
   a 0.25 Mpx pair (imports, thread-pool start-up, lazy initialisation are not counted).
2. ``gc.collect()`` and glibc ``malloc_trim(0)`` give freed heap back to the OS; the resident set
   size now (``VmRSS``) is the baseline: interpreter + libraries + the inputs.
3. Writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's peak-RSS mark (``VmHWM``) to the
   current RSS. Then one call runs, its result kept alive, and ``VmHWM`` is read:
   ``extra = VmHWM - baseline`` counts every page touched by the call, whoever allocated it
   (numpy, OpenCV, the C++ kernels' std::vector buffers, thread stacks), including the returned
   mask. Divided by the pixel count H*W it gives bytes per pixel.
4. Independently, ``tracemalloc`` reports the peak of the allocations it can see (numpy array
   buffers and Python objects; not C++ heap): a lower bound that shows which part is numpy's.
Without ``clear_refs`` (non-Linux or restricted /proc), the fallback is ``ru_maxrss`` after the call
minus the baseline; it misses the call's peak when that is below an earlier one (e.g. while the
inputs were built), so it is flagged ``"method": "ru_maxrss"`` in the output.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import sys
import time
import tracemalloc


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _runner(impl: str, seg: bool):
    """(callable(pair), name) for the implementation."""
    from benchmarks import inputs

    weights = inputs.load_weights()
    if impl == "fast":
        from benchmarks import fast
        return lambda p: fast.detect(p.gan, p.mse, p.seg if seg else None)
    if impl == "composition":
        from benchmarks import composition
        return lambda p: composition.detect(p.gan, p.mse, p.seg if seg else None, weights)
    if impl == "authors":
        from benchmarks import authors
        return lambda p: authors.detect(p.gan, p.mse, p.seg if seg else None, weights)
    raise ValueError(f"unknown impl {impl!r}")


def measure(impl: str, mpx: float, seg: bool) -> dict:
    from benchmarks import inputs

    run = _runner(impl, seg)
    run(inputs.make_pair(0.25, seed=1))                     # warm-up on another, small pair
    pair = inputs.make_pair(mpx)
    input_bytes = pair.gan.nbytes + pair.mse.nbytes + (pair.seg.nbytes if seg else 0)
    _trim()
    base_kb = _status_kb("VmRSS")
    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    method = "VmHWM" if (base_kb is not None and _reset_peak()) else "ru_maxrss"
    tracemalloc.start()
    t0 = time.perf_counter()
    result = run(pair)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if method == "VmHWM":
        peak_kb = _status_kb("VmHWM")
        extra = (peak_kb - base_kb) * 1024
    else:
        extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - max(ru_before, base_kb or 0)) * 1024
    del result
    return {
        "impl": impl, "mpx": mpx, "seg": seg, "pixels": pair.pixels, "method": method,
        "input_bytes": input_bytes, "extra_bytes": int(extra),
        "extra_bytes_per_pixel": extra / pair.pixels,
        "traced_peak_bytes": int(traced_peak),
        "traced_peak_bytes_per_pixel": traced_peak / pair.pixels,
        "seconds_with_tracemalloc": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("fast", "composition", "authors"), required=True)
    ap.add_argument("--mpx", type=float, required=True)
    ap.add_argument("--seg", action="store_true", help="with the semantic label map")
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.impl, args.mpx, args.seg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
