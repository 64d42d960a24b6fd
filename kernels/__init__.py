"""desra_fast.kernels: Triton kernels for DeSRA stage 1 (D map and pre-morphology mask).

    dmap(gan, mse, *, layout, window, scale)                  -> float32 (N, H-10, W-10)
    premask(gan, mse, labels, weights, *, threshold, layout, window, scale) -> uint8 (N, H-10, W-10)

Both take torch tensors on a CUDA device (or CPU tensors under TRITON_INTERPRET=1). The kernel
itself is stage1.stage1_kernel; aot.py compiles it ahead of time for given GPU targets.
"""
from .dmap import dmap
from .premask import premask
from ._launch import interpreting

__all__ = ["dmap", "premask", "interpreting"]
