"""The fine-tune's options against independent statements: artifact-focused crops (fraction,
region weighting, determinism on drawn masks), the USM target (restated with scipy), the precision
choice, bf16 training (close to fp32, float32 state, SIGKILL + resume bit-identical in both
precisions), the normalised perceptual loss, the masked GAN term, the discriminator warm-up and the
EMA decay ``auto``, the first-step log.

Tiny random models on 32-px HR patches (see ``test_train_loop``), so each run takes seconds.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_loop import (PATCH, assert_bit_identical, final_state, in_process, make_folders,  # noqa: E402
                             run_worker, tiny_discriminator, tiny_generator)


def drawn_mask_folders(root: Path, seed: int) -> dict:
    """The folders of ``make_folders`` with masks replaced by drawn ones: per image one large
    rectangle in the top-left quarter and one 3x3 square near the bottom-right corner."""
    import cv2

    dirs = make_folders(root, seed)
    rng = np.random.default_rng(seed + 100)
    for p in sorted(dirs["mask"].iterdir()):
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        m[:] = 0
        h, w = m.shape
        t, l = rng.integers(0, 6, 2)
        m[t:t + int(rng.integers(14, 20)), l:l + int(rng.integers(14, 20))] = 255
        y, x = h - 3 - int(rng.integers(0, 4)), w - 3 - int(rng.integers(0, 4))
        m[y:y + 3, x:x + 3] = 255
        cv2.imwrite(str(p), m)
    return dirs


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    from desra_fast.train import pair_folders

    dirs = drawn_mask_folders(tmp_path_factory.mktemp("drawn"), seed=5)
    return dirs, pair_folders(*dirs.values())


def test_focus_fraction_region_weighting_and_determinism(drawn):
    from desra_fast.imageio import read_mask
    from desra_fast.train import FinetuneData

    dirs, samples = drawn
    focus, n = 0.3, 900
    d = FinetuneData(samples, 4, patch=PATCH, seed=11, focus=focus)
    masks = [read_mask(s.mask) != 0 for s in samples]
    focused, small = 0, 0
    for k in range(n):
        c = d.crop_of(k)
        top, left = 4 * c["top"], 4 * c["left"]
        window = masks[c["index"]][top:top + PATCH, left:left + PATCH]
        if c["focused"]:
            focused += 1
            assert window.any(), f"focused sample {k} holds no masked pixel"
            # a crop around the bottom-right square is clamped to the image's bottom-right corner;
            # one around the rectangle (top-left quarter) cannot be
            h, w = masks[c["index"]].shape
            small += (top, left) == (h - PATCH, w - PATCH)
    sd = (focus * (1 - focus) / n) ** 0.5
    assert abs(focused / n - focus) < 4 * sd, focused / n
    # regions weighted equally: the 9-px square gets about half the focused crops (by area: ~3 %)
    assert 0.35 < small / focused < 0.65, small / focused
    # determinism: same seed same crops; another seed other crops; the uniform samples are drawn
    # exactly as without focus
    d2 = FinetuneData(samples, 4, patch=PATCH, seed=11, focus=focus)
    d3 = FinetuneData(samples, 4, patch=PATCH, seed=12, focus=focus)
    plain = FinetuneData(samples, 4, patch=PATCH, seed=11, focus=0.0)
    assert [d.crop_of(k) for k in range(200)] == [d2.crop_of(k) for k in range(200)]
    assert [d.crop_of(k) for k in range(50)] != [d3.crop_of(k) for k in range(50)]
    for k in range(200):
        a, b = d.crop_of(k), plain.crop_of(k)
        if not a["focused"]:
            assert a == dict(b, focused=0)
        lr, gt, m = d.sample(k, with_mask=True)
        assert np.array_equal(d.sample(k)[1], gt) and m.shape == (1, PATCH, PATCH)
        # the mask crop is the mask under the same crop and flips as the target
        want = masks[a["index"]][4 * a["top"]:4 * a["top"] + PATCH, 4 * a["left"]:4 * a["left"] + PATCH]
        if a["hflip"]:
            want = want[:, ::-1]
        if a["vflip"]:
            want = want[::-1, :]
        if a["rot"]:
            want = want.T
        assert np.array_equal(m[0], want.astype(np.float32))
    with pytest.raises(ValueError, match="focus"):
        FinetuneData(samples, 4, patch=PATCH, focus=1.5)


def test_focus_is_a_share_of_all_crops_when_few_images_have_regions(tmp_path):
    """Two of three images without detections: still a share F of *all* crops is centred on a
    region (drawn from the one image that has them), and the rest are the uniform crops."""
    import cv2

    from desra_fast.imageio import read_mask
    from desra_fast.train import FinetuneData, pair_folders

    dirs = drawn_mask_folders(tmp_path, seed=7)
    masks = sorted(dirs["mask"].iterdir())
    for p in masks[1:]:
        cv2.imwrite(str(p), np.zeros_like(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)))
    samples = pair_folders(*dirs.values())
    focus, n = 0.4, 900
    d = FinetuneData(samples, 4, patch=PATCH, seed=2, focus=focus)
    with_regions = [i for i, s in enumerate(samples) if read_mask(s.mask).any()]
    assert len(with_regions) == 1
    crops = [d.crop_of(k) for k in range(n)]
    focused = [c for c in crops if c["focused"]]
    sd = (focus * (1 - focus) / n) ** 0.5
    assert abs(len(focused) / n - focus) < 4 * sd, len(focused) / n
    assert {c["index"] for c in focused} == set(with_regions)
    mask = read_mask(samples[with_regions[0]].mask) != 0
    for c in focused:
        assert mask[4 * c["top"]:4 * c["top"] + PATCH, 4 * c["left"]:4 * c["left"] + PATCH].any()
    # the uniform crops visit every image, as without focus
    assert {c["index"] for c in crops if not c["focused"]} == set(range(len(samples)))


def test_usm_sharp_matches_scipy_restatement():
    from scipy.ndimage import gaussian_filter

    from desra_fast.train.data import usm_sharp

    rng = np.random.default_rng(0)
    img = rng.random((40, 56, 3)).astype(np.float32)
    img[:, :20] = 0.5  # flat area: under the threshold, left as it is

    def blur(a):  # cv2 size 51, sigma 0 -> sigma 0.3 * (25 - 1) + 0.8 = 8; reflect-101 = 'mirror'
        return np.stack([gaussian_filter(a[..., c].astype(np.float64), 8.0, mode="mirror", truncate=25 / 8)
                         for c in range(a.shape[-1])], -1)

    res = img.astype(np.float64) - blur(img)
    soft = blur((np.abs(res) * 255 > 10).astype(np.float64))
    want = soft * np.clip(img + 0.5 * res, 0, 1) + (1 - soft) * img
    got = usm_sharp(img)
    assert got.dtype == np.float32 and got.shape == img.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.abs(got - img).max() > 0.05  # it did sharpen


def test_precision_choice():
    from desra_fast.train import precision

    cpu = torch.device("cpu")
    assert precision.resolve("auto", cpu, flags={"avx2", "fma"}) == "fp32"
    assert precision.resolve("auto", cpu, flags={"avx2", "amx_bf16"}) == "bf16"
    assert precision.resolve("auto", cpu, flags={"avx512_bf16"}) == "bf16"
    assert precision.resolve("fp32", cpu, flags={"amx_bf16"}) == "fp32"
    assert precision.resolve("bf16", cpu, flags=set()) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        precision.resolve("fp16", cpu)
    here = set(open("/proc/cpuinfo").read().split()) if Path("/proc/cpuinfo").exists() else set()
    assert precision.resolve("auto", cpu) == ("bf16" if {"amx_bf16", "avx512_bf16"} & here else "fp32")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftopt")
    make_folders(root)
    return root


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_sigkill_then_resume_bit_identical_in_each_precision(data_dir, tmp_path, prec):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    run_worker(data_dir, ref, "--precision", prec, "--gan-outside", "0.5")
    r = run_worker(data_dir, out, "--precision", prec, "--gan-outside", "0.5", "--kill-after-checkpoint", "2",
                   check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr
    run_worker(data_dir, out, "--precision", prec, "--gan-outside", "0.5", "--resume")
    a, b = final_state(ref), final_state(out)
    assert_bit_identical(a["params"], b["params"], "params")
    assert_bit_identical(a["params_ema"], b["params_ema"], "params_ema")
    log = [json.loads(l) for l in (ref / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["precision"] == prec


def test_bf16_close_to_fp32_with_float32_state(data_dir, tmp_path):
    from desra_fast.train import latest_checkpoint

    runs = {}
    for prec in ("fp32", "bf16"):
        out = tmp_path / prec
        in_process(data_dir, out, "--precision", prec, "--iters", "2")
        runs[prec] = (final_state(out), latest_checkpoint(out / "checkpoints"),
                      [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()])
    f32, b16 = runs["fp32"], runs["bf16"]
    for key in ("params", "params_ema"):
        assert all(t.dtype == torch.float32 for t in b16[0][key].values())
    for st in b16[1]["optimizer_g"]["state"].values():
        assert st["exp_avg"].dtype == st["exp_avg_sq"].dtype == torch.float32
    init = tiny_generator().state_dict()
    step = lambda sd: torch.cat([(sd[k] - init[k]).reshape(-1) for k in init])  # noqa: E731
    cos = F.cosine_similarity(step(f32[0]["params"]), step(b16[0]["params"]), dim=0)
    assert cos > 0.9, float(cos)  # the same update direction
    l32 = [r for r in f32[2] if r.get("iter") == 1 and "l_pix" in r][0]
    l16 = [r for r in b16[2] if r.get("iter") == 1 and "l_pix" in r][0]
    for k in ("l_pix", "l_gan", "l_d_real", "l_d_fake"):
        assert abs(l16[k] - l32[k]) <= 0.02 * abs(l32[k]) + 1e-4, (k, l16[k], l32[k])


def test_perceptual_norm_is_the_targets_mean_feature_and_scale_free():
    from desra_fast.train import DEFAULT_LAYER_WEIGHTS, PerceptualLoss, VGG19Features
    from desra_fast.train.losses import feature_norms

    torch.manual_seed(0)
    vgg = VGG19Features("torchvision")
    gt, x = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    norms = feature_norms(vgg, gt)
    # restated: walk the trunk layer by layer, keep each named conv output
    h, feats = (gt - vgg.mean) / vgg.std, {}
    for i, layer in enumerate(vgg.features):
        h = layer(h)
        for name, idx in (("conv1_2", 2), ("conv2_2", 7), ("conv3_4", 16), ("conv4_4", 25), ("conv5_4", 34)):
            if i == idx:
                feats[name] = h
    for name in DEFAULT_LAYER_WEIGHTS:
        assert norms[name] == pytest.approx(float(feats[name].abs().double().mean()), rel=1e-6)
    loss = PerceptualLoss(vgg, allow_random=True, norm=norms)
    fx = vgg(x, DEFAULT_LAYER_WEIGHTS)
    want = sum(w * float((fx[n] - feats[n]).abs().mean()) / norms[n] for n, w in DEFAULT_LAYER_WEIGHTS.items())
    assert float(loss(x, gt)) == pytest.approx(want, rel=1e-5)
    # features 57.6x larger (the Keras network's case) give the same normalised loss
    vgg.feature_scale = 57.6
    scaled = PerceptualLoss(vgg, allow_random=True, norm=feature_norms(vgg, gt))
    assert float(scaled(x, gt)) == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="norm"):
        PerceptualLoss(vgg, allow_random=True, norm={"conv1_2": 1.0})


def test_outside_weight_l1_and_perceptual_restated():
    """``outside_weight``: the L1 and every VGG layer's distance weight each pixel by 1 inside the
    mask and W outside, a feature cell by the mean weight of the HR pixels it covers (restated here
    with an explicit reshape); W = 1 is the plain loss, bit for bit (the recipe)."""
    from desra_fast.train import DEFAULT_LAYER_WEIGHTS, FinetuneConfig, L1Loss, PerceptualLoss, VGG19Features
    from desra_fast.train.loop import _Trainer

    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 32, 32, dtype=torch.float64), torch.rand(2, 3, 32, 32, dtype=torch.float64)
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.float64)
    mask[0, 0, 3:20, 5:17] = 1
    mask[1, 0, 30:, :] = 1
    w = 6.0
    wmap = _Trainer._content_weight_map(SimpleNamespace(cfg=FinetuneConfig(outside_weight=w)), mask)
    assert torch.equal(wmap, torch.where(mask > 0, 1.0, w).double())
    assert _Trainer._content_weight_map(SimpleNamespace(cfg=FinetuneConfig()), mask) is None
    d = (x - y).abs().numpy()
    m = mask.numpy()
    want = 0.5 * (d * m + w * d * (1 - m)).sum() / d.size
    assert float(L1Loss(0.5)(x, y, wmap)) == pytest.approx(want, rel=1e-12)
    assert torch.equal(L1Loss(0.5)(x, y, torch.ones_like(mask)), L1Loss(0.5)(x, y))

    vgg = VGG19Features("torchvision")
    xf, yf, wf = x.float(), y.float(), wmap.float()
    loss = PerceptualLoss(vgg, allow_random=True)
    fx, fy = vgg(xf, DEFAULT_LAYER_WEIGHTS), vgg(yf, DEFAULT_LAYER_WEIGHTS)
    want = 0.0
    for n, lw in DEFAULT_LAYER_WEIGHTS.items():
        h, wd = fx[n].shape[-2:]
        k = 32 // h
        cell = wf.reshape(2, 1, h, k, wd, k).mean(dim=(3, 5))  # each cell's HR footprint
        want += lw * float(((fx[n] - fy[n]).abs().double() * cell.double()).mean())
    assert float(loss(xf, yf, wf)) == pytest.approx(want, rel=1e-5)
    assert float(loss(xf, yf, torch.ones_like(wf))) == pytest.approx(float(loss(xf, yf)), rel=1e-6)
    # heavier outside, heavier loss where the difference is outside the mask
    assert float(loss(xf, yf, wf)) > float(loss(xf, yf))


def first_step_and_batch(data_dir, out, *args):
    """A 2-iteration run (1 warm-up, no GAN term, fp32) with ``args``: its logged first generator
    step, and that step's batch (LR, pseudo-GT, mask) with the starting generator's output on it,
    drawn again from the same data and seed."""
    from desra_fast.train import FinetuneConfig, FinetuneData, pair_folders

    in_process(data_dir, out, "--iters", "2", "--netd-warmup", "1", "--gan-weight", "0", "--precision", "fp32",
               *args)
    first = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()
             if '"first_generator_step"' in l][0]
    data = FinetuneData(pair_folders(*(data_dir / r for r in ("lr", "gan", "mse", "mask"))), 4, patch=PATCH, seed=3,
                        focus=FinetuneConfig().focus)
    lr, gt, mask = data.batch(1, 4, with_mask=True)
    with torch.no_grad():
        own = tiny_generator()(lr).double()
    return first, gt, mask, own


def test_outside_weight_first_loss_restated(data_dir, tmp_path):
    """First generator step's L1 under ``--outside-target pseudo-gt --outside-weight 3``: the mean
    over every pixel of |G0(lr) - pseudo-GT| weighted 1 inside the mask and 3 outside."""
    first, gt, mask, own = first_step_and_batch(data_dir, tmp_path / "first_w", "--outside-target", "pseudo-gt",
                                                "--outside-weight", "3")
    err = (own - gt.double()).abs()
    want = float(((mask.double() + 3 * (1 - mask.double())) * err).sum() / own.numel())
    assert mask.any() and not mask.all()
    assert first["terms"]["l_pix"] == pytest.approx(want, rel=1e-5)
    assert want > float(err.mean()) * 1.01  # the weight changed the loss


def test_masked_gan_term():
    from desra_fast.train import FinetuneConfig, GANLoss
    from desra_fast.train.loop import _Trainer

    pred = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    w = torch.rand(2, 1, 9, 9, dtype=torch.float64)
    bce = -np.log(1 / (1 + np.exp(-pred.numpy())))  # BCE against 1 on logits
    assert float(GANLoss(0.1)(pred, True, pixel_weight=w)) == pytest.approx(0.1 * float((bce * w.numpy()).mean()))
    mask = torch.zeros(1, 1, 12, 12)
    mask[0, 0, 5, 6] = 1
    cfg = FinetuneConfig(gan_outside=0.25, gan_margin=2)
    got = _Trainer._gan_weight_map(SimpleNamespace(cfg=cfg), mask)[0, 0]
    want = torch.full((12, 12), 0.25)
    want[3:8, 4:9] = 1.0  # the 5x5 square around the masked pixel
    assert torch.equal(got, want)
    assert _Trainer._gan_weight_map(SimpleNamespace(cfg=FinetuneConfig(gan_outside=1.0)), mask) is None  # recipe
    cfg = FinetuneConfig(gan_margin=0)  # default gan_outside 0: only the masked pixels themselves
    assert torch.equal(_Trainer._gan_weight_map(SimpleNamespace(cfg=cfg), mask), mask)


def test_netd_warmup_keeps_the_generator_and_ema_auto(data_dir, tmp_path):
    from desra_fast.train import FinetuneConfig
    from desra_fast.train.checkpoint import load_checkpoint

    assert FinetuneConfig(iters=300).warmup(random_netd=True) == 30
    assert FinetuneConfig(iters=5000).warmup(random_netd=True) == 100
    assert FinetuneConfig(iters=300).warmup(random_netd=False) == 0
    assert FinetuneConfig(iters=300, netd_warmup=7).warmup(random_netd=False) == 7
    assert FinetuneConfig(iters=1000).decay(0) == pytest.approx(0.999)
    assert FinetuneConfig(iters=300).decay(0) ** 300 == pytest.approx(0.999 ** 1000)
    with pytest.raises(ValueError, match="netd_warmup"):
        FinetuneConfig(iters=3, netd_warmup=3).check()

    out = tmp_path / "wu"
    in_process(data_dir, out, "--iters", "3", "--netd-warmup", "2")
    init = tiny_generator().state_dict()
    ck2 = load_checkpoint(out / "checkpoints" / "iter_00000002.pth")
    assert_bit_identical(ck2["net_g"], init, "generator after the warm-up")
    assert_bit_identical(ck2["net_g_ema"], init, "EMA after the warm-up")
    d0 = tiny_discriminator().state_dict()
    assert any(not torch.equal(ck2["net_d"][k], v) for k, v in d0.items() if k.endswith("weight_orig"))
    sd = final_state(out)
    for k, p0 in init.items():  # worker's ema_decay 0.999 over the one generator step
        want = 0.999 * p0.double() + 0.001 * sd["params"][k].double()
        torch.testing.assert_close(sd["params_ema"][k].double(), want, rtol=0, atol=1e-7)
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r for r in log if r.get("iter") == 1][0].keys() >= {"l_d_real", "l_d_fake"}
    assert "l_pix" not in [r for r in log if r.get("iter") == 1][0]
    first = [r for r in log if r.get("first_generator_step")]
    assert len(first) == 1 and first[0]["iter"] == 2
    assert set(first[0]["grad_share"]) == {"l_pix", "l_gan"}
    assert sum(first[0]["grad_share"].values()) == pytest.approx(1.0, abs=1e-6)
    assert all(v > 0 for v in first[0]["grad_norm"].values())


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_outside_target_model_empty_masks_never_move_the_generator(tmp_path, prec):
    """The empty-mask control under the default ``outside_target="model"`` (and no GAN term away
    from the masks): every loss term is exactly zero, so the weights stay bit-identical; under the
    recipe's ``"pseudo-gt"`` the same run drifts (the crop's border and the uint8 target differ
    from the model's own output), which shows the check can fail."""
    import cv2

    dirs = make_folders(tmp_path / "data", seed=2)
    for p in dirs["mask"].iterdir():
        cv2.imwrite(str(p), np.zeros_like(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)))
    init = tiny_generator().state_dict()
    args = ("--precision", prec, "--gan-outside", "0", "--iters", "3", "--netd-warmup", "1")
    in_process(tmp_path / "data", tmp_path / "model", *args)
    sd = final_state(tmp_path / "model")
    assert_bit_identical(sd["params"], init, "generator of the empty-mask control")
    assert_bit_identical(sd["params_ema"], init, "EMA of the empty-mask control")
    log = [json.loads(l) for l in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["l_pix"] == 0 and r["l_gan"] == 0 for r in log if "l_pix" in r)
    in_process(tmp_path / "data", tmp_path / "recipe", *args, "--outside-target", "pseudo-gt")
    moved = final_state(tmp_path / "recipe")["params"]
    assert any(not torch.equal(moved[k], v) for k, v in init.items())


def test_outside_target_model_first_loss_is_the_masked_pixels_only(data_dir, tmp_path):
    """First generator step's L1, restated: the target is the pseudo-GT (MSE-SR) inside the mask
    and the starting generator's output on the same crop outside, so the L1 is the mean of
    |G0(lr) - MSE-SR| over the masked pixels only (divided by every pixel)."""
    first, gt, mask, own = first_step_and_batch(data_dir, tmp_path / "first")
    want = float((mask.double() * (own - gt.double()).abs()).sum() / own.numel())
    assert mask.any() and not mask.all()
    assert first["terms"]["l_pix"] == pytest.approx(want, rel=1e-5)


def test_cli_option_errors(tmp_path, capsys):
    from desra_fast.cli import main

    base = ["finetune", "--model", "nope.pth", "--lr", str(tmp_path), "--gan", str(tmp_path), "--mse",
            str(tmp_path), "--mask", str(tmp_path), "--out", str(tmp_path / "ft")]
    for bad, msg in ((["--focus", "1.5"], "--focus must be in"), (["--gan-outside", "-1"], "--gan-outside"),
                     (["--ema-decay", "1"], "auto"), (["--precision", "fp16"], "invalid choice"),
                     (["--netd-warmup", "-2"], "netd-warmup"), (["--outside-target", "gt"], "invalid choice"),
                     (["--outside-weight", "-1"], "--outside-weight must be >= 0"),
                     (["--outside-weight", "nan"], "outside-weight")):
        with pytest.raises(SystemExit) as exc:
            main(base + bad)
        assert exc.value.code == 2
        assert msg in capsys.readouterr().err
    from desra_fast.train import FinetuneConfig
    with pytest.raises(ValueError, match="outside_target"):
        FinetuneConfig(outside_target="gt").check()
    from desra_fast.cli.finetune import _ema_decay
    assert _ema_decay("auto") == "auto" and _ema_decay("0.99") == 0.99
