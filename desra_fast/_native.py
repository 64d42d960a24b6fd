"""The compiled extension ``desra_fast._C`` (built by CMake from csrc/), imported once with a
clear message when it is missing."""
from __future__ import annotations

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
