"""Inference runtimes behind one switch: ``runtime="auto"|"torch"|"onnxruntime"|"tensorrt"|"openvino"``.

A *runner* replaces a model's torch ``nn.Module``: it is called on a float32 NCHW torch tensor
and returns a float32 NCHW torch tensor on the same device, so :class:`SRModel` and
:class:`Segmenter` keep their tiling, pre-padding, normalisation and rounding whatever runs the
network. Runners are thread-safe.

- ``"torch"``: the ``nn.Module`` itself (eager).
- ``"onnxruntime"`` (:mod:`desra_fast.runtime.onnxruntime`): an ``.onnx`` file written by
  :func:`desra_fast.export.to_onnx`; CPU execution provider with the ``onnxruntime`` package
  (``pip install 'desra_fast[onnx]'``), CUDA / TensorRT execution providers with
  ``onnxruntime-gpu`` (``[gpu]``), IO binding on torch CUDA tensors.
- ``"tensorrt"`` (:mod:`desra_fast.runtime.tensorrt`): a TensorRT engine built from the
  ``.onnx`` file (cached on disk), run on torch CUDA tensors on the current stream.
- ``"openvino"`` (:mod:`desra_fast.runtime.openvino`): OpenVINO on the CPU, from a torch model
  (converted once, the IR cached on disk), an ``.onnx`` file or an OpenVINO IR (``.xml`` +
  ``.bin``, written by ``desra-fast export --format openvino``); ``precision="fp32"`` always
  sets the f32 inference precision hint, ``"bf16"`` the bf16 hint (``pip install
  'desra_fast[openvino]'``).
- ``"auto"``: the fastest *exact* runtime available for the device and the source: an
  ``.engine`` file -> TensorRT; an ``.xml`` IR -> OpenVINO; on CUDA, TensorRT when the
  ``tensorrt`` package is installed; on CPU with an fp32 (or unspecified) precision, OpenVINO
  when installed (the fastest exact CPU runtime measured: ``benchmarks/RESULTS_RUNTIMES.md``)
  for an ``.onnx`` file and for a checkpoint whose network translates directly to OpenVINO
  (:mod:`.openvino_graph`: RRDBNet, SRMD and other plain convolutional nets, in milliseconds);
  else ONNX Runtime for an ``.onnx`` file and torch for a checkpoint (``openvino.convert_model``
  of other networks, e.g. SegFormer, costs tens of seconds: export once with ``desra-fast
  export --format openvino`` and load the ``.xml``). A precision other than fp32 is never
  chosen by ``auto`` (a non-fp32 request on CPU keeps torch, whose ``upscale(precision=...)``
  applies it).

An explicitly requested runtime that cannot run raises :class:`RuntimeUnavailableError` with
the reason; nothing falls back silently.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

# The ONNX metadata is read by the package's one weight reader; the runtime modules take the
# shared error and device helper from .base (importing them from here would be a cycle).
from ..models.checkpoint import ONNX_META_KEY, read_onnx_metadata
from .base import RuntimeUnavailableError, as_device

__all__ = [
    "RUNTIMES", "RuntimeUnavailableError", "runtime_status", "resolve_runtime", "make_runner",
    "read_onnx_metadata", "prepare_model",
]

RUNTIMES = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")

#: Metadata key holding the JSON model description written by :func:`desra_fast.export.to_onnx`.
META_KEY = ONNX_META_KEY

_device = as_device


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def runtime_status(runtime: str, device="cpu") -> Tuple[bool, str]:
    """Whether ``runtime`` can run on ``device`` here, and why not.

    Returns:
        ``(True, "")`` or ``(False, reason)``; the reason says what to install or change.
    """
    dev = _device(device)
    if runtime == "torch":
        return True, ""
    if runtime == "onnxruntime":
        from .onnxruntime import ort_status

        return ort_status(dev)
    if runtime == "tensorrt":
        from .tensorrt import trt_status

        return trt_status(dev)
    if runtime == "openvino":
        from .openvino import ov_status

        return ov_status(dev)
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def source_kind(source) -> str:
    """``"onnx"``, ``"engine"``, ``"ir"`` (OpenVINO ``.xml``) or ``"torch"`` (anything else: a
    checkpoint the loader reads)."""
    if isinstance(source, (str, os.PathLike)):
        suffix = Path(source).suffix.lower()
        if suffix == ".onnx":
            return "onnx"
        if suffix == ".xml":
            return "ir"
        if suffix in (".engine", ".plan", ".trt"):
            return "engine"
    return "torch"


def resolve_runtime(runtime: str, device="cpu", *, source: str = "torch", precision: Optional[str] = None) -> str:
    """The concrete runtime for a request: ``auto`` resolved, an explicit one checked.

    Args:
        runtime: one of :data:`RUNTIMES`.
        device: where the model runs.
        source: what is loaded: ``"torch"`` (a checkpoint), ``"onnx"``, ``"engine"`` or ``"ir"``.
        precision: the precision asked for (None or ``"fp32"``: exact); ``auto`` picks
            OpenVINO on CPU only for fp32.

    Raises:
        ValueError: unknown runtime, or one that cannot read this kind of source.
        RuntimeUnavailableError: an explicitly requested runtime that cannot run here.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    dev = _device(device)
    if runtime == "auto":
        if source == "engine":
            runtime = "tensorrt"
        elif source == "ir":
            runtime = "openvino"
        elif (dev.type == "cpu" and precision in (None, "fp32", "float32")
              and runtime_status("openvino", dev)[0]):
            runtime = "openvino"
        elif dev.type == "cuda" and runtime_status("tensorrt", dev)[0]:
            runtime = "tensorrt"
        elif source == "onnx":
            runtime = "onnxruntime"
        else:
            runtime = "torch"
    if source == "engine" and runtime != "tensorrt":
        raise ValueError(f"a TensorRT engine file runs only with runtime='tensorrt' (got {runtime!r})")
    if source == "ir" and runtime != "openvino":
        raise ValueError(f"an OpenVINO IR (.xml) runs only with runtime='openvino' (got {runtime!r})")
    if source == "onnx" and runtime == "torch":
        raise ValueError("an .onnx file cannot run with runtime='torch'; load the checkpoint it was "
                         "exported from, or use runtime='onnxruntime' / 'tensorrt' / 'openvino'")
    ok, why = runtime_status(runtime, dev)
    if not ok:
        raise RuntimeUnavailableError(f"runtime={runtime!r} cannot run on {dev}: {why}")
    return runtime


def make_runner(onnx_path, runtime: str, device="cpu", *, meta: Optional[dict] = None,
                precision: Optional[str] = None, **options) -> Callable:
    """A runner for an exported ``.onnx`` file (or a TensorRT ``.engine``).

    Args:
        onnx_path: the ``.onnx`` (or ``.engine``) file.
        runtime: ``"onnxruntime"`` or ``"tensorrt"`` (already resolved).
        device: where it runs; runners take and return tensors on this device.
        meta: :func:`read_onnx_metadata` of the file, if already read.
        precision: TensorRT engine precision (default: the file's own).
        **options: runtime options (``threads``, ``providers`` for ONNX Runtime; ``min_shape``,
            ``opt_shape``, ``max_shape``, ``fallback_onnx``, ``workspace_gib`` for TensorRT).

    Returns:
        A callable ``runner(x: Tensor[N, C, H, W] float32) -> Tensor`` on ``device``.
    """
    dev = _device(device)
    if runtime == "openvino":
        from .openvino import OpenVINORunner

        return OpenVINORunner(onnx_path, precision=precision or "fp32", threads=options.get("threads"))
    if runtime == "onnxruntime":
        from .onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(onnx_path, device=dev, **options)
    if runtime == "tensorrt":
        from .tensorrt import TensorRTRunner, engine_for

        if source_kind(onnx_path) == "engine":
            return TensorRTRunner(onnx_path, device=dev)
        engine = engine_for(onnx_path, device=dev, precision=precision, meta=meta,
                            **{k: v for k, v in options.items() if k != "fallback_onnx"})
        return TensorRTRunner(engine, device=dev, fallback_onnx=options.get("fallback_onnx"))
    raise ValueError(f"make_runner: runtime must be 'onnxruntime', 'tensorrt' or 'openvino', got {runtime!r}")


def prepare_model(source, *, kind: str, runtime: str = "auto", device="cpu",
                  load_torch: Optional[Callable[[], Any]] = None, precision: Optional[str] = None,
                  **options) -> Tuple[str, Optional[dict], Optional[Callable]]:
    """What a loader needs to honour ``runtime=`` and ``.onnx`` / ``.engine`` sources.

    Args:
        source: what the loader was given.
        kind: ``"sr"`` or ``"segmenter"`` (an exported file of the other kind is refused).
        runtime: one of :data:`RUNTIMES`.
        device: where the model runs.
        load_torch: for torch sources and a non-torch runtime: returns the loaded model (with
            ``.module`` and ``.info``) so it can be exported (the export is cached on disk).
        precision: TensorRT engine precision or OpenVINO inference precision hint (``"fp32"``,
            ``"fp16"``, ``"bf16"``); None = fp32 (OpenVINO) / the file's own (TensorRT).

    Returns:
        ``(runtime, info, runner)``: the resolved runtime; for a file source the ``info`` dict
        stored in it (else None); the runner, or None when torch runs the module itself.
    """
    src = source_kind(source)
    rt = resolve_runtime(runtime, device, source=src, precision=precision)
    if src == "ir":
        from .openvino import OpenVINORunner, read_ir

        ovm, meta = read_ir(source)
        _check_kind(source, meta, kind)
        return rt, meta["info"], OpenVINORunner(ovm, precision=precision or "fp32", name=str(source), **options)
    if src == "engine":
        from .tensorrt import read_engine_metadata

        meta = read_engine_metadata(source)
        _check_kind(source, meta, kind)
        return rt, meta["info"], make_runner(source, rt, device, meta=meta)
    if src == "onnx":
        meta = read_onnx_metadata(source)
        _check_kind(source, meta, kind)
        return rt, meta["info"], make_runner(source, rt, device, meta=meta, precision=precision, **options)
    if rt == "torch":
        return rt, None, None
    if load_torch is None:
        raise ValueError("prepare_model: a torch source with a non-torch runtime needs load_torch")
    from ..export import cached_onnx

    model = load_torch()
    if rt == "openvino":
        from .openvino import OpenVINORunner, cached_ir, translated

        graph = translated(model)
        if graph is None and runtime == "auto":
            # openvino.convert_model costs tens of seconds: auto does not pay it behind the
            # user's back (export once with `desra-fast export --format openvino`, load the .xml).
            return "torch", None, None
        name = str((getattr(model, "info", None) or {}).get("source", "model"))
        return rt, None, OpenVINORunner(graph if graph is not None else cached_ir(model),
                                        precision=precision or "fp32", name=name, **options)
    fp32 = cached_onnx(model, precision="fp32")
    if rt == "tensorrt" and precision in ("fp16", "bf16"):
        from .tensorrt import weak_typing

        if not weak_typing():
            # Strongly typed TensorRT: the reduced precision must be in the graph itself.
            onnx_path = cached_onnx(model, precision=precision)
            return rt, None, make_runner(onnx_path, rt, device, precision=precision, fallback_onnx=fp32, **options)
        return rt, None, make_runner(fp32, rt, device, precision=precision, fallback_onnx=fp32, **options)
    return rt, None, make_runner(fp32, rt, device, precision=precision, **options)


def _check_kind(source, meta: dict, kind: str) -> None:
    if meta.get("kind") != kind:
        want = {"sr": "a super-resolution model (load_sr)", "segmenter": "a segmenter (load_segmenter)"}
        raise ValueError(f"{source}: this file holds {want.get(meta.get('kind'), repr(meta.get('kind')))}, "
                         f"not {want.get(kind, kind)}")


# The model loaders (one layer below) reach the runtimes through this registration.
from ..models import runtimes as _loader_support  # noqa: E402

_loader_support.register(RUNTIMES, source_kind, prepare_model)
