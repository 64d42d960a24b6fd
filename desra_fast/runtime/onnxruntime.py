"""ONNX Runtime runner: an exported ``.onnx`` model called like the torch module it replaces.

CPU: the ``onnxruntime`` package, CPU execution provider, inputs passed as numpy views of the
torch tensors (no copy for contiguous float32 inputs). CUDA: the ``onnxruntime-gpu`` package
(install one of the two packages, never both: they ship the same ``onnxruntime`` module),
CUDA execution provider (or ``providers=["TensorrtExecutionProvider", ...]``), IO binding on
the torch tensors' device memory so inputs and outputs never leave the GPU; the session runs on
the torch stream current when it was created.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

__all__ = ["OnnxRuntimeRunner", "ort_status"]

_BOTH_WARNED = False


def _ort_distributions() -> list:
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(name)
            found.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def ort_status(device) -> Tuple[bool, str]:
    """Whether ONNX Runtime can run on ``device`` (a torch.device), and why not."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False, ("the onnxruntime package is not installed: pip install 'desra_fast[onnx]' "
                       "(CPU) or 'desra_fast[gpu]' (NVIDIA GPUs)")
    import onnxruntime as ort

    if device.type == "cpu":
        return True, ""
    if device.type != "cuda":
        return False, f"ONNX Runtime runs here on 'cpu' or 'cuda' devices, not {device.type!r}"
    import torch

    if not torch.cuda.is_available():
        return False, f"no CUDA GPU is visible to torch {torch.__version__}"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, (f"this onnxruntime build ({ort.__version__}, providers "
                       f"{ort.get_available_providers()}) has no CUDAExecutionProvider: "
                       f"pip uninstall onnxruntime && pip install 'desra_fast[gpu]'")
    return True, ""


def _warn_if_both() -> None:
    global _BOTH_WARNED
    if not _BOTH_WARNED and len(_ort_distributions()) == 2:
        _BOTH_WARNED = True
        warnings.warn("both onnxruntime and onnxruntime-gpu are installed; they overwrite each "
                      "other's files. Keep one: pip uninstall -y onnxruntime onnxruntime-gpu && "
                      "pip install onnxruntime-gpu (GPU) or onnxruntime (CPU)", RuntimeWarning,
                      stacklevel=3)


def _session(path, device, *, threads: Optional[int] = None, providers: Optional[Sequence] = None,
             stream: Optional[int] = None):
    """An ``InferenceSession`` on ``path``; ``ValueError`` naming the file if it is unreadable."""
    import onnxruntime as ort

    _warn_if_both()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    dev_type = getattr(device, "type", device)
    if providers is None:
        if dev_type == "cuda":
            opts = {"device_id": int(getattr(device, "index", 0) or 0)}
            if stream is not None:
                opts["user_compute_stream"] = str(stream)
            providers = [("CUDAExecutionProvider", opts)]
        else:
            providers = ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=list(providers))
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: ONNX Runtime cannot load this file (truncated or corrupt, or "
                         f"not an ONNX model?): {msg}") from None


class OnnxRuntimeRunner:
    """Runs an ``.onnx`` file with ONNX Runtime on torch tensors.

    Args:
        path: the ``.onnx`` file (one input, one output).
        device: ``"cpu"`` or a CUDA device; inputs must be on it and outputs are returned on it.
        threads: intra-op threads on CPU (default: ``torch.get_num_threads()``).
        providers: explicit execution providers (e.g. ``["TensorrtExecutionProvider",
            "CUDAExecutionProvider"]``); default: CPU, or CUDA for a CUDA device. The session's
            first provider must be the one asked for, else the runner refuses to run.
        output_shape: ``f(input_shape) -> output_shape``; on CUDA the output is then allocated
            by torch and bound (else ONNX Runtime allocates it on the device and it is shared
            through DLPack).

    Call:
        ``runner(x)`` with ``x`` a (N, C, H, W) float tensor on ``device`` -> (N, C', H', W')
        float32 on ``device`` (an fp16/bf16 ``x`` is computed in the file's precision and the
        result cast back to ``x.dtype``).
    """

    runtime = "onnxruntime"

    def __init__(self, path, *, device="cpu", threads: Optional[int] = None,
                 providers: Optional[Sequence] = None,
                 output_shape: Optional[Callable[[tuple], tuple]] = None):
        import torch

        from .base import RuntimeUnavailableError
        from .base import as_device as _device

        self.path = Path(path)
        self.device = _device(device)
        ok, why = ort_status(self.device)
        if not ok:
            raise RuntimeUnavailableError(f"runtime='onnxruntime' cannot run on {self.device}: {why}")
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        stream = None
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            stream = torch.cuda.current_stream(self.device).cuda_stream
        self._stream = stream
        self.session = _session(self.path, self.device, threads=threads or torch.get_num_threads(),
                                providers=providers, stream=stream)
        wanted = (providers[0] if isinstance(providers[0], str) else providers[0][0]) if providers else (
            "CUDAExecutionProvider" if self.device.type == "cuda" else "CPUExecutionProvider")
        got = self.session.get_providers()
        if not got or got[0] != wanted:
            raise RuntimeUnavailableError(f"ONNX Runtime did not start {wanted} for {self.path} "
                                          f"(session providers: {got}); check the CUDA/cuDNN install")
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{self.path}: expected one input and one output, got "
                             f"{[i.name for i in ins]} -> {[o.name for o in outs]}")
        self.input_name, self.output_name = ins[0].name, outs[0].name
        shape = ins[0].shape
        self.in_channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None
        if ins[0].type != "tensor(float)" or outs[0].type != "tensor(float)":
            raise ValueError(f"{self.path}: expected float32 input and output, got {ins[0].type} -> {outs[0].type}")
        self.output_shape = output_shape
        self._lock = threading.Lock()   # IO binding objects are per call; the lock guards the CUDA path

    def __repr__(self) -> str:
        return f"OnnxRuntimeRunner({str(self.path)!r}, device={str(self.device)!r}, providers={self.session.get_providers()[:1]})"

    def _check(self, x):
        from .base import check_nchw_float

        check_nchw_float(x, "OnnxRuntimeRunner")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(f"OnnxRuntimeRunner: {self.path.name} takes {self.in_channels} channels, "
                             f"got input of shape {tuple(x.shape)}")
        if x.device.type != self.device.type or (self.device.type == "cuda" and x.device != self.device):
            raise ValueError(f"OnnxRuntimeRunner: input is on {x.device}, the session runs on {self.device}")

    def __call__(self, x):
        import torch

        self._check(x)
        dtype = x.dtype
        x = x.detach().to(torch.float32).contiguous()
        if self.device.type == "cpu":
            try:
                y = self.session.run([self.output_name], {self.input_name: x.numpy()})[0]
            except Exception as e:
                raise RuntimeError(f"ONNX Runtime failed on input {tuple(x.shape)}: {e}") from None
            out = torch.from_numpy(np.ascontiguousarray(y))
        else:
            out = self._run_cuda(x)
        return out if dtype == torch.float32 else out.to(dtype)

    def _run_cuda(self, x):
        import torch

        dev_id = self.device.index or 0
        current = torch.cuda.current_stream(self.device)
        if current.cuda_stream != self._stream:
            # The session computes on the stream it was created with: make the input ready there.
            current.synchronize()
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", dev_id, np.float32, tuple(x.shape), x.data_ptr())
        out = None
        if self.output_shape is not None:
            out = torch.empty(tuple(self.output_shape(tuple(x.shape))), dtype=torch.float32, device=self.device)
            binding.bind_output(self.output_name, "cuda", dev_id, np.float32, tuple(out.shape), out.data_ptr())
        else:
            binding.bind_output(self.output_name, "cuda", dev_id)
        with self._lock:
            try:
                self.session.run_with_iobinding(binding)
            except Exception as e:
                raise RuntimeError(f"ONNX Runtime (CUDA) failed on input {tuple(x.shape)}: {e}") from None
        if out is None:
            out = torch.from_dlpack(binding.get_outputs()[0])
        return out
