"""Loss terms of the fine-tune against independent restatements; the VGG19 conversions; the
discriminator's layout and spectral norm; the EMA update.

References: plain numpy/float64 formulas (L1, BCE); the VGG19 forward restated with
``F.conv2d`` over weights read straight from the Keras h5 file with h5py (own transposition,
BGR/mean preprocessing and layer counting), or from a torchvision-format file; BasicSR's
``UNetDiscriminatorSN`` key list written out by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from desra_fast.train import (DEFAULT_LAYER_WEIGHTS, GANLoss, L1Loss, PerceptualLoss,  # noqa: E402
                              UNetDiscriminatorSN, ema_update, find_vgg19, load_discriminator,
                              load_vgg19)
from desra_fast.models.checkpoint import CheckpointError  # noqa: E402  (base of the train one)

# conv layers of VGG19 in order, and the pooling after the 2nd, 4th, 8th, 12th, 16th conv
CONVS = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (3, 4),
         (4, 1), (4, 2), (4, 3), (4, 4), (5, 1), (5, 2), (5, 3), (5, 4)]
POOL_AFTER = {2, 4, 8, 12, 16}


def restated_vgg(x_net, weights, wanted):
    """Pre-ReLU conv outputs of VGG19, written out: conv, ReLU, max-pool 2x2 after each block."""
    out, h = {}, x_net
    for n, (b, c) in enumerate(CONVS, start=1):
        w, bias = weights[(b, c)]
        h = F.conv2d(h, w, bias, padding=1)
        if f"conv{b}_{c}" in wanted:
            out[f"conv{b}_{c}"] = h
        h = torch.relu(h)
        if n in POOL_AFTER:
            h = F.max_pool2d(h, 2)
    return out


@pytest.fixture(scope="module")
def keras_file():
    path = find_vgg19()
    if path is None or path.suffix != ".h5":
        pytest.skip("the Keras VGG19 file is not installed (scripts/install.sh unpacks it)")
    return path


@pytest.fixture(scope="module")
def keras_vgg(keras_file):
    return load_vgg19(keras_file)


def test_l1_matches_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    want = 0.7 * np.mean(np.abs(x.double().numpy() - y.double().numpy()))
    assert math.isclose(float(L1Loss(0.7)(x, y)), want, rel_tol=1e-6)


def test_vanilla_gan_loss_matches_formula():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 8, 8, generator=g) * 3
    z = logits.double().numpy()
    sig = 1 / (1 + np.exp(-z))
    real, fake = -np.mean(np.log(sig)), -np.mean(np.log(1 - sig))
    loss = GANLoss(weight=0.1)
    assert math.isclose(float(loss(logits, True, is_disc=True)), real, rel_tol=1e-6)
    assert math.isclose(float(loss(logits, False, is_disc=True)), fake, rel_tol=1e-6)
    assert math.isclose(float(loss(logits, True, is_disc=False)), 0.1 * real, rel_tol=1e-6)


def test_keras_vgg_features_and_perceptual_loss_match_restatement(keras_file, keras_vgg):
    import h5py

    weights = {}
    with h5py.File(keras_file, "r") as f:
        for b, c in CONVS:
            grp = f[f"block{b}_conv{c}"]
            kern = [grp[k][()] for k in grp if grp[k].ndim == 4][0]   # (kh, kw, Cin, Cout)
            bias = [grp[k][()] for k in grp if grp[k].ndim == 1][0]
            weights[(b, c)] = (torch.from_numpy(np.ascontiguousarray(np.transpose(kern, (3, 2, 0, 1)))),
                               torch.from_numpy(bias))
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)

    def to_net(img):  # RGB [0, 1] -> BGR 0..255 minus the mean pixel
        bgr = img[:, [2, 1, 0]] * 255.0
        return bgr - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)

    scale = 1.0 / (255.0 * (0.229 + 0.224 + 0.225) / 3)
    wanted = ["conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"]
    fx = restated_vgg(to_net(x), weights, wanted)
    fy = restated_vgg(to_net(y), weights, wanted)
    mine = keras_vgg(x, wanted)
    for name in wanted:
        torch.testing.assert_close(mine[name], fx[name] * scale, rtol=1e-4, atol=1e-4)
    assert DEFAULT_LAYER_WEIGHTS == {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    want = sum(w * float((fx[n] - fy[n]).abs().mean()) * scale for n, w in
               zip(wanted, (0.1, 0.1, 1.0, 1.0, 1.0)))
    got = float(PerceptualLoss(keras_vgg, weight=1.0)(x, y))
    assert math.isclose(got, want, rel_tol=1e-4)
    # gradient flows to the output, not to the target or the VGG
    xr = x.clone().requires_grad_(True)
    PerceptualLoss(keras_vgg)(xr, y).backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    assert all(p.grad is None for p in keras_vgg.parameters())


def test_torchvision_format_file_matches_restatement(tmp_path):
    g = torch.Generator().manual_seed(3)
    sd, weights, cin, idx = {}, {}, 3, 0
    for n, (b, c) in enumerate(CONVS, start=1):
        cout = (64, 128, 256, 512, 512)[b - 1]
        w = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        bias = torch.randn(cout, generator=g) * 0.01
        sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"] = w, bias
        weights[(b, c)] = (w, bias)
        idx += 2 + (1 if n in POOL_AFTER else 0)   # conv, relu (, pool)
        cin = cout
    sd["classifier.0.weight"] = torch.zeros(4, 4)   # torchvision files carry the classifier too
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(sd, path)
    vgg = load_vgg19(path)
    x = torch.rand(1, 3, 32, 32, generator=g)
    xn = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    want = restated_vgg(xn, weights, ["conv3_4", "conv5_4"])
    got = vgg(x, ["conv3_4", "conv5_4"])
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-4)


def test_random_vgg_refused_unless_told(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DESRA_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DESRA_FAST_VGG19", raising=False)
    with pytest.raises(FileNotFoundError, match="--perceptual-weight 0"):
        load_vgg19()
    rand = load_vgg19(allow_random=True)
    assert rand.pretrained is False
    with pytest.raises(ValueError, match="random weights"):
        PerceptualLoss(rand)
    PerceptualLoss(rand, allow_random=True)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="bad.h5"):
        load_vgg19(bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth"):
        load_vgg19(wrong)


BASICSR_D_KEYS = (
    ["conv0.weight", "conv0.bias"]
    + [f"conv{i}.{p}" for i in range(1, 9) for p in ("weight_orig", "weight_u", "weight_v")]
    + ["conv9.weight", "conv9.bias"]
)


def test_discriminator_layout_and_spectral_norm(tmp_path):
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(3, 16)
    assert sorted(d.state_dict()) == sorted(BASICSR_D_KEYS)
    shapes = {k: tuple(v.shape) for k, v in UNetDiscriminatorSN(3, 64).state_dict().items()}
    assert shapes["conv1.weight_orig"] == (128, 64, 4, 4) and shapes["conv3.weight_orig"] == (512, 256, 4, 4)
    assert shapes["conv4.weight_orig"] == (256, 512, 3, 3) and shapes["conv9.weight"] == (1, 64, 3, 3)
    # spectral norm: after power iterations (one per training-mode forward) every normalised
    # weight has largest singular value 1; conv0 and conv9 are plain
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        for _ in range(30):
            out = d(x)
    assert out.shape == (1, 1, 16, 16)
    for i in range(1, 9):
        conv = getattr(d, f"conv{i}")
        w = conv.weight.detach().reshape(conv.weight.shape[0], -1)
        sigma = torch.linalg.matrix_norm(w.double(), ord=2).item()
        assert abs(sigma - 1.0) < 2e-2, (i, sigma)
        assert any(type(h).__name__ == "SpectralNorm" for h in conv._forward_pre_hooks.values())
    for i in (0, 9):
        assert not getattr(d, f"conv{i}")._forward_pre_hooks
    # a user's netD file ({'params': ...}) loads strictly; wrong keys are refused by name
    path = tmp_path / "netD.pth"
    torch.save({"params": d.state_dict()}, path)
    d2 = load_discriminator(path)
    assert all(torch.equal(a, b) for a, b in zip(d.state_dict().values(), d2.state_dict().values()))
    torch.save({"params": {"conv0.weight": torch.zeros(16, 3, 3, 3)}}, path)
    with pytest.raises(CheckpointError, match="netD.pth"):
        load_discriminator(path)
    with pytest.raises(ValueError, match="multiples of 8"):
        d(torch.rand(1, 3, 12, 12))


def test_malicious_pickle_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (eval, ("__import__('os').system('echo pwned')",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"params": Evil()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_discriminator(path)


def test_ema_update_exact():
    torch.manual_seed(0)
    a, b = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
    before = {k: v.detach().double().clone() for k, v in a.named_parameters()}
    ema_update(a, b, decay=0.999)
    for k, v in a.named_parameters():
        want = 0.999 * before[k] + (1 - 0.999) * dict(b.named_parameters())[k].double()
        torch.testing.assert_close(v.double(), want, rtol=0, atol=1e-7)
