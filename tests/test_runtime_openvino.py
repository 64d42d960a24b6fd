"""runtime="openvino": exactness against torch fp32 (real x4plus and SRMD weights, SegFormer B0/B5
labels), the precision hints, auto's choice, IR export and its checks, the compiled-model cache
across processes, thread safety, and the errors for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("openvino", reason="needs the openvino package (pip install 'desra_fast[openvino]')")

from desra_fast.models import RRDBNet, load_sr  # noqa: E402
from desra_fast.models.zoo import packaged_model  # noqa: E402
from desra_fast.runtime import RuntimeUnavailableError, resolve_runtime  # noqa: E402
from desra_fast.runtime import openvino as rov  # noqa: E402

from sr_fixtures import lr_crop  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One cache for the module's tests (compiled blobs, IRs), never the user's.
    monkeypatch.setenv("DESRA_FAST_CACHE", str(tmp_path_factory.getbasetemp() / "ov-cache"))


def _packaged(name):
    try:
        return packaged_model(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def _tiny(seed=0, scale=4):
    torch.manual_seed(seed)
    return RRDBNet(3, 3, scale=scale, num_feat=8, num_block=1, num_grow_ch=4).eval()


def _within1(a, b):
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return float((d <= 1).mean()), int(d.max())


@pytest.mark.parametrize("name,crops", [
    ("realesrgan-x4plus", [("rocket", 37, 29, 11, 53), ("motorcycle", 23, 41, 61, 7)]),
    ("srmd-x4", [("rocket", 45, 31, 3, 17), ("motorcycle", 29, 51, 40, 90)]),
])
def test_real_weights_match_torch_fp32(name, crops):
    """Odd LR sizes never seen by any compile, real weights: uint8 within 1 level on >= 99.9 %."""
    param = _packaged(name)
    ref = load_sr(param, runtime="torch")
    ov = load_sr(param, runtime="openvino")
    assert ov.info["runtime"] == "openvino" and ov.info["openvino_precision_hint"] == "f32"
    assert ov.info["openvino_inference_precision"] == "f32"
    for img_name, h, w, y, x in crops:
        rgb = lr_crop(img_name, max(h, w), y, x)[:h, :w]
        a, b = ov.upscale(rgb), ref.upscale(rgb)
        assert a.shape == b.shape == (h * 4, w * 4, 3)
        within1, worst = _within1(a, b)
        assert within1 >= 0.999, (name, img_name, within1, worst)
        assert worst <= 2, worst
    # a batch of two through one call equals the two images one by one
    rgb = lr_crop("rocket", 24, 5, 5)
    batch = torch.from_numpy(np.stack([rgb, rgb[::-1].copy()])).permute(0, 3, 1, 2)
    out = ov.upscale(batch)
    assert torch.equal(out[0].permute(1, 2, 0), torch.from_numpy(ov.upscale(rgb)))


def test_fp32_hint_always_set_and_bf16_hint_recorded(caplog):
    net = _tiny()
    fp32 = load_sr(net, scale=4, runtime="openvino")
    assert fp32.runner.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert fp32.runner.effective_precision == "f32" and fp32.info["openvino_precision_hint"] == "f32"
    bf16 = load_sr(net, scale=4, runtime="openvino", precision="bf16")
    assert bf16.runner.config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert bf16.info["openvino_precision_hint"] == "bf16"
    import openvino

    caps = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    # What OpenVINO compiled is read back: bf16 only where the CPU has it.
    assert bf16.info["openvino_inference_precision"] == ("bf16" if "BF16" in caps else "f32")
    if "BF16" not in caps:
        assert "lacks the instructions" in caplog.text
    with pytest.raises(ValueError, match="precision must be one of"):
        load_sr(net, scale=4, runtime="openvino", precision="int4")


def test_threads_from_env(monkeypatch):
    monkeypatch.setenv("DESRA_NUM_THREADS", "1")
    m = load_sr(_tiny(), scale=4, runtime="openvino")
    assert m.runner.threads == 1 and m.runner.config["INFERENCE_NUM_THREADS"] == 1
    monkeypatch.setenv("DESRA_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="DESRA_NUM_THREADS"):
        load_sr(_tiny(), scale=4, runtime="openvino")


def test_auto_picks_openvino_on_cpu_for_fp32_only():
    assert resolve_runtime("auto", "cpu", source="torch") == "openvino"
    assert resolve_runtime("auto", "cpu", source="onnx") == "openvino"
    assert resolve_runtime("auto", "cpu", source="ir") == "openvino"
    assert resolve_runtime("auto", "cpu", source="torch", precision="bf16") == "torch"
    assert resolve_runtime("auto", "cpu", source="onnx", precision="fp16") == "onnxruntime"
    with pytest.raises(ValueError, match="only with runtime='openvino'"):
        resolve_runtime("onnxruntime", "cpu", source="ir")
    m = load_sr(_tiny(), scale=4)
    assert m.info["runtime"] == "openvino"
    # A reduced precision is the user's choice, made when loading: auto then keeps torch.
    img = lr_crop("rocket", 16, 30, 30)
    with pytest.raises(ValueError, match="fixed when the runtime is built"):
        m.upscale(img, precision="bf16")
    t = load_sr(_tiny(), scale=4, precision="bf16")
    assert t.info["runtime"] == "torch" and t.upscale(img, precision="bf16").shape == (64, 64, 3)
    with pytest.raises(RuntimeUnavailableError, match="CPU only"):
        resolve_runtime("openvino", "meta")


def test_runtime_openvino_without_the_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    with pytest.raises(RuntimeUnavailableError, match=r"openvino package is not installed.*desra_fast\[openvino\]"):
        load_sr(_tiny(), scale=4, runtime="openvino")
    # auto without OpenVINO: torch, as before (nothing asked for OpenVINO)
    assert load_sr(_tiny(), scale=4).info["runtime"] == "torch"


def test_two_threads_equal_one():
    m = load_sr(_tiny(seed=2), scale=4, runtime="openvino")
    imgs = [lr_crop("rocket", 20 + 3 * i, 5 * i, 7 * i) for i in range(4)]
    want = [m.upscale(im) for im in imgs]
    got = [[None] * 4 for _ in range(2)]

    def work(t):
        for _ in range(3):
            for i, im in enumerate(imgs):
                got[t][i] = m.upscale(im)
    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in range(2):
        for i in range(4):
            np.testing.assert_array_equal(got[t][i], want[i])


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "desra_fast", *args], capture_output=True, text=True, cwd=str(ROOT),
                          env=env, timeout=600)


def test_export_openvino_ir_loads_like_the_source(tmp_path):
    net = _tiny(seed=4, scale=2)
    torch.save({"params_ema": net.state_dict()}, tmp_path / "x2.pth")
    out = tmp_path / "ir" / "x2.xml"
    r = _cli("export", "--model", str(tmp_path / "x2.pth"), "--format", "openvino", "-o", str(out),
             env={**os.environ})
    assert r.returncode == 0, r.stderr
    assert out.is_file() and out.with_suffix(".bin").is_file()
    meta = rov.read_ir_metadata(out)
    src = load_sr(tmp_path / "x2.pth", runtime="torch")
    assert meta["kind"] == "sr" and meta["info"]["scale"] == 2 and meta["info"]["source_sha256"] == src.info["source_sha256"]
    m = load_sr(out)
    assert m.info["runtime"] == "openvino" and m.module is None and m.info["pre_pad"] == src.info["pre_pad"]
    img = lr_crop("motorcycle", 27, 20, 40)[:, :21]
    within1, _ = _within1(m.upscale(img), src.upscale(img))
    assert within1 >= 0.999
    # the IR keeps float32 weights (never compressed to fp16): outputs equal within float rounding
    x = torch.rand(1, 3, 14, 18)
    with torch.no_grad():
        assert float((m.forward(x) - src.module(x)).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="cannot change an exported model"):
        load_sr(out, noise_level=3)


def test_bad_ir_files(tmp_path):
    net = _tiny(seed=5)
    a = rov.save_ir(load_sr(net, scale=4, runtime="torch"), tmp_path / "a.xml")
    b = rov.save_ir(load_sr(_tiny(seed=6, scale=2), scale=2, runtime="torch"), tmp_path / "b.xml")
    # truncated .xml
    (tmp_path / "t.xml").write_bytes(a.read_bytes()[:500])
    (tmp_path / "t.bin").write_bytes(a.with_suffix(".bin").read_bytes())
    with pytest.raises(ValueError, match="t.xml: OpenVINO cannot read this IR"):
        load_sr(tmp_path / "t.xml")
    # a foreign XML file
    (tmp_path / "f.xml").write_text("<?xml version='1.0'?><svg><rect/></svg>")
    (tmp_path / "f.bin").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="f.xml: OpenVINO cannot read"):
        load_sr(tmp_path / "f.xml")
    # the .bin of another model beside the .xml
    (tmp_path / "m.xml").write_bytes(a.read_bytes())
    (tmp_path / "m.bin").write_bytes(b.with_suffix(".bin").read_bytes())
    with pytest.raises(ValueError, match="m.xml"):
        load_sr(tmp_path / "m.xml")
    # same size, other bytes (a corrupt .bin)
    data = bytearray(a.with_suffix(".bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "m.xml").write_bytes(a.read_bytes())
    (tmp_path / "m.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not belong to this .xml"):
        load_sr(tmp_path / "m.xml")
    # missing .bin
    (tmp_path / "n.xml").write_bytes(a.read_bytes())
    with pytest.raises(FileNotFoundError, match="n.bin is missing"):
        load_sr(tmp_path / "n.xml")
    # an IR OpenVINO wrote without desra_fast's description
    import openvino

    openvino.save_model(rov.translated(load_sr(net, scale=4, runtime="torch")), str(tmp_path / "plain.xml"))
    with pytest.raises(ValueError, match="not written by desra_fast"):
        load_sr(tmp_path / "plain.xml")
    # an SR IR given to the segmenter loader, and a runtime that cannot read an IR
    from desra_fast.models.segmenter import load_segmenter

    with pytest.raises(ValueError, match="not a segmenter"):
        load_segmenter(a)
    with pytest.raises(ValueError, match="only with runtime='openvino'"):
        load_sr(a, runtime="onnxruntime")


def test_second_process_loads_the_compiled_model(tmp_path):
    """The compiled blob is cached under a folder named by the OpenVINO version and the CPU."""
    net = _tiny(seed=7)
    torch.save({"params_ema": net.state_dict()}, tmp_path / "m.pth")
    code = ("import json, time; from desra_fast.models import load_sr; t = time.perf_counter(); "
            f"m = load_sr({str(tmp_path / 'm.pth')!r}, runtime='openvino'); "
            "print(json.dumps([m.runner.loaded_from_cache, time.perf_counter() - t]))")
    env = {**os.environ, "DESRA_FAST_CACHE": str(tmp_path / "cache")}
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert runs[0][0] is False and runs[1][0] is True, runs
    folders = list((tmp_path / "cache" / "openvino").glob("compiled-*"))
    assert len(folders) == 1 and any(folders[0].iterdir())
    import openvino

    assert openvino.get_version().split("-")[0] in folders[0].name


def test_cache_folder_changes_with_the_cpu(monkeypatch):
    a = rov.ov_cache_dir()
    real = open

    def fake_open(path, *args, **kw):
        if str(path) == "/proc/cpuinfo":
            import io

            return io.StringIO("model name\t: Another CPU\nflags\t\t: fpu sse2 avx512f amx_bf16\n")
        return real(path, *args, **kw)
    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(rov, "core", lambda: (_ for _ in ()).throw(RuntimeError("no plugin")))
    assert rov.ov_cache_dir() != a


@pytest.fixture(scope="module")
def segformers():
    from desra_fast.models.segformer import SegFormer, SegFormerConfig
    from desra_fast.models.segmenter import Segmenter
    from segformer_refs import perturb_

    out = {}
    for variant, width in (("b0", 64), ("b5", 64)):
        cfg = SegFormerConfig.variant(variant, head="mmseg", width=width, num_classes=150)
        torch.manual_seed(11)
        net = SegFormer(cfg).eval()
        perturb_(net, seed=13)                      # labels that vary over the image
        out[variant] = Segmenter(net, info=dict(variant=variant, head="mmseg", width=width, num_classes=150,
                                                config=cfg.to_dict()), scale=(96, 64))
    return out


@pytest.mark.parametrize("variant", ["b0", "b5"])
def test_segformer_labels_equal_torch(segformers, variant, tmp_path):
    from desra_fast.models.segmenter import Segmenter

    seg = segformers[variant]
    runner = rov.OpenVINORunner(rov.cached_ir(seg))
    ov_seg = Segmenter(seg.module, info=seg.info, scale=seg.scale, runner=runner)
    x = torch.randn(2, 3, 45, 61)                   # odd sizes, batch 2
    with torch.no_grad():
        ref = seg.module(x)
    got = ov_seg.forward(x)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-3
    for name, (h, w, y, x0) in {"rocket": (57, 51, 10, 10), "motorcycle": (49, 63, 30, 20)}.items():
        img = lr_crop(name, max(h, w), y, x0)[:h, :w]
        a, b = seg.segment(img), ov_seg.segment(img)
        assert len(np.unique(a)) > 1
        np.testing.assert_array_equal(a, b)


def test_direct_translation_and_its_limits():
    """The fx -> OpenVINO translation equals torch on the layers it maps, refuses the others."""
    import openvino
    from torch import nn
    import torch.nn.functional as F

    from desra_fast.models.srmd import SRMD, SRMDRGB
    from desra_fast.runtime.openvino_graph import translate

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 12, 3, stride=1, padding=2, dilation=2)
            self.act, self.ps = nn.ReLU(), nn.PixelShuffle(2)

        def forward(self, x):
            y = F.leaky_relu(self.c1(x), 0.1) * 0.5 + 1.0
            y = self.ps(self.act(self.c2(y)))
            return torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), y - 0.25], 1)

    class Bilinear(nn.Module):
        def forward(self, x):
            return F.interpolate(x, None, 2, "bilinear")

    torch.manual_seed(9)
    core = openvino.Core()
    x = torch.rand(2, 3, 13, 17)
    for net in (Mixed().eval(), SRMDRGB(SRMD(19, 3, 8, 3, 2), 5).eval(), _tiny(seed=1, scale=1)):
        g = translate(net, 3)
        assert g is not None, type(net).__name__
        y = core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request().infer(
            {0: x[..., :12, :16].numpy()})[0]
        with torch.no_grad():
            ref = net(x[..., :12, :16]).numpy()
        assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-5
    assert translate(Bilinear(), 3) is None
    assert translate(nn.Sequential(nn.Conv2d(3, 3, 3, groups=3, padding=1)), 3) is None
    assert translate(nn.Sequential(nn.Conv2d(3, 3, 3), nn.LayerNorm(3)), 3) is None
