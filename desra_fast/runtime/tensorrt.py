"""TensorRT engines built from exported ONNX files, run on torch CUDA tensors (NVIDIA GPUs only).

Build (:func:`build_engine`, :func:`engine_for`): the ``tensorrt`` Python API — ``OnnxParser``
on the self-contained ``.onnx`` of :func:`desra_fast.export.to_onnx`, one optimisation profile
(min/opt/max input shape) for the dynamic batch/height/width, a timing cache kept on disk, and
the precision:

- TensorRT 10 (weak typing available): ``fp16`` / ``bf16`` set the builder flag on an fp32
  graph (TensorRT picks reduced-precision kernels where it may); ``fp32`` also turns TF32 off.
- TensorRT 11+ (strongly typed networks only): the precision is the graph's own, so an fp16
  engine is built from an ``.onnx`` exported with ``precision="fp16"`` (``desra-fast export
  --fp16`` and ``load_sr(..., runtime="tensorrt", precision="fp16")`` do this).

Engines are cached on disk (``desra_fast.utils.cache_dir("tensorrt")``) under a key made
of the ONNX file's SHA-256, the TensorRT version, the GPU name and compute capability, the
precision and the profile; a JSON sidecar ``<engine>.json`` holds the model description.

Run (:class:`TensorRTRunner`): ``set_input_shape`` + ``set_tensor_address`` on the torch
tensors' memory + ``execute_async_v3`` on the current torch CUDA stream; no host copies and no
synchronisation, except that a reduced-precision engine checks its output: samples whose output
holds NaN/inf are computed again on an fp32 engine (``runner.fallbacks`` counts them).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Optional, Sequence, Tuple

from ..utils import write_bytes_atomic

__all__ = ["TensorRTRunner", "build_engine", "engine_for", "engine_cache_key", "trt_status",
           "read_engine_metadata", "weak_typing", "default_profile"]

PRECISIONS = ("fp32", "fp16", "bf16")


def trt_status(device) -> Tuple[bool, str]:
    """Whether TensorRT can run on ``device`` (a torch.device), and why not."""
    import torch

    if device.type != "cuda":
        return False, f"TensorRT runs on NVIDIA GPUs only (device {str(device)!r})"
    if not torch.cuda.is_available():
        return False, (f"no CUDA GPU is visible to torch {torch.__version__} (TensorRT runs on "
                       f"NVIDIA GPUs only)")
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt package is not installed: pip install 'desra_fast[gpu]'"
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # missing CUDA libraries etc.
        return False, f"the tensorrt package does not import: {e}"
    return True, ""


def _trt():
    import tensorrt as trt

    return trt


def weak_typing() -> bool:
    """True when this TensorRT has the FP16/BF16 builder flags (10.x); 11+ is strongly typed only."""
    return hasattr(_trt().BuilderFlag, "FP16")


def _logger():
    trt = _trt()
    global _LOGGER
    try:
        return _LOGGER
    except NameError:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
        return _LOGGER


def _gpu_id(device) -> Tuple[str, str]:
    import torch

    props = torch.cuda.get_device_properties(device)
    return props.name, f"{props.major}.{props.minor}"


def default_profile(meta: dict, in_channels: int) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
    """(min, opt, max) input shapes for a model kind: SR tiles up to 512 px LR (batch 4),
    segmenters up to 2048 px (the long side of the authors' resize scale; batch 4, the
    Segmenter's default batch size)."""
    c = in_channels
    if meta.get("kind") == "segmenter":
        return (1, c, 32, 32), (1, c, 640, 864), (4, c, 2048, 2048)
    return (1, c, 8, 8), (1, c, 128, 128), (4, c, 512, 512)


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str,
                     precision: str, profile: Sequence[Sequence[int]]) -> str:
    """The engine cache key: every input that makes an engine differ (hex, 24 chars)."""
    text = json.dumps([onnx_sha256, trt_version, gpu_name, compute_capability, precision,
                       [list(map(int, s)) for s in profile]])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def build_engine(onnx_path, engine_path, *, precision: str = "fp32", min_shape=None, opt_shape=None,
                 max_shape=None, device="cuda", timing_cache=None, workspace_gib: Optional[float] = None,
                 meta: Optional[dict] = None, fallback_onnx=None) -> Path:
    """Build a TensorRT engine from an ``.onnx`` file and write it (plus its ``.json`` sidecar).

    Args:
        onnx_path: self-contained ONNX file (from :func:`desra_fast.export.to_onnx`).
        engine_path: where the serialized engine goes (written atomically).
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (see the module docstring).
        min_shape, opt_shape, max_shape: the optimisation profile of the input (N, C, H, W);
            defaults from :func:`default_profile`.
        device: the CUDA device to build for.
        timing_cache: file of the timing cache (read if present, updated after the build).
        workspace_gib: builder workspace limit (default: TensorRT's).
        meta: the ONNX file's :func:`~desra_fast.runtime.read_onnx_metadata`.
        fallback_onnx: the fp32 ONNX a reduced-precision engine recomputes overflowing samples
            with (recorded in the sidecar; default: ``onnx_path`` itself, upcast if needed).

    Raises:
        RuntimeUnavailableError: no GPU / no tensorrt; ValueError: a precision this TensorRT
        cannot build from this graph, a bad profile, a graph the parser rejects (its errors listed).
    """
    from ..models.checkpoint import read_onnx_metadata
    from .base import RuntimeUnavailableError
    from .base import as_device as _device

    dev = _device(device)
    ok, why = trt_status(dev)
    if not ok:
        raise RuntimeUnavailableError(f"runtime='tensorrt' cannot run on {dev}: {why}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    trt = _trt()
    import torch

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = meta or read_onnx_metadata(onnx_path)
    graph_precision = meta.get("precision", "fp32")
    flags = []
    if precision != graph_precision:
        if graph_precision == "fp32" and weak_typing():
            flags.append(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        else:
            raise ValueError(
                f"{onnx_path.name} computes in {graph_precision}; TensorRT {trt.__version__} builds "
                f"strongly typed networks, so a {precision} engine needs an ONNX exported with "
                f"precision={precision!r} (desra_fast.export.to_onnx(..., precision={precision!r}) or "
                f"`desra-fast export --format tensorrt --fp16`)")
    cin = int(meta.get("in_channels", 3))
    dmin, dopt, dmax = default_profile(meta, cin)
    prof = [tuple(int(v) for v in (s if s is not None else d)) for s, d in
            ((min_shape, dmin), (opt_shape, dopt), (max_shape, dmax))]
    for s in prof:
        if len(s) != 4 or s[1] != cin or min(s) < 1:
            raise ValueError(f"TensorRT profile shapes must be (N, {cin}, H, W), got {prof}")
    if not all(a <= b <= c for a, b, c in zip(*prof)):
        raise ValueError(f"TensorRT profile must satisfy min <= opt <= max per dimension, got {prof}")

    with torch.cuda.device(dev):
        builder = trt.Builder(_logger())
        net_flags = 0
        if not flags and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(net_flags)
        parser = trt.OnnxParser(network, _logger())
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ValueError(f"{onnx_path}: the TensorRT ONNX parser rejected the graph: " + "; ".join(errors))
        config = builder.create_builder_config()
        for f in flags:
            config.set_flag(f)
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if workspace_gib:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        profile = builder.create_optimization_profile()
        profile.set_shape(network.get_input(0).name, *prof)
        config.add_optimization_profile(profile)
        cache_file = Path(timing_cache) if timing_cache else None
        blob = cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=True)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} ({precision}, "
                               f"profile {prof}); see the TensorRT log above")
        if cache_file is not None:
            write_bytes_atomic(cache_file, bytes(memoryview(config.get_timing_cache().serialize())))
    gpu, cc = _gpu_id(dev)
    side = dict(meta, engine_precision=precision, profile=[list(s) for s in prof],
                tensorrt_version=trt.__version__, gpu=gpu, compute_capability=cc,
                onnx=str(onnx_path.resolve()),
                fallback_onnx=str(Path(fallback_onnx).resolve()) if fallback_onnx else None)
    write_bytes_atomic(engine_path, bytes(memoryview(serialized)))
    write_bytes_atomic(_sidecar(engine_path), json.dumps(side, sort_keys=True, indent=1).encode())
    return engine_path


def _sidecar(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def read_engine_metadata(engine_path) -> dict:
    """The ``<engine>.json`` sidecar written by :func:`build_engine` (model description, profile,
    precision, TensorRT version, GPU)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise FileNotFoundError(f"{engine_path}: no such TensorRT engine file")
    side = _sidecar(engine_path)
    if not side.is_file():
        raise ValueError(f"{engine_path}: no {side.name} beside it; engines built outside desra_fast "
                         f"carry no pre-processing description: build it with `desra-fast export "
                         f"--format tensorrt` or load the .onnx with runtime='tensorrt'")
    try:
        meta = json.loads(side.read_text("utf-8"))
    except ValueError as e:
        raise ValueError(f"{side}: corrupt engine description ({e})") from None
    if not isinstance(meta, dict) or "kind" not in meta or "info" not in meta:
        raise ValueError(f"{side}: engine description lacks 'kind' / 'info'")
    return meta


def engine_for(onnx_path, *, device="cuda", precision: Optional[str] = None, meta: Optional[dict] = None,
               min_shape=None, opt_shape=None, max_shape=None, cache: Optional[os.PathLike] = None,
               workspace_gib: Optional[float] = None) -> Path:
    """The cached engine for an ``.onnx`` file, built on first use (see :func:`engine_cache_key`).

    Args:
        precision: engine precision; default the graph's own.
        cache: cache folder (default ``cache_dir("tensorrt")``).
        Others as :func:`build_engine`.
    """
    from ..utils import cache_dir, file_sha256
    from ..models.checkpoint import read_onnx_metadata
    from .base import RuntimeUnavailableError
    from .base import as_device as _device

    dev = _device(device)
    ok, why = trt_status(dev)
    if not ok:
        raise RuntimeUnavailableError(f"runtime='tensorrt' cannot run on {dev}: {why}")
    trt = _trt()
    meta = meta or read_onnx_metadata(onnx_path)
    precision = precision or meta.get("precision", "fp32")
    cin = int(meta.get("in_channels", 3))
    d = default_profile(meta, cin)
    prof = [tuple(s) if s is not None else p for s, p in zip((min_shape, opt_shape, max_shape), d)]
    gpu, cc = _gpu_id(dev)
    key = engine_cache_key(file_sha256(onnx_path), trt.__version__, gpu, cc, precision, prof)
    folder = Path(cache) if cache is not None else cache_dir("tensorrt")
    engine = folder / f"{Path(onnx_path).stem}-{precision}-{key}.engine"
    if engine.is_file() and _sidecar(engine).is_file():
        return engine
    timing = folder / f"timing-{trt.__version__}-{gpu.replace(' ', '_')}-{cc}.cache"
    return build_engine(onnx_path, engine, precision=precision, min_shape=prof[0], opt_shape=prof[1],
                        max_shape=prof[2], device=dev, timing_cache=timing, workspace_gib=workspace_gib,
                        meta=meta)


class TensorRTRunner:
    """Runs a TensorRT engine on torch CUDA tensors, on the current torch stream.

    Args:
        engine_path: a serialized engine with its ``.json`` sidecar (:func:`build_engine`).
        device: the CUDA device the engine runs on (default: the current one).
        fallback_onnx: fp32 ``.onnx`` for the overflow fallback of a reduced-precision engine
            (default: the sidecar's source ONNX when it computes in fp32, else an fp32 copy made
            with :func:`desra_fast.export.upcast_onnx`).

    Call:
        ``runner(x)``: ``x`` (N, C, H, W) float CUDA tensor on ``device`` within the engine's
        profile -> (N, C', H', W') float32 CUDA tensor (``x.dtype`` if ``x`` is fp16/bf16).
        Thread-safe (one execution context, used under a lock).
    """

    runtime = "tensorrt"

    def __init__(self, engine_path, *, device=None, fallback_onnx=None):
        import torch

        from .base import RuntimeUnavailableError
        from .base import as_device as _device

        dev = _device(device if device is not None else "cuda")
        ok, why = trt_status(dev)
        if not ok:
            raise RuntimeUnavailableError(f"runtime='tensorrt' cannot run on {dev}: {why}")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        trt = _trt()
        self.device = dev
        self.path = Path(engine_path)
        self.meta = read_engine_metadata(self.path)
        self.precision = self.meta.get("engine_precision", "fp32")
        gpu, cc = _gpu_id(dev)
        if self.meta.get("tensorrt_version") not in (None, trt.__version__) or self.meta.get("gpu") not in (None, gpu):
            raise ValueError(f"{self.path}: built with TensorRT {self.meta.get('tensorrt_version')} for "
                             f"{self.meta.get('gpu')}; this is TensorRT {trt.__version__} on {gpu}: rebuild it")
        with torch.cuda.device(dev):
            self._runtime = trt.Runtime(_logger())
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise ValueError(f"{self.path}: TensorRT could not deserialize this engine (corrupt, or "
                                 f"built by another TensorRT version / GPU)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{self.path}: expected one input and one output tensor, got {ins} -> {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.profile = tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self._dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in (self.input_name, self.output_name)}
        self._fallback_onnx = fallback_onnx
        self._fallback = None
        self.fallbacks = 0     # samples recomputed in fp32 because the reduced-precision output overflowed
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TensorRTRunner({str(self.path)!r}, {self.precision}, device={str(self.device)!r})"

    def _check(self, x):
        import torch

        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"TensorRTRunner: expected a float (N, C, H, W) torch tensor, got "
                             f"{type(x).__name__} {getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}")
        if x.device != self.device:
            raise ValueError(f"TensorRTRunner: input is on {x.device}, the engine runs on {self.device}")
        lo, _, hi = self.profile
        if any(not a <= s <= b for a, s, b in zip(lo, x.shape, hi)):
            raise ValueError(f"TensorRTRunner: input shape {tuple(x.shape)} is outside the engine's profile "
                             f"min {tuple(lo)} .. max {tuple(hi)}: tile the image (upscale(tile=...)) or "
                             f"rebuild with a larger --max-shape")

    def _execute(self, x):
        import torch

        x = x.detach().to(self._dtypes[self.input_name]).contiguous()
        stream = torch.cuda.current_stream(self.device)
        with self._lock:
            if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
                raise ValueError(f"TensorRTRunner: the engine refused input shape {tuple(x.shape)}")
            shape = tuple(self.context.get_tensor_shape(self.output_name))
            out = torch.empty(shape, dtype=self._dtypes[self.output_name], device=self.device)
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed on input {tuple(x.shape)}")
            # x's memory is only reused by work queued after this on the same stream (torch's
            # caching allocator is stream-ordered), so no synchronisation is needed here.
        return out

    def __call__(self, x):
        import torch

        self._check(x)
        dtype = x.dtype
        out = self._execute(x)
        if self.precision != "fp32":
            bad = ~torch.isfinite(out).flatten(1).all(1)
            if bool(bad.any()):
                idx = bad.nonzero().flatten()
                out = out.float()
                out[idx] = self._fp32()(x[idx]).to(out.dtype)
                self.fallbacks += int(idx.numel())
        out = out.float() if out.dtype != torch.float32 else out
        return out if dtype == torch.float32 else out.to(dtype)

    def _fp32(self):
        """The fp32 runner the overflowing samples of a reduced-precision engine are re-run on."""
        with self._lock:
            if self._fallback is None:
                src = self._fallback_onnx or self.meta.get("fallback_onnx") or self.meta.get("onnx")
                if not src or not Path(src).is_file():
                    raise FloatingPointError(
                        f"{self.path}: the {self.precision} engine produced NaN/inf and no fp32 ONNX is "
                        f"available to recompute it (the source {src!r} is gone); rebuild the engine")
                from ..models.checkpoint import read_onnx_metadata

                meta = read_onnx_metadata(src)
                if meta.get("precision", "fp32") != "fp32":
                    from ..export import upcast_onnx

                    up = Path(src).with_name(Path(src).stem + ".fp32.onnx")
                    src = up if up.is_file() else upcast_onnx(src, up)
                    meta = read_onnx_metadata(src)
                lo, opt, hi = self.profile
                engine = engine_for(src, device=self.device, precision="fp32", meta=meta,
                                    min_shape=lo, opt_shape=opt, max_shape=hi)
                self._fallback = TensorRTRunner(engine, device=self.device)
            return self._fallback


def _torch_dtype(trt_dtype):
    import torch

    trt = _trt()
    table = {trt.float32: torch.float32, trt.float16: torch.float16}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if trt_dtype not in table:
        raise ValueError(f"TensorRTRunner: unsupported I/O tensor type {trt_dtype}")
    return table[trt_dtype]
