"""CUDA post-processing of a batch of pre-morphology masks on the device (stage 2 of
``detect(..., backend="cuda")``): erosion 5x5, dilation 13x13, hole filling, 8-connected
components and the area filter, as 8 kernel launches on torch's current CUDA stream with no host
synchronisation (csrc/cuda/postprocess_kernels.cu; costs in csrc/CUDA_DESIGN.md).

The kernels need a device workspace of about 9 bytes per pixel. It is cached per (device, stream)
and only grows, so a loop over same-sized batches allocates nothing after the first call. One
workspace per stream because calls on different streams may run concurrently.
"""
from __future__ import annotations

import numbers

from . import _native

_INT32_MAX = 2**31 - 1
# (device index, stream handle) -> uint8 tensor
_workspaces: dict = {}


def _torch():
    import torch

    return torch


def _workspace(device, stream_handle: int, nbytes: int):
    torch = _torch()
    key = (device.index, stream_handle)
    buf = _workspaces.get(key)
    if buf is None or buf.numel() < nbytes:
        # Drop the old buffer first so the caching allocator can reuse its memory. Work already
        # queued on this stream that uses it stays valid: the allocator hands the block out again
        # only in stream order.
        _workspaces.pop(key, None)
        buf = torch.empty(nbytes, dtype=torch.uint8, device=device)
        _workspaces[key] = buf
    return buf


def clear_workspace_cache() -> None:
    """Releases the cached device workspaces (to torch's caching allocator)."""
    _workspaces.clear()


def postprocess_cuda(premask, area_threshold: int, out, counts=None):
    """Post-processes a batch of masks on the GPU; never synchronises with the host.

    Args:
        premask: torch tensor (N, h, w), uint8 (or bool) on a CUDA device; nonzero = artifact
            candidate (``D' < threshold``). Made contiguous if it is not (a copy).
        area_threshold: int; components with area > area_threshold pixels are kept.
        out: torch tensor (N, h, w), bool or uint8, same device, any strides (e.g. the interior
            view ``full[:, 5:-5, 5:-5]`` of the full-size result); receives the 0/1 mask.
        counts: optional int64 tensor (N,), same device, contiguous; receives the number of kept
            components per image. When None a new one is returned (torch's caching allocator).

    Returns:
        int64 tensor (N,) on the device: kept components per image (``counts`` when given).

    Raises:
        TypeError / ValueError on bad arguments; RuntimeError when this build has no CUDA, no
        device is usable, or a launch fails.
    """
    torch = _torch()
    C = _native.C
    if not isinstance(premask, torch.Tensor) or not isinstance(out, torch.Tensor):
        raise TypeError("postprocess_cuda: premask and out must be torch tensors")
    if premask.device.type != "cuda":
        raise ValueError(f"postprocess_cuda: premask must be on a CUDA device, got {premask.device}")
    if premask.dtype not in (torch.uint8, torch.bool):
        raise TypeError(f"postprocess_cuda: premask dtype must be uint8 or bool, got {premask.dtype}")
    if premask.dim() != 3:
        raise ValueError(f"postprocess_cuda: premask must be (N, h, w), got shape {tuple(premask.shape)}")
    if out.device != premask.device:
        raise ValueError(f"postprocess_cuda: out is on {out.device}, premask on {premask.device}")
    if out.dtype not in (torch.uint8, torch.bool):
        raise TypeError(f"postprocess_cuda: out dtype must be bool or uint8, got {out.dtype}")
    if tuple(out.shape) != tuple(premask.shape):
        raise ValueError(f"postprocess_cuda: out shape {tuple(out.shape)} != premask shape {tuple(premask.shape)}")
    if any(st == 0 and sz > 1 for st, sz in zip(out.stride(), out.shape)):
        raise ValueError("postprocess_cuda: out must not overlap itself (a stride is 0)")
    if isinstance(area_threshold, bool) or not isinstance(area_threshold, numbers.Integral):
        raise TypeError(f"postprocess_cuda: area_threshold must be an int, got {type(area_threshold).__name__}")
    area_threshold = int(area_threshold)
    if not -_INT32_MAX <= area_threshold <= _INT32_MAX:
        raise ValueError(f"postprocess_cuda: area_threshold {area_threshold} out of int32 range")
    n, h, w = (int(s) for s in premask.shape)
    if h * w > _INT32_MAX:
        raise ValueError(f"postprocess_cuda: an image must have fewer than 2^31 pixels, got {h}x{w}")
    if counts is None:
        counts = torch.empty(n, dtype=torch.int64, device=premask.device)
    elif (not isinstance(counts, torch.Tensor) or counts.dtype != torch.int64 or tuple(counts.shape) != (n,)
          or counts.device != premask.device or not counts.is_contiguous()):
        raise ValueError("postprocess_cuda: counts must be a contiguous int64 tensor (N,) on premask's device")
    if n * h * w == 0:
        counts.zero_()
        return counts
    if not getattr(C, "built_with_cuda", False):
        raise RuntimeError(f"postprocess_cuda: {_native.cuda_status()}")
    if premask.dtype == torch.bool:
        premask = premask.view(torch.uint8)
    premask = premask.contiguous()
    with torch.cuda.device(premask.device):
        if not C.cuda_available():
            raise RuntimeError(f"postprocess_cuda: {C.cuda_status()}")
        stream = torch.cuda.current_stream(premask.device).cuda_stream
        nbytes = int(C.postprocess_cuda_workspace_bytes(n, h, w))
        ws = _workspace(premask.device, stream, nbytes)
        sn, sy, sx = out.stride()
        C.postprocess_cuda_launch(
            premask.device.index, premask.data_ptr(), ws.data_ptr(), ws.numel(), out.data_ptr(),
            sn, sy, sx, counts.data_ptr(), n, h, w, int(area_threshold), stream)
    return counts
