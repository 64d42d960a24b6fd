"""Validation and normalisation of user inputs for :mod:`desra_fast.api`.

Everything a user may pass is checked here, once, with an error that names the problem; the
kernels below receive 4-D arrays/tensors they can trust. No pixel data is copied unless the
dtype has no kernel (float16/bfloat16 on the CPU path, non-native byte order).

Conventions (PyTorch / Real-ESRGAN ecosystem):
- numpy: (H, W) grayscale, (H, W, C) one image, (N, H, W, C) a batch — channels last (cv2/PIL).
- torch: (H, W) grayscale, (C, H, W) one image, (N, C, H, W) a batch — channels first.
- C in {1, 3, 4}; a 4th (alpha) channel is dropped: D compares colour texture, and Real-ESRGAN
  upsamples alpha separately from RGB, so alpha carries no GAN texture to compare.
- uint8 is 0..255; uint16 is scaled by 255/65535; floating point is 0..1 and scaled by 255
  (docs/spec.md §1: C = (0.03*255)^2 assumes the 0..255 scale).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

MIN_SIZE = 11  # the 11x11 window must fit at least once
FLOAT_RANGE = (-0.05, 1.05)  # tolerated range of float images (model outputs overshoot slightly)
NUM_CLASSES = 150

_NP_KERNEL_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
_SCALE_U16 = 255.0 / 65535.0


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional for numpy users
        return None
    return torch


def is_tensor(x: Any) -> bool:
    # Look torch up without importing it (1-2 s): a tensor can only exist once torch is loaded.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


@dataclass
class Pair:
    """A validated GAN-SR / MSE-SR pair (or batch of pairs).

    numpy: ``gan``/``mse`` are (N, H, W, C) numpy views, C in {1, 3}, dtype in
    uint8/uint16/float32/float64. torch: (N, C, H, W) tensors (``layout == 'nchw'``), any dtype
    the Triton kernel reads. ``value * scale`` is on the 0..255 scale.
    """

    gan: Any
    mse: Any
    scale: float
    batched: bool
    is_torch: bool
    layout: str  # 'nhwc' (numpy) or 'nchw' (torch)

    @property
    def n(self) -> int:
        return int(self.gan.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return (int(self.gan.shape[1]), int(self.gan.shape[2])) if self.layout == "nhwc" else (
            int(self.gan.shape[2]), int(self.gan.shape[3]))

    @property
    def device(self):
        return self.gan.device if self.is_torch else None

    def numpy_nhwc(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Both images as (N, H, W, C) numpy views for the CPU kernels (torch CPU tensors are
        viewed without copy; CUDA tensors are copied to the host; float16/bfloat16 become float32)."""
        if not self.is_torch:
            return self.gan, self.mse, self.scale
        return _tensor_to_nhwc_numpy(self.gan), _tensor_to_nhwc_numpy(self.mse), self.scale


def _tensor_to_nhwc_numpy(t) -> np.ndarray:
    torch = _torch()
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    elif t.dtype == getattr(torch, "uint16", None):
        t = t.to(torch.int32)
    a = t.numpy()
    if a.dtype == np.int32:  # was uint16: values fit, give the kernel its native dtype
        a = a.astype(np.uint16)
    return np.transpose(a, (0, 2, 3, 1))


def _dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def _scale_for(x, name: str) -> float:
    """Scale to 0..255 for the dtype of ``x``; TypeError for dtypes that are no image."""
    if is_tensor(x):
        torch = _torch()
        dt = x.dtype
        if dt == torch.uint8:
            return 1.0
        if dt == getattr(torch, "uint16", None):
            return _SCALE_U16
        if dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            return 255.0
        if dt == torch.bool:
            raise TypeError(f"{name}: bool tensors are not images (expected uint8, uint16 or float)")
        if dt.is_complex:
            raise TypeError(f"{name}: complex tensors are not images")
        raise TypeError(f"{name}: unsupported dtype {dt}; images must be uint8 (0..255), uint16 "
                        "(0..65535) or floating point (0..1)")
    dt = x.dtype
    if dt == np.bool_:
        raise TypeError(f"{name}: bool arrays are not images (expected uint8, uint16 or float)")
    if dt.kind == "c":
        raise TypeError(f"{name}: complex arrays are not images")
    if dt.kind == "O":
        raise TypeError(f"{name}: object arrays are not images")
    if dt.kind == "u" and dt.itemsize == 1:
        return 1.0
    if dt.kind == "u" and dt.itemsize == 2:
        return _SCALE_U16
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return 255.0
    raise TypeError(f"{name}: unsupported dtype {dt}; images must be uint8 (0..255), uint16 "
                    "(0..65535) or floating point (0..1)")


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if hasattr(x, "__array__"):  # PIL images, array-likes
        return np.asarray(x)
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


def _to_4d_numpy(x: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    if x.ndim == 2:
        return x[None, :, :, None], False
    if x.ndim == 3:
        if x.shape[2] not in (1, 3, 4):
            raise ValueError(
                f"{name}: a 3-D numpy image must be (H, W, C) with C in 1, 3, 4; got shape {x.shape}"
                " (for a batch of grayscale images pass (N, H, W, 1))")
        return x[None], False
    if x.ndim == 4:
        if x.shape[3] not in (1, 3, 4):
            raise ValueError(f"{name}: a 4-D numpy batch must be (N, H, W, C) with C in 1, 3, 4; "
                             f"got shape {x.shape}")
        return x, True
    raise ValueError(f"{name}: expected (H, W), (H, W, C) or (N, H, W, C); got {x.ndim}-D shape {x.shape}")


def _to_4d_tensor(x, name: str):
    if x.dim() == 2:
        return x[None, None], False
    if x.dim() == 3:
        if x.shape[0] not in (1, 3, 4):
            raise ValueError(f"{name}: a 3-D tensor must be (C, H, W) with C in 1, 3, 4; got shape "
                             f"{tuple(x.shape)}")
        return x[None], False
    if x.dim() == 4:
        if x.shape[1] not in (1, 3, 4):
            raise ValueError(f"{name}: a 4-D tensor batch must be (N, C, H, W) with C in 1, 3, 4; got "
                             f"shape {tuple(x.shape)}")
        return x, True
    raise ValueError(f"{name}: expected (H, W), (C, H, W) or (N, C, H, W); got shape {tuple(x.shape)}")


def _check_values_numpy(a: np.ndarray, name: str) -> None:
    if a.dtype.kind != "f":
        return
    _check_range(float(np.min(a)), float(np.max(a)), name)  # NaN propagates into both


def _check_values_tensor(t, name: str) -> None:
    if not t.dtype.is_floating_point:
        return
    torch = _torch()
    with torch.no_grad():
        v = t.detach()
        # One host sync for all checks: min and max (NaN propagates through both).
        lo, hi = torch.aminmax(v.float() if v.dtype in (torch.float16, torch.bfloat16) else v)
        lo, hi = torch.stack([lo.double(), hi.double()]).tolist()
    _check_range(lo, hi, name)


def _check_range(lo: float, hi: float, name: str) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if lo < FLOAT_RANGE[0] or hi > FLOAT_RANGE[1]:
        raise ValueError(f"{name}: floating-point images must be in [0, 1], found values in "
                         f"[{lo:g}, {hi:g}] (divide 0..255 data by 255, or clamp model outputs)")


def prepare_pair(gan, mse) -> Pair:
    """Validate a GAN-SR / MSE-SR pair and bring it to the kernels' 4-D form (see module doc)."""
    if is_tensor(gan) != is_tensor(mse):
        raise TypeError("gan and mse must both be numpy arrays or both be torch tensors, not a mix")
    if is_tensor(gan):
        return _prepare_torch(gan, mse)
    gan, mse = _as_numpy(gan, "gan"), _as_numpy(mse, "mse")
    s_gan = _scale_for(gan, "gan")
    _scale_for(mse, "mse")
    _check_match(gan, mse)
    g4, batched = _to_4d_numpy(gan, "gan")
    m4, _ = _to_4d_numpy(mse, "mse")
    _check_size(g4.shape[0], g4.shape[1], g4.shape[2])
    if g4.shape[3] == 4:  # drop alpha (module doc)
        g4, m4 = g4[..., :3], m4[..., :3]
    _check_values_numpy(g4, "gan")
    _check_values_numpy(m4, "mse")
    if g4.dtype.type not in _NP_KERNEL_DTYPES or not g4.dtype.isnative:
        target = np.float32 if g4.dtype.kind == "f" and g4.dtype.itemsize <= 4 else g4.dtype.newbyteorder("=")
        g4, m4 = g4.astype(target), m4.astype(target)
    return Pair(g4, m4, s_gan, batched, False, "nhwc")


def _prepare_torch(gan, mse) -> Pair:
    if gan.device != mse.device:
        raise ValueError(f"gan and mse are on different devices: {gan.device} and {mse.device}")
    s = _scale_for(gan, "gan")
    _scale_for(mse, "mse")
    _check_match(gan, mse)
    g4, batched = _to_4d_tensor(gan, "gan")
    m4, _ = _to_4d_tensor(mse, "mse")
    _check_size(g4.shape[0], g4.shape[2], g4.shape[3])
    if g4.shape[1] == 4:
        g4, m4 = g4[:, :3], m4[:, :3]
    _check_values_tensor(g4, "gan")
    _check_values_tensor(m4, "mse")
    return Pair(g4.detach(), m4.detach(), s, batched, True, "nchw")


def _check_match(gan, mse) -> None:
    gs, ms = tuple(gan.shape), tuple(mse.shape)
    if gs != ms:
        raise ValueError(f"gan and mse must have the same shape, got {gs} and {ms}")
    if gan.dtype != mse.dtype:
        raise TypeError(f"gan and mse must have the same dtype, got {gan.dtype} and {mse.dtype}")


def _check_size(n: int, h: int, w: int) -> None:
    if n == 0:
        raise ValueError("empty batch: gan and mse have N = 0 images")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"images must be at least {MIN_SIZE}x{MIN_SIZE} (the D window is 11x11); "
                         f"got {h}x{w}")


def prepare_seg(seg, pair: Pair, device=None):
    """Validate an ADE20K label map for ``pair``: (H, W) or (N, H, W) integers in 0..149.

    Returns None, a uint8 (N, H, W) numpy array (``device`` None: the CPU kernels), or a uint8
    tensor on ``device`` (the GPU kernels).
    """
    if seg is None:
        return None
    n, (h, w) = pair.n, pair.hw
    if is_tensor(seg):
        torch = _torch()
        if seg.dtype.is_floating_point or seg.dtype.is_complex or seg.dtype == torch.bool:
            raise TypeError(f"seg must hold integer ADE20K labels 0..149, got dtype {seg.dtype}")
        s = seg.detach()
        shape = tuple(s.shape)
    else:
        s = _as_numpy(seg, "seg")
        if s.dtype.kind not in "ui":
            raise TypeError(f"seg must hold integer ADE20K labels 0..149, got dtype {s.dtype}")
        shape = s.shape
    if len(shape) == 2:
        if pair.batched and n != 1:
            raise ValueError(f"seg of shape {shape} is one label map, but the batch has {n} images; "
                             f"pass (N, H, W) = ({n}, {h}, {w})")
        expected = (h, w)
    elif len(shape) == 3:
        expected = (n, h, w)
    else:
        raise ValueError(f"seg must be (H, W) or (N, H, W), got shape {shape}")
    if shape != expected:
        raise ValueError(f"seg shape {shape} does not match the images: expected {expected}")
    if is_tensor(s):
        if s.numel():
            lo, hi = torch.stack(list(torch.aminmax(s.long()))).tolist()
            if lo < 0 or hi >= NUM_CLASSES:
                raise ValueError(f"seg labels must be in 0..149 (ADE20K), found values in [{lo}, {hi}]")
        s = s.reshape(n, h, w)
        return s.to(device=device, dtype=torch.uint8) if device is not None else s.cpu().numpy().astype(np.uint8)
    lo, hi = int(s.min()), int(s.max())
    if lo < 0 or hi >= NUM_CLASSES:
        raise ValueError(f"seg labels must be in 0..149 (ADE20K), found values in [{lo}, {hi}]")
    s = s.reshape(n, h, w)
    s = s if s.dtype == np.uint8 else s.astype(np.uint8)
    if device is not None:
        return _torch().from_numpy(np.ascontiguousarray(s)).to(device)
    return s


WINDOWS = {"gaussian": 0, "box": 1}


def window_code(window: str) -> int:
    if not isinstance(window, str) or window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected 'gaussian' or 'box'")
    return WINDOWS[window]


def check_threshold(threshold) -> float:
    if isinstance(threshold, (bool, np.bool_, str, bytes)) or not isinstance(
            threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold must be finite, got {t}")
    return t


def check_area_threshold(area_threshold, pixels: int) -> int:
    """Validate ``area_threshold``; values >= ``pixels`` (the mask's h*w, which no component can
    exceed) are clamped to it, so arbitrarily large integers mean "keep nothing" on every backend."""
    if isinstance(area_threshold, (bool, np.bool_)) or not isinstance(area_threshold, (int, np.integer)):
        raise TypeError(f"area_threshold must be an integer number of pixels, got {area_threshold!r}")
    if area_threshold < 0:
        raise ValueError(f"area_threshold must be >= 0, got {area_threshold}")
    return int(min(int(area_threshold), int(pixels)))


def prepare_mask(mask, name: str = "mask") -> tuple[np.ndarray, bool, Optional[Any]]:
    """A binary mask (h, w) or (N, h, w) (bool or integer 0/1, numpy or torch) as a C-contiguous
    uint8 (N, h, w) numpy array; returns (array, batched, torch_device_or_None)."""
    device = None
    if is_tensor(mask):
        device = mask.device
        mask = mask.detach().cpu().numpy()
    m = _as_numpy(mask, name)
    if m.dtype != np.bool_ and m.dtype.kind not in "ui":
        raise TypeError(f"{name} must be bool or integer 0/1, got dtype {m.dtype}")
    if m.ndim not in (2, 3):
        raise ValueError(f"{name} must be (h, w) or (N, h, w), got shape {m.shape}")
    if m.size == 0:
        raise ValueError(f"{name} is empty: shape {m.shape}")
    batched = m.ndim == 3
    m3 = m if batched else m[None]
    if m3.dtype != np.bool_:
        m3 = m3 != 0
    return np.ascontiguousarray(m3.view(np.uint8)), batched, device
