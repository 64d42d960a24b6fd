"""One safety policy for every weight file the package reads, one error hierarchy.

A pickle whose ``__reduce__`` runs code (it creates a marker file) is handed to every entry point
that reads weights: the SR and segmentation loaders (torch files and Hugging Face folders), the
fine-tune's ``--netd`` / ``--vgg`` / resume readers, the ``convert`` and ``export`` commands,
the reader itself. Each must refuse it with a :class:`CheckpointError` naming the file, and the
marker must not exist afterwards. The same file read with the explicit opt-in (``trust=True``)
does create the marker, which proves the payload is live (so the refusals above can fail).
"""
import os
import pickle
import warnings

import pytest

torch = pytest.importorskip("torch")

from desra_fast.models import checkpoint as ckpt  # noqa: E402
from desra_fast.models.checkpoint import CheckpointError, UnsafeCheckpointError  # noqa: E402


class _Payload:
    """Unpickling this creates the file ``path`` (through ``open``, as an attacker's code would)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w').write('ran')",))


def _evil_torch_file(path, marker, *, wrap="params_ema"):
    """A torch (zip) checkpoint holding the payload where weights are expected."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _Payload(marker)
    torch.save({wrap: {"conv_first.weight": payload}} if wrap else payload, path)
    return path


def _load_sr(tmp, marker):
    from desra_fast.models import load_sr

    return load_sr(_evil_torch_file(tmp / "evil_sr.pth", marker))


def _load_sr_bare(tmp, marker):
    from desra_fast.models import load_sr

    return load_sr(_evil_torch_file(tmp / "evil_bare.pt", marker, wrap=None))


def _load_segmenter(tmp, marker):
    from desra_fast.models import load_segmenter

    return load_segmenter(_evil_torch_file(tmp / "evil_seg.pth", marker, wrap="state_dict"))


def _load_segmenter_hf_folder(tmp, marker):
    from desra_fast.models import load_segmenter

    folder = tmp / "evil_hf"
    _evil_torch_file(folder / "pytorch_model.bin", marker, wrap=None)
    (folder / "config.json").write_text("{}")
    return load_segmenter(folder)


def _netd(tmp, marker):
    from desra_fast.train import load_discriminator

    return load_discriminator(_evil_torch_file(tmp / "evil_netD.pth", marker, wrap="params"))


def _vgg(tmp, marker):
    from desra_fast.train import load_vgg19

    return load_vgg19(_evil_torch_file(tmp / "evil_vgg19.pth", marker, wrap=None))


def _resume_reader(tmp, marker):
    from desra_fast.train import load_checkpoint

    return load_checkpoint(_evil_torch_file(tmp / "ckpt" / "iter_00000010.pth", marker, wrap="net_g"))


def _resume_latest(tmp, marker):
    from desra_fast.train import latest_checkpoint

    _evil_torch_file(tmp / "ckpt" / "iter_00000010.pth", marker, wrap="net_g")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = latest_checkpoint(tmp / "ckpt")
    # the resume path skips an unreadable checkpoint with a warning naming the refusal
    assert state is None
    msg = " ".join(str(w.message) for w in caught)
    raise CheckpointError(msg)


def _reader(tmp, marker):
    return ckpt.read_weights(_evil_torch_file(tmp / "evil_any.ckpt", marker))


def _read_state_dict(tmp, marker):
    return ckpt.read_state_dict(_evil_torch_file(tmp / "evil_sd.pth", marker))


def _cli(argv_of):
    def run(tmp, marker):
        from desra_fast.cli import main

        path = _evil_torch_file(tmp / "evil_cli.pth", marker)
        try:
            rc = main(argv_of(path, tmp))
        except SystemExit as e:  # argparse-style exits
            rc = e.code
        assert rc not in (0, None)
        raise CheckpointError(f"refused by the command (exit code {rc})")
    return run


ENTRY_POINTS = {
    "load_sr": _load_sr,
    "load_sr(bare pickle)": _load_sr_bare,
    "load_segmenter": _load_segmenter,
    "load_segmenter(HF folder)": _load_segmenter_hf_folder,
    "finetune --netd": _netd,
    "finetune --vgg": _vgg,
    "finetune resume (load_checkpoint)": _resume_reader,
    "finetune resume (latest_checkpoint)": _resume_latest,
    "read_weights": _reader,
    "read_state_dict": _read_state_dict,
    "desra-fast convert": _cli(lambda p, t: ["convert", str(p), "-o", str(t / "out.pth")]),
    "desra-fast export": _cli(lambda p, t: ["export", "--model", str(p), "-o", str(t / "out.onnx")]),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_malicious_pickle_is_refused_everywhere(entry, tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    with pytest.raises(CheckpointError) as info:
        ENTRY_POINTS[entry](tmp_path, marker)
    assert not marker.exists(), f"{entry}: the pickle's code ran"
    said = str(info.value) + capsys.readouterr().err
    assert "evil" in said or "iter_00000010.pth" in said, f"{entry}: the error does not name the file: {said}"


def test_the_payload_is_live_and_trust_is_the_only_way_in(tmp_path, caplog):
    marker = tmp_path / "payload_ran"
    path = _evil_torch_file(tmp_path / "evil.pth", marker)
    with pytest.raises(UnsafeCheckpointError, match="trust=True"):
        ckpt.read_weights(path)
    assert not marker.exists()
    with caplog.at_level("WARNING", logger="desra_fast.models.checkpoint"):
        ckpt.read_weights(path, trust=True)  # the explicit opt-in unpickles, so the payload runs
    assert marker.read_text() == "ran"
    assert "trust=True" in caplog.text and "evil.pth" in caplog.text  # never silently


def test_one_checkpoint_error_base():
    from desra_fast.models import CheckpointError as exported
    from desra_fast.models.ncnn import NcnnFormatError
    from desra_fast.models.segmenter import CheckpointError as seg_error
    from desra_fast.train import CheckpointError as train_error

    assert exported is CheckpointError and seg_error is CheckpointError
    for cls in (UnsafeCheckpointError, NcnnFormatError, train_error):
        assert issubclass(cls, CheckpointError)
    assert issubclass(CheckpointError, ValueError)  # callers catching ValueError keep working


def test_reader_formats_and_errors(tmp_path):
    sd = {"w": torch.arange(6, dtype=torch.float32).view(2, 3)}
    torch.save({"params": sd}, tmp_path / "a.pth")
    wf = ckpt.read_weights(tmp_path / "a.pth")
    assert wf.format == "torch" and torch.equal(wf.content["params"]["w"], sd["w"])
    # the fingerprint is the SHA-256 of the file's bytes (hashlib as the independent reference)
    import hashlib

    assert wf.sha256 == hashlib.sha256((tmp_path / "a.pth").read_bytes()).hexdigest()
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "b.safetensors"))
    wf = ckpt.read_weights(tmp_path / "b.safetensors")
    assert wf.format == "safetensors" and torch.equal(wf.content["w"], sd["w"])
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file(sd, str(hf / "model.safetensors"))
    (hf / "config.json").write_text('{"num_labels": 150}')
    wf = ckpt.read_weights(hf)
    assert wf.path == hf / "model.safetensors" and wf.config == {"num_labels": 150}
    (hf / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        ckpt.read_weights(hf)
    with pytest.raises(CheckpointError, match="no such file"):
        ckpt.read_weights(tmp_path / "missing.pth")
    (tmp_path / "c.xyz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported weight file suffix"):
        ckpt.read_weights(tmp_path / "c.xyz")
    data = (tmp_path / "a.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ckpt.read_weights(tmp_path / "cut.pth")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes()[:20])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ckpt.read_weights(tmp_path / "cut.safetensors")


def test_registry_recognises_each_architecture():
    import desra_fast.train  # noqa: F401  (registers the discriminator and VGG19)
    from desra_fast.models import RRDBNet, SRMD
    from desra_fast.models.registry import architectures, find_architecture, load_architecture
    from desra_fast.train.discriminator import UNetDiscriminatorSN

    names = {(a.kind, a.name) for a in architectures()}
    assert {("sr", "RRDBNet"), ("sr", "SRMD"), ("sr", "spandrel"), ("segmenter", "SegFormer"),
            ("discriminator", "UNetDiscriminatorSN"), ("vgg", "VGG19")} <= names
    torch.manual_seed(0)
    for net, kind, name in ((RRDBNet(num_feat=8, num_block=1, num_grow_ch=4), "sr", "RRDBNet"),
                            (SRMD(in_nc=19, nc=8, num_conv=3, scale=2), "sr", "SRMD"),
                            (UNetDiscriminatorSN(3, 8), "discriminator", "UNetDiscriminatorSN")):
        sd = net.state_dict()
        assert find_architecture(sd, kind).name == name
        module, info = load_architecture(sd, kind, "test")
        assert info["arch"] == name
        inner = getattr(module, "net", module)  # SRMD comes wrapped for RGB input
        assert all(torch.equal(a, b) for a, b in zip(sd.values(), inner.state_dict().values()))
    with pytest.raises(CheckpointError, match="no known discriminator architecture"):
        load_architecture({"x.weight": torch.zeros(1)}, "discriminator", "test")


def test_new_architecture_is_one_registration():
    from desra_fast.models import load_sr
    from desra_fast.models.registry import Architecture, _REGISTRY, register

    class Double(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.double_marker = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") * self.double_marker

    def load(sd, what, scale=None, noise_level=None):
        net = Double()
        net.load_state_dict(sd)
        return net, dict(arch="Double", scale=2)

    register(Architecture("Double", "sr", lambda sd: "double_marker" in sd, load, priority=50))
    try:
        import numpy as np
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "double.pth")
            torch.save({"params_ema": Double().state_dict()}, p)
            m = load_sr(p)
            assert m.info["arch"] == "Double" and m.upscale(np.zeros((5, 6, 3), np.uint8)).shape == (10, 12, 3)
    finally:
        del _REGISTRY["sr"]["Double"]


def test_pickle_module_is_not_used_to_read(tmp_path, monkeypatch):
    # the default path never reaches a full unpickler: it is weights_only all the way
    def boom(*a, **k):
        raise AssertionError("a full unpickler was used")

    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(pickle, "load", boom)
    torch.save({"params": {"w": torch.zeros(2)}}, tmp_path / "ok.pth")
    assert ckpt.read_state_dict(tmp_path / "ok.pth")[0]["w"].shape == (2,)
