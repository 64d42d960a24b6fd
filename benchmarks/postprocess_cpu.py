"""Post-processing alone (erode -> dilate -> fill holes -> area filter) on a realistic 4 Mpx mask:
desra_fast._C.postprocess (bit-packed, run-based labelling) against OpenCV/scipy compositions,
all in one process, medians of repeated runs (other jobs may share the 2 cores).

    python -m benchmarks.postprocess_cpu [--mpx 4] [--repeat 21] [--threshold 0.7]

The mask is the thresholded D map of the benchmark pair (``benchmarks.inputs``, with the
semantic weights), exactly what the post-processing receives in ``detect``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from scipy import ndimage

from benchmarks import composition, inputs
from desra_fast import _C

ONES5 = np.ones((5, 5), np.uint8)
ONES3 = np.ones((3, 3), bool)


def scipy_cv2(m01: np.ndarray, area: int) -> np.ndarray:
    """cv2.erode + cv2.dilate + scipy binary_fill_holes + cv2.connectedComponentsWithStats + np.isin."""
    e = cv2.erode(m01, ONES5, iterations=1)
    d = cv2.dilate(e, ONES5, iterations=3)
    f = ndimage.binary_fill_holes(d, structure=ONES3).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(f, connectivity=8)
    keep = np.nonzero(stats[1:, cv2.CC_STAT_AREA] > area)[0] + 1
    return np.isin(labels, keep)


def native(m01: np.ndarray, area: int, out: np.ndarray) -> np.ndarray:
    _C.postprocess(m01[None], area, out)
    return out


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up (thread pool, page faults)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpx", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--area", type=int, default=4000)
    ap.add_argument("--threshold", type=float, default=0.7, help="D' threshold (higher: more foreground)")
    args = ap.parse_args()

    pair = inputs.make_pair(args.mpx)
    d = composition.d_map(pair.gan, pair.mse)
    m255 = composition.premask(d, pair.seg, inputs.load_weights(), args.threshold)
    m01 = (m255 > 0).astype(np.uint8)
    h, w = m01.shape
    full = np.zeros((1, h + 10, w + 10), bool)
    out = full[:, 5:-5, 5:-5]  # the interior view the API passes

    expected = scipy_cv2(m01, args.area)
    got = native(m01, args.area, out)[0]
    assert np.array_equal(got, expected), "native post-processing differs from scipy/OpenCV"
    assert np.array_equal(composition.postprocess(m255, args.area), expected)

    print(f"mask {h}x{w} ({h * w / 1e6:.2f} Mpx), foreground {m01.mean():.1%} before, "
          f"{expected.mean():.1%} after; threads={_C.num_threads()}; median of {args.repeat}")
    rows = [
        ("cv2.erode+dilate, scipy fill_holes, cv2 CC+stats, np.isin", lambda: scipy_cv2(m01, args.area)),
        ("benchmarks.composition (cv2.floodFill fill, keep[labels])", lambda: composition.postprocess(m255, args.area)),
        ("desra_fast._C.postprocess (into interior view)", lambda: native(m01, args.area, out)),
    ]
    times = [(name, median_ms(fn, args.repeat)) for name, fn in rows]
    ours = times[-1][1]
    for name, t in times:
        print(f"{t:9.2f} ms  {ours and t / ours:6.1f}x  {name}")
    _C.set_num_threads(1)
    t1 = median_ms(lambda: native(m01, args.area, out), args.repeat)
    _C.set_num_threads(0)
    print(f"{t1:9.2f} ms  {t1 and times[0][1] / t1:6.1f}x  desra_fast._C.postprocess with 1 thread")


if __name__ == "__main__":
    main()
