"""The one weight reader: every checkpoint format through :func:`read_weights`, one safety policy,
one error hierarchy.

Formats (by suffix, or a folder):

- ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin``: ``torch.load(weights_only=True)``, whose unpickler
  only builds tensors and plain containers, so reading never runs code. A pickle that needs more
  (a class, a function, numpy arrays in an mmcv checkpoint's ``meta``) is refused with
  :class:`UnsafeCheckpointError` unless the caller opts in with ``trust=True`` (CLI ``--trust``),
  the same keyword everywhere; a trusted unpickling is logged as a warning, never silent.
- ``.safetensors``: a flat dict of tensors (no code by construction).
- a Hugging Face folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).
- ``.onnx``: the model description :func:`desra_fast.export.to_onnx` stores in the metadata
  (:func:`read_onnx_metadata`; the graph itself is run by :mod:`desra_fast.runtime`).
- formats registered by their own module with :func:`register_reader`: ncnn ``.param`` +
  ``.bin`` (:mod:`.ncnn`).

What the weights *are* is decided elsewhere: :func:`read_state_dict` picks the state dict of an
SR checkpoint (``params_ema``, then ``params``, then a bare state dict, as BasicSR /
Real-ESRGAN), and :mod:`.registry` recognises the architecture. The fingerprint of a weight file
is :func:`desra_fast.utils.file_sha256` of every file read (:attr:`WeightFile.sha256`).
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..utils import file_sha256

__all__ = ["CheckpointError", "UnsafeCheckpointError", "WeightFile", "read_weights", "read_state_dict",
           "register_reader", "read_config_json", "read_onnx_metadata", "ONNX_META_KEY", "load_strict", "TORCH_SUFFIXES", "HF_WEIGHT_FILES"]

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("params_ema", "params")
#: Suffixes read with ``torch.load`` (``.bin``: a Hugging Face ``pytorch_model.bin``).
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
#: Weight files of a Hugging Face folder, in order of preference.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A weight file that cannot be read or does not hold what the loader needs (keys, shapes,
    layout). The one base of every checkpoint error of the package (SR, segmentation, ncnn,
    fine-tune checkpoints)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would construct arbitrary Python objects (and so could run code)."""


@dataclass(frozen=True)
class WeightFile:
    """What :func:`read_weights` read.

    Attributes:
        path: the weights file (inside a Hugging Face folder: its weights file).
        format: ``"torch"``, ``"safetensors"`` or a registered format (``"ncnn"``).
        content: the unpickled object (torch), a ``{name: Tensor}`` dict (safetensors), or the
            registered reader's result (ncnn: :class:`~desra_fast.models.ncnn.NcnnModel`).
        config: the ``config.json`` beside the weights (a dict), when there is one.
        files: every file read, in order (for the fingerprint).
    """
    path: Path
    format: str
    content: Any
    config: Optional[dict]
    files: Tuple[Path, ...]

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes of :attr:`files` read one after the other."""
        return file_sha256(*self.files)


#: suffix -> (format name, reader(path, **options) -> (content, files)); see :func:`register_reader`.
_READERS: Dict[str, Tuple[str, Callable[..., Tuple[Any, Tuple[Path, ...]]]]] = {}


def register_reader(suffixes, fmt: str, reader: Callable[..., Tuple[Any, Tuple[Path, ...]]]) -> None:
    """Teach :func:`read_weights` a file format (called by the format's own module at import).

    Args:
        suffixes: lower-case suffixes (``(".param",)``).
        fmt: the format's name (:attr:`WeightFile.format`).
        reader: ``reader(path, **options) -> (content, files_read)``; raises a
            :class:`CheckpointError` subclass for a bad file.
    """
    for s in suffixes:
        _READERS[s.lower()] = (fmt, reader)


def read_weights(source, *, trust: bool = False, **options) -> WeightFile:
    """Read any weight file or Hugging Face folder, never running code unless ``trust``.

    Args:
        source: a file (``.pth/.pt/.ckpt/.bin``, ``.safetensors``, a registered suffix such as
            ncnn's ``.param``) or a Hugging Face folder.
        trust: allow unpickling objects beyond tensors and plain containers. Only for files
            whose origin you trust: unpickling can run arbitrary code. The one opt-in of the
            package (``load_sr(trust=)``, ``load_segmenter(trust=)``, CLI ``--trust``).
        **options: passed to a registered reader (ncnn: ``bin=``).

    Returns:
        :class:`WeightFile`.

    Raises:
        CheckpointError: no such file, unreadable / truncated / corrupt file, unsupported suffix.
        UnsafeCheckpointError: a pickle that would build arbitrary objects, without ``trust``.
    """
    src = Path(os.fspath(source))
    config = None
    if src.is_dir():
        src, config = _hf_folder(src)
    elif not src.is_file():
        raise CheckpointError(f"{src}: no such file or folder")
    suffix = src.suffix.lower()
    if suffix in _READERS:
        fmt, reader = _READERS[suffix]
        content, files = reader(src, **options)
        return WeightFile(src, fmt, content, config, tuple(files))
    if options:
        raise CheckpointError(f"{src}: options {sorted(options)} do not apply to a {suffix or 'suffix-less'} file")
    if suffix == ".safetensors":
        return WeightFile(src, "safetensors", _read_safetensors(src), config, (src,))
    if suffix in TORCH_SUFFIXES:
        return WeightFile(src, "torch", _torch_load(src, trust), config, (src,))
    known = ", ".join(sorted(set(TORCH_SUFFIXES + (".safetensors",) + tuple(_READERS))))
    raise CheckpointError(f"{src}: unsupported weight file suffix {suffix!r} (known: {known}, or a Hugging Face folder)")


def _hf_folder(folder: Path) -> Tuple[Path, Optional[dict]]:
    """The weights file of a Hugging Face folder and its parsed ``config.json`` (or None)."""
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            cfg_path = folder / "config.json"
            return folder / name, read_config_json(cfg_path) if cfg_path.is_file() else None
    if any(folder.glob("*.index.json")):
        raise CheckpointError(f"{folder}: sharded Hugging Face checkpoints are not supported; "
                              "merge the shards into one model.safetensors")
    raise CheckpointError(f"{folder}: a Hugging Face folder needs model.safetensors or pytorch_model.bin")


def read_config_json(path) -> dict:
    """A Hugging Face ``config.json`` as a dict; CheckpointError when unreadable or not an object."""
    import json

    try:
        config = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable config.json: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: config.json must hold a JSON object")
    return config


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors is a dependency of the models extra
        raise ImportError("reading .safetensors needs the safetensors package: pip install safetensors") from None
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable .safetensors file (truncated or corrupt?): {e}") from None


def _torch_load(path: Path, trust: bool) -> Any:
    """``torch.load`` under the package's one safety policy (see the module docstring)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if not _unsafe(msg):
            detail = [ln.strip() for ln in msg.splitlines() if ln.strip() and "Weights only load failed" not in ln
                      and "weights_only" not in ln]
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?)"
                                  + (f": {detail[0]}" if detail else "")) from None
        if not trust:
            raise UnsafeCheckpointError(
                f"{path}: refused to load: the pickle references Python objects beyond tensors and plain "
                f"containers ({_unsafe_detail(msg)}; mmcv-era checkpoints keep numpy arrays in their 'meta'), and "
                f"unpickling it could run arbitrary code. Only weights are accepted (torch.load(weights_only=True)). "
                f"If you trust the file, pass trust=True (CLI: --trust), or re-save its state dict with "
                f"torch.save({{'params_ema': state_dict}}, ...) or as .safetensors.") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from None
    log.warning("%s: unpickling with trust=True: objects beyond tensors are built (the caller trusts this file)", path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path}: cannot unpickle the checkpoint: {exc}") from None


def _unsafe(msg: str) -> bool:
    """Whether torch's weights-only refusal names a global it would not build (versus a corrupt file)."""
    return "GLOBAL" in msg or "Unsupported global" in msg


def _unsafe_detail(msg: str) -> str:
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
    if m:
        return f"first refused object: {m.group(1)}"
    hits = [ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
    return hits[0].rstrip(".") if hits else "non-tensor objects"


def read_state_dict(path, key: Optional[str] = None, *, trust: bool = False
                    ) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """The state dict of an SR / network checkpoint (``.pth``/``.pt``/``.ckpt``/``.safetensors``),
    read by :func:`read_weights` (so without running code unless ``trust``).

    Args:
        path: the checkpoint file.
        key: the entry holding the weights (default: ``params_ema``, then ``params``, then the
            file itself if it is a bare state dict). ``module.`` prefixes (DataParallel) are removed.
        trust: see :func:`read_weights`.

    Returns:
        ``(state_dict, key_used)``: ``{name: Tensor}`` of any dtype; ``key_used`` is None for a
        bare state dict or safetensors.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle references globals that ``weights_only`` refuses.
        CheckpointError: not a checkpoint, or no state dict under the expected keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    wf = read_weights(path, trust=trust)
    if wf.format == "safetensors":
        if key is not None:
            raise CheckpointError(f"{path}: key={key!r} given, but a .safetensors file holds one flat state dict")
        sd, used = wf.content, None
    elif wf.format == "torch":
        sd, used = _select(wf.content, key, path)
    else:
        raise CheckpointError(f"{path}: a {wf.format} file holds no torch state dict")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: the state dict holds non-tensor entries: {bad[:5]}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, used


def _select(obj, key: str | None, path: Path):
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict (state dict or {{'params_ema': ...}}), got {type(obj).__name__}")
    if key is not None:
        if key not in obj or not isinstance(obj[key], dict):
            raise CheckpointError(f"{path}: no state dict under key {key!r}; top-level keys: {sorted(map(str, obj))[:10]}")
        return obj[key], key
    for k in CHECKPOINT_KEYS:
        if isinstance(obj.get(k), dict):
            return obj[k], k
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise CheckpointError(f"{path}: no weights found: expected 'params_ema', 'params' or a bare state dict; "
                          f"top-level keys: {sorted(map(str, obj))[:10]}")


def load_strict(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(sd, strict=True)`` with errors that list the offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        def show(ks):
            return ", ".join(ks[:8]) + (f" ... ({len(ks)} in all)" if len(ks) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise CheckpointError(f"{what}: the state dict does not match the architecture; " + "; ".join(parts))
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{what}: tensor shapes do not match the architecture: " + "; ".join(wrong[:8])
                              + (f" ... ({len(wrong)} in all)" if len(wrong) > 8 else ""))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{what}: non-finite (NaN/inf) weights in: {', '.join(bad[:8])}")
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)


#: Metadata key holding the JSON model description written by :func:`desra_fast.export.to_onnx`.
ONNX_META_KEY = "desra_fast.model"


def read_onnx_metadata(path) -> Dict[str, Any]:
    """The model description :func:`desra_fast.export.to_onnx` stored in an ``.onnx`` file.

    Returns:
        The dict with ``kind`` (``"sr"`` or ``"segmenter"``), ``info`` (the model's ``.info``),
        ``precision``, ``input_name``, ``output_name``, ``desra_fast_version``...

    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): not a readable ONNX file (truncated, corrupt) or not
            written by ``to_onnx``.
        ImportError: neither the ``onnx`` nor the ``onnxruntime`` package is installed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    return read_weights(path).content


def _read_onnx(path: Path):
    import json

    props = _onnx_props(path)
    if ONNX_META_KEY not in props:
        raise CheckpointError(
            f"{path}: this ONNX file was not exported by desra_fast.export.to_onnx (no "
            f"{ONNX_META_KEY!r} metadata), so how to pre-process its inputs is unknown; export the "
            f"source model with desra_fast.export.to_onnx / `desra-fast export`")
    try:
        meta = json.loads(props[ONNX_META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt {ONNX_META_KEY!r} metadata ({e})") from None
    if not isinstance(meta, dict) or "kind" not in meta or "info" not in meta:
        raise CheckpointError(f"{path}: {ONNX_META_KEY!r} metadata lacks 'kind' / 'info'")
    return meta, (path,)


def _onnx_props(path: Path) -> Dict[str, str]:
    """The metadata props of an ONNX file (via ``onnx`` if installed, else ONNX Runtime)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is not None:
        import onnx
        from google.protobuf.message import DecodeError

        try:
            model = onnx.load(str(path), load_external_data=False)
        except (DecodeError, ValueError, RuntimeError, OSError) as e:
            raise CheckpointError(f"{path}: not a readable ONNX file (truncated or corrupt?): {e}") from None
        if not model.graph.node:
            raise CheckpointError(f"{path}: not a readable ONNX file (empty graph: truncated or corrupt?)")
        return {p.key: p.value for p in model.metadata_props}
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (InvalidProtobuf, Fail...)
            raise CheckpointError(f"{path}: ONNX Runtime cannot load this file (truncated or corrupt, or not an "
                                  f"ONNX model?): {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
        return dict(sess.get_modelmeta().custom_metadata_map)
    raise ImportError("reading an .onnx file needs the onnx or onnxruntime package: pip install 'desra_fast[onnx]'")


register_reader((".onnx",), "onnx", _read_onnx)
