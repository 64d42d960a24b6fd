"""What every runtime module shares: the error for a runtime that cannot run here, and the device
argument. The runtime modules (:mod:`.onnxruntime`, :mod:`.tensorrt`, :mod:`.openvino`) import
these from here rather than from the package's ``__init__``, which imports them in turn."""
from __future__ import annotations

__all__ = ["RuntimeUnavailableError", "as_device"]


class RuntimeUnavailableError(RuntimeError):
    """A runtime was requested explicitly but cannot run here (the message says why)."""


def as_device(device) -> "torch.device":  # noqa: F821 - torch is imported lazily
    """``device`` (a string such as ``"cpu"``/``"cuda:0"`` or a ``torch.device``) as a ``torch.device``."""
    import torch

    return device if isinstance(device, torch.device) else torch.device(device)


def check_nchw_float(x, who: str) -> None:
    """Raise ``ValueError`` naming ``who`` unless ``x`` is a floating (N, C, H, W) torch tensor."""
    import torch

    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{who}: expected a (N, C, H, W) torch tensor, got "
                         f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point():
        raise ValueError(f"{who}: expected a float tensor, got {x.dtype}")
