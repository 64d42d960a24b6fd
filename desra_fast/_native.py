"""The compiled extension ``desra_fast._C`` (built by CMake from csrc/), imported once with a
clear message when it is missing, and the CPU kernels' instruction set chosen at import."""
from __future__ import annotations

import os
import platform

try:
    from . import _C as C
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "desra_fast's compiled extension desra_fast._C is missing or failed to load "
        f"({e}). Reinstall with `pip install -e .` from the repository (needs CMake and a C++17 "
        "compiler)."
    ) from e


def cuda_available() -> bool:
    """True when the extension was built with CUDA and a CUDA device is usable."""
    return bool(getattr(C, "built_with_cuda", False)) and bool(C.cuda_available())


def cuda_status() -> str:
    """Why the CUDA backend is (not) available, in words."""
    return str(C.cuda_status())


# Which copy of the CPU kernels runs (csrc/include/desra/cpu_isa.h): the module picks the best one
# cpuid allows when it loads; DESRA_CPU_ISA, read here once at import, forces one.
_FORCED = os.environ.get("DESRA_CPU_ISA", "").strip().lower() or None
if _FORCED is not None:
    try:
        C._set_cpu_isa(_FORCED)
    except (ValueError, RuntimeError) as e:
        raise type(e)(f"DESRA_CPU_ISA={_FORCED!r}: {e}") from None


def cpu_info() -> dict:
    """The CPU kernels in use and what this CPU could run.

    Returns:
        dict with ``"isa"`` (str, the copy in use: ``"avx512"``, ``"avx2"``, ``"baseline"`` or
        ``"neon"``), ``"available"`` (list of str, the copies this CPU can run, best first),
        ``"compiled"`` (list of str, the copies in this build), ``"forced"`` (the value of
        ``DESRA_CPU_ISA`` at import, or None), ``"native_build"`` (bool: built with
        ``DESRA_NATIVE=ON``, not portable), ``"machine"`` (``platform.machine()``) and
        ``"threads"`` (int, CPU kernel threads).
    """
    return {
        "isa": str(C.cpu_isa()),
        "available": list(C.cpu_isas_available()),
        "compiled": list(C.cpu_isas_compiled()),
        "forced": _FORCED,
        "native_build": bool(C.built_native),
        "machine": platform.machine(),
        "threads": int(C.num_threads()),
    }
