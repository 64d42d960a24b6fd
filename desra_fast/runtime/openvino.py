"""OpenVINO runner: an SR model or a segmenter compiled for the CPU by OpenVINO, called like the
torch module it replaces.

Sources: a loaded torch model (converted with ``openvino.convert_model``; the IR is cached on
disk, keyed by the model's description, its source checkpoint's SHA-256 and the versions), an
``.onnx`` written by :func:`desra_fast.export.to_onnx`, or an OpenVINO IR (``.xml`` + ``.bin``)
written by :func:`save_ir` / ``desra-fast export --format openvino``, which stores the same model
description as the ONNX export (``rt_info["desra_fast"]["model"]``) plus the SHA-256 of its
``.bin``, so that a ``.bin`` of another model beside the ``.xml`` is refused.

Exactness: ``precision="fp32"`` always sets ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO would
otherwise pick bf16 by itself on CPUs with AMX / AVX-512 BF16, and the result would depend on the
CPU); ``"bf16"`` (and ``"fp16"``) set that hint, which OpenVINO only honours where the CPU has the
instructions: the precision it actually uses is read back from the compiled model
(:attr:`OpenVINORunner.effective_precision`). The IR stores float32 weights (never compressed to
fp16).

Compiled models are cached by OpenVINO (``CACHE_DIR``) under
``desra_fast.utils.cache_dir("openvino", "<openvino version>-<cpu key>")``: the folder name holds
the OpenVINO version and a hash of the CPU model and its instruction-set flags, so another
OpenVINO or another CPU compiles afresh, while a second process on the same machine loads the
compiled blob. One model has dynamic batch, height and width. Threads: ``threads=``, else
``$DESRA_NUM_THREADS``, else ``torch.get_num_threads()``. Thread-safe: each call takes an infer
request from a pool (one per concurrent caller).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

__all__ = ["OpenVINORunner", "ov_status", "save_ir", "read_ir_metadata", "cached_ir", "ov_cache_dir",
           "HINTS", "OV_PRECISIONS"]

log = logging.getLogger(__name__)

#: desra_fast precision -> OpenVINO ``INFERENCE_PRECISION_HINT``.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
OV_PRECISIONS = tuple(HINTS)
#: ``rt_info`` path of the model description (the ONNX export's ``desra_fast.model`` metadata).
_RT_META = ("desra_fast", "model")
_RT_BIN = ("desra_fast", "bin_sha256")
_CORE = None
_CORE_LOCK = threading.Lock()


def ov_status(device="cpu") -> Tuple[bool, str]:
    """Whether OpenVINO can run on ``device`` here, and why not.

    Returns:
        ``(True, "")`` or ``(False, reason)``; the reason names what to install or change.
    """
    dev_type = getattr(device, "type", str(device).split(":")[0])
    if importlib.util.find_spec("openvino") is None:
        return False, "the openvino package is not installed: pip install 'desra_fast[openvino]'"
    if dev_type != "cpu":
        return False, f"desra_fast runs OpenVINO on the CPU only (device 'cpu'), not {dev_type!r}"
    try:
        import openvino  # noqa: F401
    except Exception as e:  # a broken install: say so rather than fail later
        return False, f"the openvino package cannot be imported: {type(e).__name__}: {e}"
    return True, ""


def _ov():
    ok, why = ov_status("cpu")
    if not ok:
        from .base import RuntimeUnavailableError

        raise RuntimeUnavailableError(f"runtime='openvino' cannot run: {why}")
    import openvino

    return openvino


def core():
    """The process-wide ``openvino.Core`` (created once)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = _ov().Core()
        return _CORE


def _cpu_key() -> str:
    """A short hash of the CPU model name and its instruction-set flags."""
    text = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        wanted = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        text = "\n".join(sorted(set(wanted))) or text
    except OSError:
        pass
    try:
        text += "\n" + str(core().get_property("CPU", "FULL_DEVICE_NAME"))
        text += "\n" + " ".join(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - an older plugin without these properties: the flags suffice
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ov_cache_dir() -> Path:
    """Where OpenVINO keeps compiled models: one folder per OpenVINO version and CPU."""
    from ..utils import cache_dir

    version = _ov().get_version().split("-")[0]
    return cache_dir("openvino", f"compiled-{version}-{_cpu_key()}")


def default_threads() -> int:
    """``$DESRA_NUM_THREADS`` if set (a positive integer), else ``torch.get_num_threads()``."""
    env = os.environ.get("DESRA_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"DESRA_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"DESRA_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    import torch

    return max(1, torch.get_num_threads())


# ---------------------------------------------------------------------------- IR files
def translated(model):
    """The direct ``openvino.Model`` of a loaded model's plain convolutional network
    (:func:`desra_fast.runtime.openvino_graph.translate`: milliseconds), or None."""
    import torch

    from ..export import _in_channels
    from .openvino_graph import translate

    _ov()
    module = getattr(model, "module", None)
    if not isinstance(module, torch.nn.Module):
        return None
    return translate(module.eval(), _in_channels(model, module, dict(getattr(model, "info", None) or {})))


def _convert(model, kind: str):
    """``openvino.Model`` of a loaded torch model (dynamic batch, height and width): the direct
    translation when it applies, else ``openvino.convert_model``."""
    import torch

    from ..export import _EXAMPLE_SIDE, _in_channels, _kind_of

    ov = _ov()
    kind = kind or _kind_of(model)
    module = model.module
    if not isinstance(module, torch.nn.Module):
        raise ValueError("OpenVINO conversion needs the torch module of the model (a model loaded from an "
                         "exported file has none: load the exported file with runtime='openvino' instead)")
    direct = translated(model)
    if direct is not None:
        return direct
    cin = _in_channels(model, module, dict(getattr(model, "info", None) or {}))
    side = _EXAMPLE_SIDE.get(kind, 32)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    example = torch.rand(1, cin, side, side, device=device)
    module = module.eval()
    try:
        with torch.no_grad():
            ovm = ov.convert_model(module.cpu() if device.type != "cpu" else module, example_input=example.cpu(),
                                   input=[ov.PartialShape([-1, cin, -1, -1])])
    except Exception as e:
        raise RuntimeError(f"openvino.convert_model failed for {type(module).__name__}: "
                           f"{type(e).__name__}: {e}") from e
    return ovm


def save_ir(model, path: Union[str, os.PathLike], *, ov_model=None) -> Path:
    """Write an OpenVINO IR (``path`` ``.xml`` + ``.bin`` beside it) of a loaded model.

    Args:
        model: an ``SRModel`` (:func:`~desra_fast.models.load_sr`) or a ``Segmenter``
            (:func:`~desra_fast.models.load_segmenter`) with its torch module.
        path: the ``.xml`` to write; the weights go to ``path.with_suffix(".bin")``. Both are
            written atomically (temporary names, then renamed: ``.bin`` first, ``.xml`` last).
        ov_model: an already converted ``openvino.Model`` of ``model`` (else converted here).

    Returns:
        The ``.xml`` path. The IR holds the model description of :func:`desra_fast.export.to_onnx`
        (float32 weights, dynamic sizes), so ``load_sr(path)`` / ``load_segmenter(path)``
        pre-process inputs exactly as the source model.
    """
    from ..export import _kind_of, export_metadata

    ov = _ov()
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ValueError(f"save_ir: an OpenVINO IR is written to a .xml file (with its .bin beside), got {path.name!r}")
    kind = _kind_of(model)
    if kind == "module":
        raise ValueError("save_ir: expected an SRModel or a Segmenter (the loaders need their description)")
    meta = export_metadata(model, precision="fp32")
    ovm = ov_model if ov_model is not None else _convert(model, kind)
    ovm.set_rt_info(json.dumps(meta, sort_keys=True), list(_RT_META))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=str(path.parent)))
    try:
        tmp = tmpdir / "model.xml"
        ov.save_model(ovm, str(tmp), compress_to_fp16=False)
        # The .bin's hash goes into the .xml, so a foreign .bin beside it is caught on load.
        ovm.set_rt_info(_sha256(tmp.with_suffix(".bin")), list(_RT_BIN))
        ov.save_model(ovm, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    finally:
        for p in tmpdir.glob("*"):
            p.unlink()
        tmpdir.rmdir()
    return path


def _sha256(path: Path) -> str:
    from ..utils import file_sha256

    return file_sha256(path)


def _rt(ovm, keys) -> Optional[str]:
    try:
        if not ovm.has_rt_info(list(keys)):
            return None
        return str(ovm.get_rt_info(list(keys)).astype(str))
    except Exception:  # noqa: BLE001 - rt_info of an unexpected type: treated as absent
        return None


def read_ir(path: Union[str, os.PathLike]):
    """``(openvino.Model, meta)`` of an IR written by :func:`save_ir`, checked.

    Raises:
        FileNotFoundError: no ``.xml`` or no ``.bin`` beside it.
        ValueError: not a readable IR (truncated, corrupt, not XML), an IR not written by
            desra_fast (no model description), or a ``.bin`` that does not belong to the ``.xml``.
    """
    ov = _ov()
    path = Path(path)
    bin_path = path.with_suffix(".bin")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such OpenVINO IR (.xml) file")
    if not bin_path.is_file():
        raise FileNotFoundError(f"{path}: the OpenVINO IR's weights file {bin_path.name} is missing")
    try:
        ovm = core().read_model(str(path), str(bin_path))
    except Exception as e:  # OpenVINO raises its own RuntimeError subclasses with long messages
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: OpenVINO cannot read this IR (truncated or corrupt .xml/.bin, or not an "
                         f"OpenVINO IR?): {msg}") from None
    text = _rt(ovm, _RT_META)
    if text is None:
        raise ValueError(f"{path}: this OpenVINO IR was not written by desra_fast (no model description in its "
                         f"rt_info), so how to pre-process its inputs is unknown; write it with "
                         f"`desra-fast export --format openvino`")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt desra_fast model description ({e})") from None
    if not isinstance(meta, dict) or "kind" not in meta or "info" not in meta:
        raise ValueError(f"{path}: the desra_fast model description lacks 'kind' / 'info'")
    want = _rt(ovm, _RT_BIN)
    if want is None or want != _sha256(bin_path):
        raise ValueError(f"{path}: the weights file {bin_path.name} does not belong to this .xml (SHA-256 "
                         f"differs from the one recorded at export): an IR pair of two different models?")
    return ovm, meta


def read_ir_metadata(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The model description stored in an IR (see :func:`read_ir`)."""
    return read_ir(path)[1]


def cached_ir(model, *, directory: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The IR of a loaded torch model in the cache (converted once, then reused by every process;
    for networks :func:`translated` handles, translating again is as fast as reading the IR).

    The name is keyed like :func:`desra_fast.export.cached_onnx` (the model's ``.info`` with its
    source SHA-256, or its weights; desra_fast and torch versions) plus the OpenVINO version.
    Default folder: ``desra_fast.utils.cache_dir("openvino", "ir")``.
    """
    from ..export import _model_key
    from ..utils import cache_dir

    folder = Path(directory) if directory is not None else cache_dir("openvino", "ir")
    arch = str((getattr(model, "info", None) or {}).get("arch", "model")).replace(os.sep, "_")
    key = hashlib.sha256((_model_key(model, "fp32") + _ov().get_version()).encode()).hexdigest()[:24]
    path = folder / f"{arch}-{key}.xml"
    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        save_ir(model, path)
    return path


# ---------------------------------------------------------------------------- runner
class OpenVINORunner:
    """Runs an OpenVINO model on the CPU on torch tensors.

    Args:
        source: an ``openvino.Model``, an IR ``.xml`` (checked by :func:`read_ir`) or an
            ``.onnx`` file.
        precision: ``"fp32"`` (``INFERENCE_PRECISION_HINT=f32``, always set), ``"bf16"`` or
            ``"fp16"`` (the hint; honoured only where the CPU has the instructions).
        threads: inference threads (default :func:`default_threads`).
        cache: keep compiled models in :func:`ov_cache_dir` (a second process loads the blob).
        name: what the model is, for messages.

    Attributes:
        precision (the requested one), hint, effective_precision (what OpenVINO compiled: e.g.
        ``"f32"`` for a bf16 request on a CPU without bf16), config (the compile properties),
        load_seconds, loaded_from_cache (the compiled blob came from :func:`ov_cache_dir`).

    Call:
        ``runner(x)`` with ``x`` a (N, C, H, W) float CPU tensor -> (N, C', H', W') float32
        CPU tensor.
    """

    runtime = "openvino"

    def __init__(self, source, *, precision: str = "fp32", threads: Optional[int] = None, cache: bool = True,
                 name: Optional[str] = None):
        import time

        ov = _ov()
        if precision not in HINTS:
            raise ValueError(f"OpenVINO precision must be one of {OV_PRECISIONS}, got {precision!r}")
        t0 = time.perf_counter()
        if isinstance(source, (str, os.PathLike)):
            p = Path(source)
            self.name = name or str(p)
            if p.suffix.lower() == ".xml":
                model = read_ir(p)[0]
            else:
                if not p.is_file():
                    raise FileNotFoundError(f"{p}: no such model file")
                try:
                    model = core().read_model(str(p))
                except Exception as e:
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise ValueError(f"{p}: OpenVINO cannot read this file (truncated or corrupt?): {msg}") from None
        else:
            model, self.name = source, name or "<openvino.Model>"
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"{self.name}: expected one input and one output, got {len(model.inputs)} -> "
                             f"{len(model.outputs)}")
        ps = model.inputs[0].get_partial_shape()
        self.in_channels = ps[1].get_length() if ps.rank.is_static and len(ps) == 4 and ps[1].is_static else None
        self.precision, self.hint = precision, HINTS[precision]
        self.threads = int(threads) if threads else default_threads()
        self.config = {"INFERENCE_PRECISION_HINT": self.hint, "INFERENCE_NUM_THREADS": self.threads,
                       "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if cache:
            folder = ov_cache_dir()
            folder.mkdir(parents=True, exist_ok=True)
            self.config["CACHE_DIR"] = str(folder)
        try:
            self.compiled = core().compile_model(model, "CPU", dict(self.config))
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RuntimeError(f"{self.name}: OpenVINO could not compile the model for the CPU with "
                               f"{self.config}: {msg}") from None
        try:
            self.loaded_from_cache = bool(self.compiled.get_property("LOADED_FROM_CACHE"))
        except Exception:  # noqa: BLE001 - a plugin without the property
            self.loaded_from_cache = False
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT")     # an openvino.Type
        self.effective_precision = got.to_string() if hasattr(got, "to_string") else str(got)
        if self.effective_precision != self.hint:
            log.warning("%s: OpenVINO was asked for %s inference and compiled %s (this CPU lacks the "
                        "instructions); the results are those of %s", self.name, self.hint,
                        self.effective_precision, self.effective_precision)
        self._requests: "queue.SimpleQueue" = queue.SimpleQueue()
        self.load_seconds = time.perf_counter() - t0
        self._ov = ov

    def __repr__(self) -> str:
        return (f"OpenVINORunner({self.name!r}, precision={self.precision!r} (compiled "
                f"{self.effective_precision}), threads={self.threads})")

    def describe(self) -> Dict[str, Any]:
        """What a model's ``.info`` records about this runner."""
        return {"openvino_precision_hint": self.hint, "openvino_inference_precision": self.effective_precision,
                "openvino_version": self._ov.get_version().split("-")[0], "threads": self.threads}

    def _check(self, x):
        from .base import check_nchw_float

        check_nchw_float(x, "OpenVINORunner")
        if x.device.type != "cpu":
            raise ValueError(f"OpenVINORunner: input is on {x.device}; OpenVINO runs on the CPU")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(f"OpenVINORunner: {self.name} takes {self.in_channels} channels, got input of "
                             f"shape {tuple(x.shape)}")

    def __call__(self, x):
        import torch

        self._check(x)
        dtype = x.dtype
        x = x.detach().to(torch.float32).contiguous()
        try:
            req = self._requests.get_nowait()
        except queue.Empty:
            req = self.compiled.create_infer_request()
        try:
            req.infer({0: x.numpy()})
            out = torch.from_numpy(np.array(req.get_output_tensor(0).data, dtype=np.float32, copy=True))
        except Exception as e:
            raise RuntimeError(f"OpenVINO failed on input {tuple(x.shape)}: {e}") from None
        finally:
            self._requests.put(req)
        return out if dtype == torch.float32 else out.to(dtype)
