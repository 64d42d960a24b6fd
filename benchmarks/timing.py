"""The timing and reporting helpers every benchmark of ``benchmarks/`` shares.

- :func:`bench`: one warm-up call each, a budgeted block for slow callables (the authors'
  pipeline), then ``repeats`` interleaved rounds for the others; :func:`rounds`: strictly
  interleaved rounds (every callable once per round); :func:`ratio`: median of per-round ratios.
- :func:`machine`, :class:`OtherLoad`, :func:`machine_table`: what ran the benchmark and how much
  CPU other processes took meanwhile (numbers are only comparable with that known).
- ``fmt_*``: the number formats of the result tables.
"""
from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: desra_fast's masks are full size; the reference pipelines' cover the valid region inside this frame.
HALO = 5


# ----------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], object]) -> tuple[float, object]:
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
        t, first[name] = timed(fn)
        if t > budgets[name]:
            times[name].append(t)
            continue
        for _ in range(max(1, min(repeats, int(budgets[name] // max(t, 1e-9))))):
            times[name].append(timed(fn)[0])
    if budgets:
        gc.collect()
        time.sleep(0.5)
    rest = {k: fn for k, fn in fns.items() if k not in budgets}
    for name, fn in rest.items():
        _, first[name] = timed(fn)
    for _ in range(repeats):
        for name, fn in rest.items():
            times[name].append(timed(fn)[0])
    return times, first


def med(ts: list[float] | None) -> float | None:
    return statistics.median(ts) if ts else None


def rounds(fns: dict[str, Callable[[], object]], repeats: int, cpu: dict | None = None
            ) -> tuple[dict[str, list[float]], dict]:
    """One untimed warm-up call each, then ``repeats`` rounds calling every function once per round.
    ``cpu`` (optional) receives each function's process CPU seconds per call (all its threads)."""
    first = {k: fn() for k, fn in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0 = time.process_time()
            times[k].append(timed(fn)[0])
            if cpu is not None:
                cpu.setdefault(k, []).append(time.process_time() - c0)
    return times, first


def ratio(times: dict[str, list[float]], num: str, den: str) -> float | None:
    """Median over rounds of times[num][i] / times[den][i]."""
    if num not in times or den not in times:
        return None
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


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


# ----------------------------------------------------------------------------------- report
def fmt_s(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if v >= 0.1 else f"{v * 1e3:.1f} ms"


def fmt_x(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.1f}x"


def fmt_mpxs(px: int, t: float | None) -> str:
    return "n/a" if not t else f"{px / t / 1e6:.0f}"


def fmt_n(times: dict, k: str) -> str:
    return str(len(times.get(k, [])))


def machine_table(mach: dict, load: tuple, other: tuple | None) -> list[str]:
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
