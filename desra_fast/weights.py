"""Semantic-aware adjustment weights (DeSRA paper Eq. 8-9; docs/spec.md §2).

Each ADE20K class k has a weight ``W_k = 20 / (20 - bin_k)``; ``D' = clip(D * W[label], 0, 1)``.
The authors' table (their ``SSIM_MSE_GAN_threshold.txt``) ships as
``desra_fast/data/ade20k_semantic_weights.tsv``.
"""
from __future__ import annotations

import functools
import os
from importlib import resources
from typing import Mapping, Sequence, Union

import numpy as np

NUM_CLASSES = 150

WeightsLike = Union[None, Sequence[float], np.ndarray, Mapping[str, float]]


@functools.lru_cache(maxsize=1)
def _table() -> tuple[tuple[str, ...], np.ndarray]:
    text = resources.files("desra_fast").joinpath("data/ade20k_semantic_weights.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    labels = [int(r[0]) for r in rows]
    if labels != list(range(NUM_CLASSES)):
        raise RuntimeError("ade20k_semantic_weights.tsv is damaged: labels must be 0..149 in order")
    names = tuple(r[1] for r in rows)
    # Recompute W = 20 / (20 - bin) from the bin in float64 (the authors' formula) rather than
    # parsing the rounded decimal column, so the weights match their script to the last bit.
    weights = np.array([20.0 / (20.0 - int(r[2])) for r in rows], dtype=np.float64)
    weights.setflags(write=False)
    return names, weights


def class_names() -> tuple[str, ...]:
    """The 150 ADE20K class names, indexed by label (``class_names()[2] == 'sky'``)."""
    return _table()[0]


def load_weights(weights: WeightsLike = None) -> np.ndarray:
    """Resolve the per-class weights to a float64 array of shape (150,).

    Args:
        weights: ``None`` for the authors' table; a sequence/array of 150 non-negative finite
            numbers (weight per label 0..149); a ``{class name: weight}`` dict that overrides
            entries of the authors' table (names as in :func:`class_names`); or the path of a
            TSV in the shipped table's format (``desra-fast calibrate`` writes one).

    Returns:
        float64 numpy array (150,), read-only when it is the default table.
    """
    names, default = _table()
    if weights is None:
        return default
    if isinstance(weights, Mapping):
        out = default.copy()
        index = {n: i for i, n in enumerate(names)}
        for name, value in weights.items():
            if name not in index:
                raise ValueError(f"weights: unknown ADE20K class name {name!r} (see desra_fast.class_names())")
            out[index[name]] = _check_weight(value, name)
        return out
    if isinstance(weights, str) and not os.path.isfile(weights):
        raise TypeError(f"weights must be None, a 150-vector, a {{class name: weight}} dict or the path of a "
                        f"weights TSV; the string {weights!r} is no file")
    if isinstance(weights, (str, os.PathLike)):
        return read_weights_tsv(weights)
    if isinstance(weights, bytes):
        raise TypeError("weights must be None, a 150-vector, a {class name: weight} dict or a TSV path, not bytes")
    if hasattr(weights, "detach"):  # torch tensor
        t = weights.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):  # no numpy equivalent
            t = t.double()
        weights = t.numpy()
    raw = np.asarray(weights)
    if raw.dtype.kind not in "iuf":  # not bool, complex, strings or objects: no silent casts
        raise TypeError(f"weights must be a real numeric vector, got dtype {raw.dtype}")
    arr = raw.astype(np.float64)
    if arr.shape != (NUM_CLASSES,):
        raise ValueError(f"weights must have shape (150,) (one per ADE20K label), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("weights must be finite and non-negative")
    # A fresh contiguous copy: views of structured arrays (np.genfromtxt(...)['weight']) are
    # strided and unaligned, and the caller may change their array after the call.
    return np.array(arr, dtype=np.float64, order="C")


def read_weights_tsv(path) -> np.ndarray:
    """Weights (150,) float64 from a TSV in the shipped table's format (``label name bin weight``,
    a header line, labels 0..149 in order). A row whose weight is ``20 / (20 - bin)`` to 1e-6 gets
    that value computed in float64 (bit-identical to the shipped table); other rows their weight."""
    try:
        text = open(os.fspath(path), encoding="utf-8").read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the weights table ({exc.strerror or exc})") from exc
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    out = np.empty(NUM_CLASSES, np.float64)
    try:
        if [int(r[0]) for r in rows] != list(range(NUM_CLASSES)):
            raise ValueError("labels must be 0..149, one row each, in order")
        for k, r in enumerate(rows):
            w = _check_weight(float(r[3]), r[1])
            b = int(r[2])
            exact = 20.0 / (20.0 - b) if 0 <= b < 20 else None
            out[k] = exact if exact is not None and abs(exact - w) <= 1e-6 else w
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"{path}: not a weights table (label<TAB>name<TAB>bin<TAB>weight): {exc}") from exc
    return out


def _check_weight(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"weights[{name!r}] must be a real number, got {type(value).__name__}")
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"weights[{name!r}] must be finite and non-negative, got {v}")
    return v
