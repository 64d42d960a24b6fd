"""load_sr on .pth / .safetensors: key selection, inferred hyper-parameters, strictness, safety."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from desra_fast.models import RRDBNet, SRMD, load_sr
from desra_fast.models.checkpoint import CheckpointError, UnsafeCheckpointError


def _rrdb(scale, nb=2, nf=8, gc=4, seed=0, cin=3):
    torch.manual_seed(seed)
    return RRDBNet(num_in_ch=cin, num_out_ch=cin, scale=scale, num_feat=nf, num_block=nb, num_grow_ch=gc).eval()


@pytest.mark.parametrize("scale,nb,nf,gc", [(4, 3, 8, 4), (2, 1, 12, 6), (1, 2, 16, 8)])
def test_inferred_hyper_parameters_and_same_output(tmp_path, scale, nb, nf, gc):
    net = _rrdb(scale, nb, nf, gc)
    path = tmp_path / f"x{scale}.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    # The weights are checked bit for bit on the torch module the loader builds; the default
    # runtime on a CPU (OpenVINO fp32 where installed) is checked to agree within float32 rounding.
    m = load_sr(path, runtime="torch")
    assert {k: m.info[k] for k in ("arch", "scale", "num_block", "num_feat", "num_grow_ch", "num_in_ch", "num_out_ch")} \
        == dict(arch="RRDBNet", scale=scale, num_block=nb, num_feat=nf, num_grow_ch=gc, num_in_ch=3, num_out_ch=3)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m.forward(x), net(x))
        assert torch.allclose(load_sr(path).forward(x), net(x), rtol=0, atol=1e-5)
    # odd sizes work for pixel-unshuffle models (padded to a multiple and cropped back)
    assert m.upscale(np.zeros((13, 11, 3), np.uint8)).shape == (13 * scale, 11 * scale, 3)


def test_key_preference_prefix_and_safetensors(tmp_path):
    ema, plain = _rrdb(4, seed=1), _rrdb(4, seed=2)
    x = torch.rand(1, 3, 8, 8)
    both = tmp_path / "both.pth"
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, both)
    m = load_sr(both, runtime="torch")
    assert m.info["checkpoint_key"] == "params_ema" and torch.equal(m.forward(x), ema(x))
    m = load_sr(both, key="params", runtime="torch")
    assert m.info["checkpoint_key"] == "params" and torch.equal(m.forward(x), plain(x))
    only = tmp_path / "params.pth"
    torch.save({"params": plain.state_dict()}, only)
    assert load_sr(only).info["checkpoint_key"] == "params"
    bare = tmp_path / "bare.pt"
    torch.save({"module." + k: v for k, v in ema.state_dict().items()}, bare)   # DataParallel prefix
    m = load_sr(bare, runtime="torch")
    assert m.info["checkpoint_key"] is None and torch.equal(m.forward(x), ema(x))
    from safetensors.torch import save_file

    st = tmp_path / "m.safetensors"
    save_file(ema.state_dict(), str(st))
    m = load_sr(st, runtime="torch")
    assert m.info["format"] == "safetensors" and torch.equal(m.forward(x), ema(x))
    assert len(m.info["source_sha256"]) == 64
    with pytest.raises(CheckpointError, match="no state dict under key 'nope'"):
        load_sr(both, key="nope")


def test_srmd_pth_round_trip(tmp_path):
    torch.manual_seed(0)
    net = SRMD(in_nc=19, nc=16, num_conv=4, scale=3)
    p = tmp_path / "srmd.pth"
    torch.save({"params": net.state_dict()}, p)
    m = load_sr(p, noise_level=5)
    assert m.info["arch"] == "SRMD" and m.scale == 3 and m.info["noise_level"] == 5
    assert m.upscale(np.zeros((7, 9, 3), np.uint8)).shape == (21, 27, 3)


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class EvalEvil:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w').write('x')",))

    for i, payload in enumerate([{"params_ema": Evil()}, EvalEvil(), {"conv_first.weight": EvalEvil()}]):
        path = tmp_path / f"evil{i}.pth"
        torch.save(payload, path)
        with pytest.raises(UnsafeCheckpointError, match="refused to load"):
            load_sr(path)
    assert not marker.exists()


def test_wrong_keys_and_shapes_are_listed(tmp_path):
    sd = _rrdb(4).state_dict()
    missing = dict(sd)
    del missing["conv_hr.bias"], missing["body.1.rdb3.conv5.weight"]
    missing["extra.weight"] = torch.zeros(1)
    p = tmp_path / "keys.pth"
    torch.save({"params_ema": missing}, p)
    with pytest.raises(CheckpointError, match=r"missing keys: body\.1\.rdb3\.conv5\.weight, conv_hr\.bias; "
                                              r"unexpected keys: extra\.weight"):
        load_sr(p)
    shapes = dict(sd)
    shapes["body.0.rdb2.conv3.weight"] = torch.zeros(4, 7, 3, 3)
    torch.save({"params_ema": shapes}, p)
    with pytest.raises(CheckpointError, match=r"body\.0\.rdb2\.conv3\.weight: checkpoint \(4, 7, 3, 3\) vs model \(4, 16, 3, 3\)"):
        load_sr(p)
    nan = dict(sd)
    nan["conv_last.bias"] = torch.full_like(sd["conv_last.bias"], float("nan"))
    torch.save(nan, p)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_sr(p)
    odd = dict(sd)
    odd["conv_first.weight"] = torch.zeros(8, 5, 3, 3)
    torch.save(odd, p)
    with pytest.raises(CheckpointError, match="conv_first takes 5 channels"):
        load_sr(p)


def test_not_a_checkpoint_and_unknown_architecture(tmp_path):
    p = tmp_path / "junk.pth"
    p.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a"):
        load_sr(p)
    good = tmp_path / "good.pth"
    torch.save({"params_ema": _rrdb(4).state_dict()}, good)
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_sr(tmp_path / "cut.pth")
    torch.save({"params": {"layers.0.weight": torch.zeros(4, 3, 3, 3)}}, p)
    try:
        import spandrel  # noqa: F401
    except ImportError:
        with pytest.raises(CheckpointError, match=r"spandrel: pip install 'desra_fast\[spandrel\]'"):
            load_sr(p)
    else:  # pragma: no cover - spandrel installed
        with pytest.raises(CheckpointError, match="spandrel"):
            load_sr(p)
    torch.save([1, 2], p)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_sr(p)


def test_load_sr_argument_errors(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"params_ema": _rrdb(4).state_dict()}, good)
    with pytest.raises(ValueError, match="unknown option"):
        load_sr(good, tile=3)
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt-nope'"):
        load_sr(good, runtime="tensorrt-nope")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_sr(tmp_path / "missing.pth")
    (tmp_path / "m.onnx2").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported model file"):
        load_sr(tmp_path / "m.onnx2")
    with pytest.raises(ValueError, match="noise_level is an SRMD option"):
        load_sr(good, noise_level=3)
    with pytest.raises(ValueError, match="bin= is only for ncnn"):
        load_sr(good, bin="x.bin")
    assert load_sr(_rrdb(2), scale=2).scale == 2      # an nn.Module source
