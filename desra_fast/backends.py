"""Which implementation runs a call: ``backend="auto" | "cpu" | "triton" | "cuda"``.

- ``cpu``: the C++ kernels of ``desra_fast._C`` (threads + SIMD). numpy arrays and CPU tensors
  are read in place; CUDA tensors are copied to the host and the result copied back.
- ``triton``: stage 1 (D map / thresholded pre-mask) in the fused Triton kernel of
  :mod:`desra_fast.kernels` for torch tensors; the post-processing runs on the CPU kernels
  (moving the 1-byte pre-mask to the host when the tensors live on a GPU). On CPU tensors it
  runs only under ``TRITON_INTERPRET=1`` (Triton's interpreter; for tests).
- ``cuda``: CUDA tensors only; Triton stage 1, then the CUDA post-processing kernels of
  ``desra_fast._C`` on the caller's stream: the batch never leaves the GPU.
- ``auto``: ``cpu`` for float64 tensors (exact there; the Triton kernel reads at most float32),
  else ``cuda`` for CUDA tensors when the extension was built with CUDA and a device is
  usable, else ``triton`` for CUDA tensors; ``cpu`` for everything on the host.
"""
from __future__ import annotations

import os

from . import _native
from ._inputs import Pair

BACKENDS = ("auto", "cpu", "triton", "cuda")


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _float64():
    import torch

    return torch.float64


def resolve(backend: str, pair: Pair) -> str:
    """Return the concrete backend for ``pair`` or raise ValueError/RuntimeError saying why not."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    on_gpu = pair.is_torch and pair.device.type == "cuda"
    if backend == "auto":
        if not on_gpu or pair.gan.dtype == _float64():
            # float64 tensors are not exact in the float32 Triton kernel: the C++ path reads them
            # as they are (one device->host copy) and decides like the float64 reference.
            return "cpu"
        return "cuda" if _native.cuda_available() else "triton"
    if backend in ("triton", "cuda") and not pair.is_torch:
        raise ValueError(f"backend={backend!r} needs torch tensors; numpy inputs run on backend='cpu'")
    if backend == "triton" and not on_gpu and not triton_interpreter_enabled():
        raise RuntimeError("backend='triton' on CPU tensors runs only under Triton's interpreter: "
                           "set TRITON_INTERPRET=1 before importing desra_fast, or move the tensors "
                           "to a CUDA device, or use backend='cpu'")
    if backend == "cuda":
        if not on_gpu:
            raise ValueError(f"backend='cuda' needs CUDA tensors, got tensors on {pair.device}")
        if not _native.cuda_available():
            raise RuntimeError(f"backend='cuda' is not available: {_native.cuda_status()}")
    return backend


def host_data_device(backend: str):
    """Where a caller holding host (numpy) images must put them so that ``backend`` runs here.

    The folder jobs decode images on the host; this answers, once per job, what
    :func:`resolve` would answer for every batch, so that a backend that cannot run fails once,
    clearly, instead of once per image.

    Returns:
        ``None`` for ``"auto"`` and ``"cpu"`` (numpy arrays stay on the host), else a
        ``torch.device``: ``cuda`` when torch sees a GPU, ``cpu`` for ``"triton"`` under
        Triton's interpreter (tests).

    Raises:
        ValueError: unknown backend. RuntimeError: the backend cannot run here (the message says
        why and what to use instead).
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend in ("auto", "cpu"):
        return None
    try:
        import torch
    except ImportError as exc:
        raise RuntimeError(f"backend={backend!r} needs torch: {exc}") from exc
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif backend == "triton" and triton_interpreter_enabled():
        device = torch.device("cpu")
    else:
        raise RuntimeError(f"backend={backend!r} needs a CUDA device, and torch sees none; use backend='cpu'")
    # an empty uint8 batch on that device: resolve() decides from the type and place alone
    empty = torch.empty((0, 3, 0, 0), dtype=torch.uint8, device=device)
    resolve(backend, Pair(gan=empty, mse=empty, scale=1.0, batched=True, is_torch=True, layout="nchw"))
    return device
