"""The runtime switch: auto resolution, explicit runtimes that cannot run, SegFormer through
ONNX Runtime against torch, the TensorRT engine cache key (pure), load paths."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx", reason="needs the onnx package (requirements-dev.txt)")
pytest.importorskip("onnxruntime", reason="needs onnxruntime (requirements-dev.txt)")

from desra_fast.export import to_onnx  # noqa: E402
from desra_fast.models import RRDBNet, load_sr  # noqa: E402
from desra_fast.runtime import (RuntimeUnavailableError, read_onnx_metadata, resolve_runtime,  # noqa: E402
                                runtime_status)
from desra_fast.runtime.tensorrt import engine_cache_key  # noqa: E402

from sr_fixtures import lr_crop  # noqa: E402


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A minimal valid ONNX SR file with desra_fast's metadata (nearest x4 upsampling)."""
    import json

    import onnx
    from onnx import TensorProto, helper

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 4, 4])
    node = helper.make_node("Resize", ["input", "", "scales"], ["output"], mode="nearest")
    graph = helper.make_graph([node], "up4", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, None, None])],
                              initializer=[scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    meta = dict(kind="sr", info=dict(arch="Nearest", scale=4, pre_pad=0, pad_mode="reflect"), precision="fp32",
                input_name="input", output_name="output", in_channels=3)
    model.metadata_props.add(key="desra_fast.model", value=json.dumps(meta))
    path = tmp_path_factory.mktemp("rt") / "up4.onnx"
    onnx.save(model, str(path))
    return path


def test_handmade_file_runs(tiny_onnx):
    img = (np.random.default_rng(0).random((5, 7, 3)) * 255).astype(np.uint8)
    out = load_sr(tiny_onnx).upscale(img)
    np.testing.assert_array_equal(out, img.repeat(4, 0).repeat(4, 1))


def test_auto_resolution_on_cpu():
    # auto on CPU: OpenVINO fp32 when installed (tests/test_runtime_openvino.py), else as below
    ov = runtime_status("openvino", "cpu")[0]
    assert resolve_runtime("auto", "cpu", source="onnx") == ("openvino" if ov else "onnxruntime")
    assert resolve_runtime("auto", "cpu", source="torch") == ("openvino" if ov else "torch")
    assert resolve_runtime("auto", "cpu", source="onnx", precision="fp16") == "onnxruntime"
    assert resolve_runtime("auto", "cpu", source="torch", precision="bf16") == "torch"
    assert resolve_runtime("onnxruntime", "cpu", source="torch") == "onnxruntime"
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("tflite", "cpu")
    with pytest.raises(ValueError, match="cannot run with runtime='torch'"):
        resolve_runtime("torch", "cpu", source="onnx")
    with pytest.raises(ValueError, match="only with runtime='tensorrt'"):
        resolve_runtime("onnxruntime", "cpu", source="engine")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without a GPU")
def test_explicit_tensorrt_without_gpu_raises(tiny_onnx):
    ok, why = runtime_status("tensorrt", "cpu")
    assert not ok and "NVIDIA GPU" in why
    with pytest.raises(RuntimeUnavailableError, match="runtime='tensorrt' cannot run"):
        load_sr(tiny_onnx, runtime="tensorrt")
    with pytest.raises(RuntimeUnavailableError, match="NVIDIA GPUs only"):
        load_sr(RRDBNet(scale=4, num_block=1, num_feat=8, num_grow_ch=4), scale=4, runtime="tensorrt", device="cpu")
    ok, why = runtime_status("onnxruntime", "cuda")
    assert not ok and "no CUDA GPU" in why
    with pytest.raises(RuntimeError, match="CUDA"):
        load_sr(tiny_onnx, runtime="onnxruntime", device="cuda")


def test_explicit_onnxruntime_missing_raises(tiny_onnx, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "openvino") else real(name, *a))
    with pytest.raises(RuntimeUnavailableError, match="onnxruntime package is not installed"):
        load_sr(tiny_onnx, runtime="onnxruntime")
    with pytest.raises(RuntimeUnavailableError, match="not installed"):
        load_sr(tiny_onnx)          # auto on CPU for an .onnx without OpenVINO is ONNX Runtime: nothing else can run it


def test_engine_cache_key_covers_every_field():
    base = ("a" * 64, "10.13.0", "NVIDIA H100", "9.0", "fp16", [(1, 3, 8, 8), (1, 3, 128, 128), (4, 3, 512, 512)])
    k = engine_cache_key(*base)
    assert k == engine_cache_key(*base) and len(k) == 24
    variants = [("b" * 64,) + base[1:], base[:1] + ("11.4.0",) + base[2:], base[:2] + ("NVIDIA A100",) + base[3:],
                base[:3] + ("8.0",) + base[4:], base[:4] + ("fp32",) + base[5:],
                base[:5] + ([(1, 3, 8, 8), (1, 3, 128, 128), (4, 3, 1024, 1024)],)]
    assert len({engine_cache_key(*v) for v in variants} | {k}) == len(variants) + 1


def test_engine_file_needs_its_description(tmp_path):
    from desra_fast.runtime.tensorrt import read_engine_metadata

    eng = tmp_path / "m.engine"
    eng.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="m.engine.json"):
        read_engine_metadata(eng)


# ---------------------------------------------------------------- SegFormer
@pytest.fixture(scope="module")
def segformer_pair(tmp_path_factory):
    from desra_fast.models.segformer import SegFormer, SegFormerConfig
    from desra_fast.models.segmenter import Segmenter

    from segformer_refs import perturb_

    cfg = SegFormerConfig(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8),
                          head="mmseg", width=32, num_classes=150)
    torch.manual_seed(3)           # a random net whose labels vary over the test image
    net = SegFormer(cfg).eval()
    perturb_(net, seed=5)
    seg = Segmenter(net, info=dict(variant="custom", head="mmseg", width=32, num_classes=150,
                                   config=cfg.to_dict()), scale=(96, 64))
    path = to_onnx(seg, tmp_path_factory.mktemp("seg") / "seg.onnx")
    return seg, path


def test_segformer_onnxruntime_logits_and_labels(segformer_pair):
    from desra_fast.models.segmenter import load_segmenter

    seg, path = segformer_pair
    meta = read_onnx_metadata(path)
    assert meta["kind"] == "segmenter" and meta["input_name"] == "pixel_values"
    ort_seg = load_segmenter(path, runtime="onnxruntime")
    assert ort_seg.info["runtime"] == "onnxruntime" and ort_seg.scale == (96, 64)
    assert ort_seg.preprocess == "mmseg" and ort_seg.mean.flatten().tolist() == seg.mean.flatten().tolist()
    x = torch.randn(3, 3, 45, 61)                # odd sizes, batch 3, unseen at export
    with torch.no_grad():
        ref = seg.module(x)
    got = ort_seg.forward(x)
    assert got.shape == ref.shape == (3, 150, 12, 16)
    assert float((got - ref).abs().max()) <= 1e-4
    img = lr_crop("rocket", size=57, y=10, x=10)[:, :51]
    a, b = seg.segment(img), ort_seg.segment(img)
    assert a.shape == (57, 51) and len(np.unique(a)) > 1
    np.testing.assert_array_equal(a, b)


def test_load_segmenter_onnx_refuses_an_sr_file(tiny_onnx, segformer_pair):
    from desra_fast.models.segmenter import load_segmenter

    with pytest.raises(ValueError, match="not a segmenter"):
        load_segmenter(tiny_onnx)
    with pytest.raises(ValueError, match="not a super-resolution model"):
        load_sr(segformer_pair[1])
