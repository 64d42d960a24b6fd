"""desra_fast.d_map against the independent float64 oracle: max |D - D_ref| <= 1e-5 everywhere,
including the float32 cancellation worst case (flat bright MSE vs textured GAN)."""
from __future__ import annotations

import numpy as np
import pytest

import desra_fast
import images as I
from oracle import oracle_dmap

TOL = 1e-5


def check_dmap(got, gan, mse, window, scale=1.0, label=""):
    H, W = gan.shape[:2]
    assert isinstance(got, np.ndarray), type(got)
    assert got.dtype == np.float32, got.dtype
    assert got.shape == (H - 10, W - 10), got.shape
    assert np.isfinite(got).all(), f"{label}: non-finite D"
    ref = oracle_dmap(np.asarray(gan, np.float64) * scale, np.asarray(mse, np.float64) * scale, window)
    err = np.abs(got.astype(np.float64) - ref)
    assert err.max() <= TOL, (f"{label} {H}x{W} window={window}: max |D - ref| = {err.max():.3g} at "
                              f"{np.unravel_index(err.argmax(), err.shape)} (ref {ref.flat[err.argmax()]:.9f})")
    return ref


@pytest.mark.parametrize("window", ["gaussian", "box"])
@pytest.mark.parametrize("size", I.SMALL_SIZES + I.MEDIUM_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dmap_matches_oracle(size, window):
    h, w = size
    for gen, seed in ((I.photo_pair, 10 + h * w), (I.synthetic_pair, 11 + h * w)):
        gan, mse = gen(h, w, seed)
        got = desra_fast.d_map(gan, mse, window=window, backend="cpu")
        check_dmap(got, gan, mse, window, label=f"{gen.__name__} seed={seed}")


@pytest.mark.slow
@pytest.mark.parametrize("window", ["gaussian", "box"])
def test_dmap_megapixel(window):
    gan, mse = I.synthetic_pair(1001, 1000, 31)
    ref = check_dmap(desra_fast.d_map(gan, mse, window=window, backend="cpu"), gan, mse, window)
    assert ref.min() < 0.1 and ref.max() > 0.999  # both textured and flat regions present


@pytest.mark.parametrize("name", ["rocket", "motorcycle"])
@pytest.mark.parametrize("window", ["gaussian", "box"])
def test_dmap_real_pairs(name, window):
    gan, mse = I.real_pair(name)
    check_dmap(desra_fast.d_map(gan, mse, window=window), gan, mse, window, label=name)


@pytest.mark.parametrize("window", ["gaussian", "box"])
@pytest.mark.parametrize("level", [0, 1, 128, 254, 255])
def test_dmap_flat_mse_vs_textured_gan(level, window):
    """Flat MSE at `level` against extreme GAN texture (random 0/255, stripes at the top of the
    range): the case where float32 E[x^2] - mu^2 cancels catastrophically."""
    rng = np.random.default_rng(level)
    h, w = 70, 90
    mse = np.full((h, w, 3), level, np.uint8)
    gan = mse.copy()
    gan[10:40, 10:60] = rng.choice([0, 255], size=(30, 50, 3)).astype(np.uint8)
    gan[40:70, 30:90] = np.clip(level + rng.integers(-2, 3, size=(30, 60, 3)), 0, 255).astype(np.uint8)
    gan[:, 80:] = 255 - (np.arange(h)[:, None, None] % 2) * rng.integers(1, 4)  # fine stripes near 255
    ref = check_dmap(desra_fast.d_map(gan, mse, window=window), gan, mse, window, label=f"level={level}")
    assert ref.min() < 0.05 and ref.max() > 0.999


@pytest.mark.parametrize("window", ["gaussian", "box"])
def test_dmap_identical_images_is_one(window):
    gan, _ = I.photo_pair(60, 61, 4)
    got = desra_fast.d_map(gan, gan.copy(), window=window)
    check_dmap(got, gan, gan, window)
    assert np.abs(got - 1).max() <= TOL


def test_dmap_is_symmetric_and_channel_order_free():
    gan, mse = I.photo_pair(80, 90, 6)
    a = desra_fast.d_map(gan, mse)
    assert np.abs(desra_fast.d_map(mse, gan) - a).max() <= 2 * TOL  # D_c is symmetric in x, y
    assert np.abs(desra_fast.d_map(gan[..., ::-1], mse[..., ::-1]) - a).max() <= 2 * TOL


def test_dmap_batch_equals_per_image():
    pairs = [I.photo_pair(64, 72, 50 + i) for i in range(4)]
    gan = np.stack([p[0] for p in pairs])
    mse = np.stack([p[1] for p in pairs])
    got = desra_fast.d_map(gan, mse, backend="cpu")
    assert got.shape == (4, 54, 62) and got.dtype == np.float32
    for i in range(4):
        check_dmap(got[i], gan[i], mse[i], "gaussian", label=f"batch item {i}")
        assert np.abs(got[i] - desra_fast.d_map(gan[i], mse[i], backend="cpu")).max() <= 1e-6


def test_dmap_input_formats():
    torch = pytest.importorskip("torch")
    gan, mse = I.photo_pair(45, 52, 9)
    ref = oracle_dmap(gan, mse)
    # uint16
    g16 = gan.astype(np.uint16) * 257
    m16 = mse.astype(np.uint16) * 257
    check_dmap(desra_fast.d_map(g16, m16), g16, m16, "gaussian", scale=255 / 65535, label="uint16")
    # float in [0,1]
    for dt in (np.float32, np.float64, np.float16):
        gf, mf = (gan / 255).astype(dt), (mse / 255).astype(dt)
        check_dmap(desra_fast.d_map(gf, mf), gf, mf, "gaussian", scale=255.0, label=str(dt))
    # grayscale HxW and HxWx1
    check_dmap(desra_fast.d_map(gan[..., 1], mse[..., 1]), gan[..., 1], mse[..., 1], "gaussian", label="gray")
    check_dmap(desra_fast.d_map(gan[..., 1:2], mse[..., 1:2]), gan[..., 1], mse[..., 1], "gaussian", label="HxWx1")
    # RGBA: alpha is ignored
    alpha = np.random.default_rng(0).integers(0, 256, size=gan.shape[:2] + (1,), dtype=np.uint8)
    got = desra_fast.d_map(np.concatenate([gan, alpha], -1), np.concatenate([mse, 255 - alpha], -1))
    assert np.abs(got - ref).max() <= TOL
    # non-contiguous: every other pixel of a larger image, and a Fortran-ordered copy
    big_g, big_m = I.photo_pair(90, 104, 9)
    gs, ms = big_g[::2, ::2], big_m[::2, ::2]
    check_dmap(desra_fast.d_map(gs, ms), gs, ms, "gaussian", label="strided")
    check_dmap(desra_fast.d_map(np.asfortranarray(gan), np.asfortranarray(mse)), gan, mse, "gaussian",
               label="fortran")
    # torch CHW -> torch (h, w) float32
    tg = torch.from_numpy(gan).permute(2, 0, 1)
    tm = torch.from_numpy(mse).permute(2, 0, 1)
    out = desra_fast.d_map(tg, tm)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and tuple(out.shape) == (35, 42)
    assert out.device == tg.device
    assert np.abs(out.numpy() - ref).max() <= TOL
    # torch NCHW float32 in [0,1]
    tgf = (tg.float() / 255)[None]
    tmf = (tm.float() / 255)[None]
    out = desra_fast.d_map(tgf.contiguous(), tmf.contiguous())
    assert tuple(out.shape) == (1, 35, 42)
    ref_f = oracle_dmap(tgf[0].permute(1, 2, 0).double().numpy() * 255, tmf[0].permute(1, 2, 0).double().numpy() * 255)
    assert np.abs(out[0].numpy() - ref_f).max() <= TOL
    # torch bfloat16
    tgb, tmb = tgf.to(torch.bfloat16), tmf.to(torch.bfloat16)
    out = desra_fast.d_map(tgb, tmb)
    ref_b = oracle_dmap(tgb[0].permute(1, 2, 0).double().numpy() * 255, tmb[0].permute(1, 2, 0).double().numpy() * 255)
    assert np.abs(out[0].float().numpy() - ref_b).max() <= TOL


def test_dmap_minimum_size_and_auto_backend():
    gan, mse = I.synthetic_pair(11, 11, 2)
    got = desra_fast.d_map(gan, mse, backend="auto")
    assert got.shape == (1, 1)
    check_dmap(got, gan, mse, "gaussian")
