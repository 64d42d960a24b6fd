"""desra_fast: fast, exact DeSRA artifact detection for GAN super-resolution models.

DeSRA (Xie et al., ICML 2023) finds the regions where a GAN-SR model (Real-ESRGAN, LDL,
SwinIR...) invented artifacts by comparing its output with the smoother output of the MSE model
it was fine-tuned from. ``desra_fast.detect(gan, mse)`` returns the authors' masks exactly,
on CPU (C++), or on CUDA tensors (Triton + CUDA).

>>> import desra_fast
>>> mask = desra_fast.detect(gan_rgb_uint8, mse_rgb_uint8)          # (H, W) bool
>>> d = desra_fast.d_map(gan_rgb_uint8, mse_rgb_uint8)              # (H-10, W-10) float32
"""
from ._native import cpu_info, cuda_available, cuda_status
from .api import HALO, d_map, detect
from .repair import pseudo_gt, repair
from .stages import dilate, erode, fill_holes, filter_components, postprocess, threshold
from .weights import class_names, load_weights

__version__ = "0.1.0"


_LAZY = {"load_sr": "models", "SRModel": "models", "load_segmenter": "models", "Segmenter": "models",
         "calibrate_weights": "calibrate", "to_onnx": "export", "Upscaler": "models.upscaler"}   # torch-backed: imported on first use


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'desra_fast' has no attribute {name!r}")


def set_num_threads(n: int) -> None:
    """Threads used by the CPU kernels, 1..256 (default: all cores, or ``DESRA_NUM_THREADS``)."""
    from ._native import C

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 256:
        raise ValueError(f"set_num_threads: n must be an integer in 1..256, got {n!r}")
    C.set_num_threads(n)


def get_num_threads() -> int:
    """Threads used by the CPU kernels."""
    from ._native import C

    return int(C.num_threads())


__all__ = [
    "detect", "d_map", "threshold", "erode", "dilate", "fill_holes", "filter_components",
    "postprocess", "load_weights", "class_names", "cpu_info", "cuda_available", "cuda_status",
    "set_num_threads", "get_num_threads", "HALO", "__version__",
    "pseudo_gt", "repair", "Upscaler", "load_segmenter", "Segmenter", "calibrate_weights", "to_onnx",
]
