"""ONNX export: ONNX Runtime (an independent runtime) against torch on the real converted weights.

The 16.7M-parameter Real-ESRGAN x4plus is exported once per session (~45 s on 2 cores); every
check then runs small real LR crops of sizes the export never saw (it traced a 2x3x32x32 input).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx", reason="ONNX export tests need the onnx package (requirements-dev.txt)")
pytest.importorskip("onnxruntime", reason="ONNX Runtime tests need onnxruntime (requirements-dev.txt)")

from desra_fast.export import to_onnx, upcast_onnx  # noqa: E402
from desra_fast.models import RRDBNet, load_sr  # noqa: E402
from desra_fast.runtime import read_onnx_metadata  # noqa: E402
from desra_fast.runtime.onnxruntime import OnnxRuntimeRunner  # noqa: E402

from sr_fixtures import lr_crop  # noqa: E402


def _packaged(name):
    from desra_fast.models.zoo import packaged_model

    try:
        return packaged_model(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def x4plus(tmp_path_factory):
    """(torch SRModel, exported .onnx path) of the real Real-ESRGAN x4plus."""
    model = load_sr(_packaged("realesrgan-x4plus"))
    path = to_onnx(model, tmp_path_factory.mktemp("onnx") / "x4plus.onnx")
    return model, path


@pytest.fixture(scope="session")
def srmd(tmp_path_factory):
    model = load_sr(_packaged("srmd-x4"))
    path = to_onnx(model, tmp_path_factory.mktemp("onnx") / "srmd_x4.onnx")
    return model, path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A small random RRDBNet x4 (real module, random weights) and its export."""
    torch.manual_seed(0)
    model = load_sr(RRDBNet(scale=4, num_block=1, num_feat=8, num_grow_ch=4), scale=4)
    return model, to_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def _to_tensor(img):
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


# ---------------------------------------------------------------- real weights vs torch
@pytest.mark.parametrize("size", [(27, 31)])        # more unseen sizes: test_dynamic_batch_and_odd_sizes
def test_x4plus_onnxruntime_matches_torch(x4plus, size):
    model, path = x4plus
    ort_model = load_sr(path, runtime="onnxruntime")
    assert ort_model.info["runtime"] == "onnxruntime" and ort_model.module is None
    img = lr_crop("motorcycle", size=max(size), y=30, x=50)[:size[0], :size[1]]
    x = _to_tensor(img)
    ref, got = model.upscale(x), ort_model.upscale(x)
    assert got.shape == ref.shape == (1, 3, 4 * size[0], 4 * size[1])
    assert float((got - ref).abs().max()) <= 1e-4
    a, b = model.upscale(img), ort_model.upscale(img)
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_srmd_onnxruntime_matches_torch(srmd):
    model, path = srmd
    ort_model = load_sr(path)
    img = lr_crop("rocket", size=29, y=20, x=33)[:, :23]
    x = _to_tensor(img)
    assert float((ort_model.upscale(x) - model.upscale(x)).abs().max()) <= 1e-4
    a, b = model.upscale(img), ort_model.upscale(img)
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1
    # the degradation / noise channels are inside the graph: it takes 3-channel RGB
    assert read_onnx_metadata(path)["in_channels"] == 3


def test_dynamic_batch_and_odd_sizes_one_file(x4plus):
    model, path = x4plus
    runner = OnnxRuntimeRunner(path)
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 3, 13, 9), (3, 3, 11, 17)]:
        x = torch.rand(shape, generator=g)
        with torch.no_grad():
            ref = model.module(x)
        y = runner(x)
        assert y.shape == ref.shape == (shape[0], 3, 4 * shape[2], 4 * shape[3])
        assert float((y - ref).abs().max()) <= 1e-4


def test_masks_from_onnxruntime_pairs_equal_torch_pairs(x4plus, srmd):
    from desra_fast import detect

    img = lr_crop("motorcycle", size=33, y=70, x=90)
    pairs = {}
    for name, (gan_m, gan_p), (mse_m, mse_p) in [("torch", (x4plus[0], None), (srmd[0], None)),
                                                 ("ort", (None, x4plus[1]), (None, srmd[1]))]:
        gan = (gan_m or load_sr(gan_p)).upscale(img)
        mse = (mse_m or load_sr(mse_p)).upscale(img)
        pairs[name] = (gan, mse)
    masks = {k: detect(g, m, area_threshold=40) for k, (g, m) in pairs.items()}
    assert masks["torch"].shape == (132, 132)
    assert masks["torch"].any() or not masks["torch"].all()   # a real decision, not a constant
    np.testing.assert_array_equal(masks["ort"], masks["torch"])


# ---------------------------------------------------------------- graph and metadata
def test_checker_names_and_dims(x4plus):
    _, path = x4plus
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "output")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    odims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert odims[0] == "batch" and "height" in odims[2] and "width" in odims[3]
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)


def test_metadata_round_trip(x4plus):
    model, path = x4plus
    meta = read_onnx_metadata(path)
    assert meta["kind"] == "sr" and meta["precision"] == "fp32"
    for key in ("arch", "scale", "pre_pad", "pad_mode", "mod", "source_sha256", "num_block", "num_feat"):
        if key in model.info:
            assert meta["info"][key] == model.info[key], key
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert props["architecture"] == "RRDBNet" and json.loads(props["scale"]) == 4
    assert props["source_sha256"] == model.info["source_sha256"] and len(props["source_sha256"]) == 64
    assert json.loads(props["pre_pad"]) == 10 and props["pad_mode"] == "reflect"
    assert props["desra_fast_version"]
    loaded = load_sr(path)
    assert loaded.scale == 4 and loaded.info["pre_pad"] == 10 and loaded.info["pad_mode"] == "reflect"


@pytest.mark.parametrize("scale", [1, 2])      # x4: the tiny fixture and x4plus
def test_rrdbnet_scales(tmp_path, scale):
    torch.manual_seed(scale)
    model = load_sr(RRDBNet(scale=scale, num_block=1, num_feat=8, num_grow_ch=4), scale=scale)
    path = to_onnx(model, tmp_path / f"x{scale}.onnx")
    loaded = load_sr(path)
    img = (np.random.default_rng(scale).random((13, 19, 3)) * 255).astype(np.uint8)  # odd: mod-padding
    a, b = model.upscale(img), loaded.upscale(img)
    assert a.shape == b.shape == (13 * scale, 19 * scale, 3)
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1
    x = torch.rand(3, 3, 8 * 4, 12 * 4)
    with torch.no_grad():
        assert float((OnnxRuntimeRunner(path)(x) - model.module(x)).abs().max()) <= 1e-5


def test_fp16_export_and_upcast(tmp_path, tiny):
    model, _ = tiny
    p16 = to_onnx(model, tmp_path / "tiny16.onnx", precision="fp16")
    proto = onnx.load(str(p16))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT   # fp32 I/O
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert read_onnx_metadata(p16)["precision"] == "fp16"
    x = torch.rand(2, 3, 15, 11)
    with torch.no_grad():
        ref = model.module(x)
        rounded = RRDBNet(scale=4, num_block=1, num_feat=8, num_grow_ch=4).eval()
        rounded.load_state_dict({k: v.half().float() for k, v in model.module.state_dict().items()})
        ref_rounded = rounded(x)
    assert float((OnnxRuntimeRunner(p16)(x) - ref).abs().max()) <= 1e-2
    up = upcast_onnx(p16, tmp_path / "tiny16up.onnx")
    proto_up = onnx.load(str(up))
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto_up.graph.initializer)
    assert read_onnx_metadata(up)["precision"] == "fp32"
    # fp32 compute on the fp16-rounded weights
    assert float((OnnxRuntimeRunner(up)(x) - ref_rounded).abs().max()) <= 1e-5


def test_load_sr_runtime_onnxruntime_exports_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DESRA_FAST_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(3)
    net = RRDBNet(scale=2, num_block=1, num_feat=8, num_grow_ch=4)
    m = load_sr(net, scale=2, runtime="onnxruntime")
    assert m.info["runtime"] == "onnxruntime" and m.module is not None
    files = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    img = (np.random.default_rng(0).random((9, 14, 3)) * 255).astype(np.uint8)
    ref = load_sr(net, scale=2, runtime="torch").upscale(img)
    assert int(np.abs(m.upscale(img).astype(int) - ref.astype(int)).max()) <= 1
    load_sr(net, scale=2, runtime="onnxruntime")            # cached: not exported again
    assert files[0].stat().st_mtime_ns == stamp and len(list(files[0].parent.glob("*.onnx"))) == 1


# ---------------------------------------------------------------- bad inputs
def test_truncated_onnx(tmp_path, tiny):
    _, path = tiny
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_sr(bad)


def test_onnx_of_another_model(tmp_path, tiny):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(ValueError, match="not exported by desra_fast"):
        load_sr(foreign)
    bare = to_onnx(RRDBNet(scale=4, num_block=1, num_feat=8, num_grow_ch=4), tmp_path / "bare.onnx")
    with pytest.raises(ValueError, match="not a super-resolution model"):
        load_sr(bare)
    with pytest.raises(ValueError, match="cannot change an exported model"):
        load_sr(tiny[1], noise_level=3)


def test_runner_rejects_bad_tensors(tiny):
    runner = OnnxRuntimeRunner(tiny[1])
    with pytest.raises(ValueError, match="takes 3 channels"):
        runner(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="float tensor"):
        runner(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        runner(torch.rand(3, 8, 8))


def test_cli_export(tmp_path, capsys):
    from desra_fast.cli import main

    torch.manual_seed(4)
    net = RRDBNet(scale=4, num_block=1, num_feat=8, num_grow_ch=4)
    ckpt = tmp_path / "net.pth"
    torch.save({"params_ema": net.state_dict()}, ckpt)
    out = tmp_path / "net.onnx"
    assert main(["export", "--model", str(ckpt), "--format", "onnx", "-o", str(out)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    img = (np.random.default_rng(1).random((10, 7, 3)) * 255).astype(np.uint8)
    a, b = load_sr(ckpt).upscale(img), load_sr(out).upscale(img)
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1
    assert read_onnx_metadata(out)["info"]["source_sha256"] == load_sr(ckpt).info["source_sha256"]
    # TensorRT needs an NVIDIA GPU: a clear error, before any export work
    if not torch.cuda.is_available():
        assert main(["export", "--model", str(ckpt), "--format", "tensorrt", "-o", str(tmp_path / "e.engine")]) == 1
        assert "NVIDIA GPU" in capsys.readouterr().err
