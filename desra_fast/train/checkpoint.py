"""Crash-safe training checkpoints and safe reading of weight files.

A checkpoint is one file ``checkpoints/iter_{N:08d}.pth`` written atomically: serialised in
memory, written to a hidden ``*.desra-tmp`` file in the same folder, fsync'ed, renamed onto its
name, and the folder fsync'ed; so a file under its final name is complete, and a run killed at
any moment (SIGKILL, power loss) leaves the previous checkpoints intact. Files are read with
``torch.load(weights_only=True)``: no pickle code runs, a malicious file is refused.

Contents (every tensor on the CPU): ``iteration``, ``net_g``, ``net_g_ema``, ``net_d``,
``optimizer_g``, ``optimizer_d`` (state dicts), ``rng`` (torch, numpy, python RNG states),
``data`` (the data-order position: samples drawn so far, seed), ``config`` (the settings that
must not change on resume) and ``format``.
"""
from __future__ import annotations

import io
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..imageio import TMP_SUFFIX, remove_stale_tmp_files, write_bytes_atomic
from ..models.checkpoint import CheckpointError as ModelCheckpointError
from ..models.checkpoint import read_weights

FORMAT = "desra_fast.finetune/1"
_NAME = re.compile(r"^iter_(\d{8})\.pth$")


class CheckpointError(ModelCheckpointError):
    """A training checkpoint that cannot be used (corrupt, wrong keys, other settings)."""


def checkpoint_path(folder: os.PathLike, iteration: int) -> Path:
    return Path(folder) / f"iter_{iteration:08d}.pth"


def list_checkpoints(folder: os.PathLike) -> List[Path]:
    """Complete checkpoint files of ``folder``, oldest first (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted((int(m.group(1)), folder / n) for n in os.listdir(folder) if (m := _NAME.match(n)))
    return [p for _, p in found]


def save_checkpoint(folder: os.PathLike, state: Dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` (with an int ``iteration``) atomically; keep the newest ``keep`` files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, int(state["iteration"]))
    buf = io.BytesIO()
    torch.save(dict(state, format=FORMAT), buf)
    write_bytes_atomic(path, buf.getbuffer(), fsync=True)
    fsync_dir(folder)
    if keep > 0:
        for old in list_checkpoints(folder)[:-keep]:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
    return path


def fsync_dir(folder: os.PathLike) -> None:
    """Make a rename inside ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - some filesystems refuse to open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: os.PathLike) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; CheckpointError when unusable."""
    try:
        state = read_weights(path).content  # the package's one reader: weights only, no code run
    except Exception as exc:  # truncated zip, foreign pickle, bit rot
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a desra-fast fine-tune checkpoint")
    missing = [k for k in ("iteration", "net_g", "net_g_ema", "net_d", "optimizer_g", "optimizer_d",
                           "rng", "data", "config") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return state


def latest_checkpoint(folder: os.PathLike) -> Optional[Dict[str, Any]]:
    """The newest readable checkpoint of ``folder`` (a corrupt newer one is skipped with a
    warning), or None. Stale temporary files of a killed run are removed first."""
    if Path(folder).is_dir():
        remove_stale_tmp_files(folder)
    for path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping {exc}", RuntimeWarning, stacklevel=2)
    return None


def rng_state() -> Dict[str, Any]:
    """Every global RNG state (torch CPU and CUDA, numpy, python), as tensors and plain Python values (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def load_state_file(path: os.PathLike) -> Dict[str, torch.Tensor]:
    """A state dict from a weight file, safely (``.safetensors``, or ``torch.load`` with
    ``weights_only``; ``params_ema`` preferred over ``params``, as Real-ESRGAN's inference):
    :func:`desra_fast.models.checkpoint.read_state_dict`."""
    from ..models.checkpoint import read_state_dict

    return read_state_dict(path)[0]


__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints",
           "checkpoint_path", "rng_state", "set_rng_state", "load_state_file", "CheckpointError",
           "TMP_SUFFIX"]
