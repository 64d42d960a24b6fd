"""The loaders' door to the inference runtimes, which sit one layer above the models.

:func:`~desra_fast.models.load_sr` and :func:`~desra_fast.models.load_segmenter` accept
``runtime=`` and exported ``.onnx`` / ``.engine`` / IR files, which :mod:`desra_fast.runtime`
prepares. So that this layer does not import the one above it, the runtime package hands its
entry points to :func:`register` when it is imported; :func:`support` returns them, loading the
runtime package by name first when nothing has imported it yet (the one place the models layer
names the runtime layer, and only as a plug-in to load).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple, Optional, Tuple

__all__ = ["RuntimeSupport", "register", "support"]


class RuntimeSupport(NamedTuple):
    """What the loaders use of :mod:`desra_fast.runtime`.

    Attributes:
        runtimes: the accepted ``runtime=`` values (``"auto"``, ``"torch"``, ...).
        source_kind: ``source_kind(source) -> str``: ``"torch"`` for what the loaders read
            themselves, else the kind of exported file.
        prepare_model: ``prepare_model(source, *, kind, runtime, device, load_torch=None,
            precision=None) -> (runtime, info or None, runner or None)``.
    """
    runtimes: Tuple[str, ...]
    source_kind: Callable[[Any], str]
    prepare_model: Callable[..., Tuple[str, Optional[dict], Optional[Callable]]]


_SUPPORT: Optional[RuntimeSupport] = None


def register(runtimes, source_kind, prepare_model) -> None:
    """Called by :mod:`desra_fast.runtime` when it is imported."""
    global _SUPPORT
    _SUPPORT = RuntimeSupport(tuple(runtimes), source_kind, prepare_model)


def support() -> RuntimeSupport:
    """The registered runtime entry points (the runtime package is loaded if needed)."""
    if _SUPPORT is None:
        importlib.import_module("desra_fast.runtime")
    if _SUPPORT is None:  # pragma: no cover - the runtime package registers on import
        raise RuntimeError("desra_fast.runtime did not register its entry points")
    return _SUPPORT
