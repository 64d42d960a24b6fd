"""Test helpers: run the CUDA post-processing kernels on the CPU.

:func:`emulate_cuda_postprocess` executes the CUDA kernels' own ``__host__ __device__`` bodies
(csrc/include/desra/postprocess_kernels.h) over the same grids as the GPU launcher, with blocks
and threads as loops, on any machine (no GPU, no CUDA build needed). With a ``seed`` it runs the
blocks of every launch in a seeded random order and interleaves the threads of the union-find
phases step by step (one root-walk hop or atomic link per step), so a kernel that is only correct in one
execution order gives a wrong mask here too. Results are reproducible for a given seed.
"""
from __future__ import annotations

import numpy as np

from . import _native

_STAGES = {"erode": 0, "fill": 1, "label": 2}


def emulate_cuda_postprocess(mask, area_threshold: int = 4000, seed=None, *, return_counts: bool = False,
                             return_stages: bool = False, start: str = "erode", inject_fault: bool = False):
    """Emulates ``postprocess_cuda`` on the CPU.

    Args:
        mask: numpy array (h, w) or (N, h, w), bool or uint8; nonzero = candidate pixel.
        area_threshold: keep 8-connected components with area > area_threshold (int32 range).
        seed: None = launch order (blocks and threads in index order, each thread to completion);
            an int >= 0 = blocks shuffled, threads of each barrier phase shuffled, union-find
            threads interleaved, all from this seed.
        return_counts: also return the kept-component count per image (int64 (N,), or an int
            for a 2-D mask).
        return_stages: also return {"dilated": after erosion+dilation, "filled": after hole
            filling}, bool arrays shaped like the output.
        start: "erode" (the whole pipeline), "fill" (take ``mask`` as the dilated mask: hole
            filling + components) or "label" (take ``mask`` as the filled mask: components only)
            -- single-stage tests on inputs the morphology would never produce (thin lines).
        inject_fault: tests only. Makes union-find drop its retry after a failed atomic link
            (the lost-update bug of naive atomicMin union): correct in launch order, wrong under
            interleaving -- the check that the shuffled emulator can fail.

    Returns:
        bool mask shaped like ``mask``; then counts and/or the stages dict when requested, as a
        tuple (mask, counts?, stages?).
    """
    arr = np.asarray(mask)
    if arr.dtype not in (np.bool_, np.uint8):
        raise TypeError(f"emulate_cuda_postprocess: mask dtype must be bool or uint8, got {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"emulate_cuda_postprocess: mask must be (h, w) or (N, h, w), got shape {arr.shape}")
    if start not in _STAGES:
        raise ValueError(f"emulate_cuda_postprocess: start must be one of {sorted(_STAGES)}, got {start!r}")
    if isinstance(area_threshold, bool) or not isinstance(area_threshold, (int, np.integer)):
        raise TypeError("emulate_cuda_postprocess: area_threshold must be an int")
    if seed is None:
        seed_int = -1
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and 0 <= seed < 2**63:
        seed_int = int(seed)
    else:
        raise ValueError(f"emulate_cuda_postprocess: seed must be None or an int >= 0, got {seed!r}")
    batched = arr.ndim == 3
    a3 = np.ascontiguousarray((arr if batched else arr[None]).astype(np.uint8, copy=False))
    res = _native.C.emulate_cuda_postprocess(a3, int(area_threshold), seed_int, int(bool(inject_fault)),
                                             bool(return_stages), _STAGES[start])
    out = res[0].astype(bool)
    counts = res[1]
    result = [out if batched else out[0]]
    if return_counts:
        result.append(counts if batched else int(counts[0]))
    if return_stages:
        result.append({k: (v.astype(bool) if batched else v[0].astype(bool)) for k, v in res[2].items()})
    return result[0] if len(result) == 1 else tuple(result)
