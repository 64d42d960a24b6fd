"""Argument types shared by the sub-commands (argparse ``type=`` callables)."""
from __future__ import annotations

import argparse
import math

BACKENDS = ("auto", "cpu", "triton", "cuda")


def finite_float(text: str) -> float:
    """A finite float (``--threshold``)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return v


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def positive_int(text: str) -> int:
    v = non_negative_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def tile_size(text: str):
    """A tile size in LR pixels (>= 0) or ``auto`` (``--tile``)."""
    return "auto" if text.strip().lower() == "auto" else non_negative_int(text)


def memory_size(text: str) -> str:
    """A memory size such as ``512M`` or ``4G`` (``--max-memory``); kept as text for the settings."""
    from ..models.tiling import parse_memory

    try:
        parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def ratio(text: str) -> float:
    """A float in [0, 1]."""
    v = finite_float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v
