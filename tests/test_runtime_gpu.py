"""TensorRT and ONNX Runtime CUDA-EP runners on an NVIDIA GPU (skipped without one, saying why).

References: the same torch module run by torch on the GPU (fp32 engines without TF32 within
1e-4; fp16 engines within 2e-2 on [0, 1] outputs), and the fp32 engine for the overflow fallback.
"""
from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx", reason="needs the onnx package (requirements-dev.txt)")

if not torch.cuda.is_available():
    pytest.skip(f"no CUDA GPU on this machine (torch {torch.__version__}): the TensorRT and CUDA "
                f"execution-provider tests need an NVIDIA GPU", allow_module_level=True)

from desra_fast.export import to_onnx  # noqa: E402
from desra_fast.models import RRDBNet, load_sr  # noqa: E402

needs_trt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                               reason="the tensorrt package is not installed (pip install 'desra_fast[gpu]')")


def _ort_cuda() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


needs_ort_cuda = pytest.mark.skipif(not _ort_cuda(), reason="onnxruntime-gpu (CUDAExecutionProvider) is not installed")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    torch.manual_seed(0)
    net = RRDBNet(scale=4, num_block=2, num_feat=16, num_grow_ch=8)
    model = load_sr(net, scale=4, device="cuda")
    d = tmp_path_factory.mktemp("gpu")
    return model, to_onnx(model, d / "small.onnx"), to_onnx(model, d / "small16.onnx", precision="fp16")


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_torch_on_the_current_stream(small, precision, tmp_path, monkeypatch):
    from desra_fast.runtime.tensorrt import TensorRTRunner, engine_for, weak_typing

    monkeypatch.setenv("DESRA_FAST_CACHE", str(tmp_path))
    model, p32, p16 = small
    src = p32 if precision == "fp32" or weak_typing() else p16
    engine = engine_for(src, device="cuda", precision=precision,
                        min_shape=(1, 3, 8, 8), opt_shape=(1, 3, 64, 64), max_shape=(3, 3, 96, 96))
    stamp = engine.stat().st_mtime_ns
    assert engine_for(src, device="cuda", precision=precision, min_shape=(1, 3, 8, 8),
                      opt_shape=(1, 3, 64, 64), max_shape=(3, 3, 96, 96)) == engine    # cache hit
    assert engine.stat().st_mtime_ns == stamp
    runner = TensorRTRunner(engine, device="cuda", fallback_onnx=p32)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x = torch.rand(3, 3, 37, 21, device="cuda")
        y = runner(x)
        with torch.no_grad():
            ref = model.module(x)
    stream.synchronize()
    assert y.device.type == "cuda" and y.shape == ref.shape
    tol = 1e-4 if precision == "fp32" else 2e-2
    assert float((y - ref).abs().max()) <= tol
    with pytest.raises(ValueError, match="outside the engine's profile"):
        runner(torch.rand(1, 3, 128, 128, device="cuda"))


@needs_trt
def test_load_sr_tensorrt_end_to_end(small, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("DESRA_FAST_CACHE", str(tmp_path))
    model, p32, _ = small
    trt_model = load_sr(p32, device="cuda", runtime="tensorrt")
    assert trt_model.info["runtime"] == "tensorrt"
    assert load_sr(p32, device="cuda").info["runtime"] == "tensorrt"      # auto on CUDA
    img = (np.random.default_rng(0).random((23, 31, 3)) * 255).astype(np.uint8)
    a, b = model.upscale(img), trt_model.upscale(img)
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


@needs_trt
def test_fp16_overflow_recomputed_in_fp32(tmp_path, monkeypatch):
    """A network whose activations exceed fp16's range: the fp16 engine gives inf, the runner
    recomputes those samples on the fp32 engine."""
    from desra_fast.runtime.tensorrt import TensorRTRunner, engine_for

    monkeypatch.setenv("DESRA_FAST_CACHE", str(tmp_path))

    class Overflow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            with torch.no_grad():
                self.conv.weight.fill_(0).add_(torch.eye(3)[:, :, None, None] * 3e4)
                self.conv.bias.zero_()

        def forward(self, x):
            return self.conv(x) * 1e-4 * self.conv(x) * 1e-4    # ~ (3e4 x)^2 * 1e-8: fp16 overflows inside

    net = Overflow().cuda().eval()
    p32 = to_onnx(net, tmp_path / "of.onnx")
    p16 = to_onnx(net, tmp_path / "of16.onnx", precision="fp16")     # fp16 types in the graph itself
    prof = dict(min_shape=(1, 3, 4, 4), opt_shape=(2, 3, 8, 8), max_shape=(2, 3, 16, 16))
    runner = TensorRTRunner(engine_for(p16, device="cuda", precision="fp16", **prof), device="cuda", fallback_onnx=p32)
    x = torch.full((2, 3, 8, 8), 0.01, device="cuda")
    x[1] = 1.0                      # sample 1: 3 * 3e4 = 9e4 > 65504 overflows fp16 (sample 0: 9e-4)
    y = runner(x)
    with torch.no_grad():
        ref = net(x)
    assert torch.isfinite(y).all()
    assert runner.fallbacks >= 1
    assert float(((y - ref).abs() / ref.abs().clamp_min(1e-6)).max()) <= 1e-2


@needs_ort_cuda
def test_onnxruntime_cuda_io_binding(small):
    from desra_fast.runtime.onnxruntime import OnnxRuntimeRunner

    model, p32, _ = small
    for shape_fn in (None, lambda s: (s[0], 3, 4 * s[2], 4 * s[3])):
        runner = OnnxRuntimeRunner(p32, device="cuda", output_shape=shape_fn)
        x = torch.rand(2, 3, 19, 27, device="cuda")
        y = runner(x)
        with torch.no_grad():
            ref = model.module(x)
        assert y.device.type == "cuda"
        assert float((y - ref).abs().max()) <= 1e-3     # cuDNN may pick TF32 convolutions
