"""Deterministic test images for the DeSRA detector: (GAN-SR, MSE-SR) pairs that look like the
real thing.

MSE-SR outputs are smooth (blurred detail, flat regions); GAN-SR outputs share the content but add
high-frequency texture, and in places hallucinate textures the MSE output does not have (the
artifacts DeSRA detects). The generators below model that: a real photo from ``skimage.data``
(bundled with scikit-image, no download) is blurred for the MSE side; the GAN side is the same
blurred photo, mildly sharpened, plus random patches of oriented stripes / noise / checkerboards of
varied size (so that some regions survive the area filter and some do not).

Everything is seeded; the same arguments give the same arrays. Images are HxWx3 uint8 RGB.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A photo from skimage.data as HxWx3 uint8 RGB (grey photos are replicated), read-only."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=None)
def real_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The bundled real (gan, mse) pair samples/{gan,mse}/NAME.png as HxWx3 uint8 RGB."""
    out = []
    for kind in ("gan", "mse"):
        bgr = cv2.imread(str(SAMPLES / kind / f"{name}.png"), cv2.IMREAD_COLOR)
        assert bgr is not None, f"missing sample {kind}/{name}.png"
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        rgb.setflags(write=False)
        out.append(rgb)
    return out[0], out[1]


def fit(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop of img to h x w (resizing up first if it is too small), float64."""
    H, W = img.shape[:2]
    s = max(h / H, w / W)
    if s > 1:
        img = cv2.resize(img, (int(np.ceil(W * s)) + 1, int(np.ceil(H * s)) + 1), interpolation=cv2.INTER_CUBIC)
        H, W = img.shape[:2]
    y = int(rng.integers(0, H - h + 1))
    x = int(rng.integers(0, W - w + 1))
    return img[y:y + h, x:x + w].astype(np.float64)


def texture(rng: np.random.Generator, h: int, w: int, kind: str | None = None) -> np.ndarray:
    """A zero-mean h x w x 3 high-frequency pattern (GAN-like hallucinated texture)."""
    kind = kind or rng.choice(["stripes", "noise", "checker", "blobs"])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "stripes":
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(2.2, 6.0)
        t = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 6.3))
        t = t[..., None] * rng.uniform(0.6, 1.0, size=3)
    elif kind == "noise":
        t = rng.standard_normal((h, w, 3)) * 0.6 + rng.standard_normal((h, w, 1)) * 0.6
    elif kind == "checker":
        p = int(rng.integers(1, 4))
        t = (((yy // p) + (xx // p)) % 2 * 2 - 1)[..., None] * np.ones(3)
    else:  # fine blobs: band-passed noise
        n = rng.standard_normal((h, w)).astype(np.float32)
        t = cv2.GaussianBlur(n, (0, 0), 0.8) - cv2.GaussianBlur(n, (0, 0), 2.0)
        t = (t / (t.std() + 1e-9))[..., None].astype(np.float64) * np.ones(3)
    return t * rng.uniform(12, 45)


def soft_box(h: int, w: int, feather: float) -> np.ndarray:
    """h x w alpha in [0,1], 1 inside and fading out over `feather` pixels at the edges."""
    if feather <= 0:
        return np.ones((h, w))
    y = np.minimum(np.arange(h), np.arange(h)[::-1]) + 0.5
    x = np.minimum(np.arange(w), np.arange(w)[::-1]) + 0.5
    return np.clip(np.minimum.outer(y, x) / feather, 0, 1)


def add_patches(gan: np.ndarray, rng: np.random.Generator, n: int, min_side: int, max_side: int) -> None:
    """Paint n textured patches into gan (float64 HxWx3) in place."""
    H, W = gan.shape[:2]
    for _ in range(n):
        ph = int(rng.integers(min(min_side, H), min(max_side, H) + 1))
        pw = int(rng.integers(min(min_side, W), min(max_side, W) + 1))
        y = int(rng.integers(0, H - ph + 1))
        x = int(rng.integers(0, W - pw + 1))
        alpha = soft_box(ph, pw, rng.uniform(0, 4))[..., None]
        gan[y:y + ph, x:x + pw] += alpha * texture(rng, ph, pw)


def photo_pair(h: int, w: int, seed: int, base: str | None = None, n_patches: int | None = None,
               min_side: int | None = None, max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(gan, mse) uint8 HxWx3 from a blurred photo; GAN = sharpened + textured patches."""
    rng = np.random.default_rng(seed)
    base = base or PHOTOS[seed % len(PHOTOS)]
    img = fit(photo(base), h, w, rng)
    sigma = rng.uniform(1.2, 2.5)
    mse = cv2.GaussianBlur(img, (0, 0), sigma)
    # GAN: sharper version of the same content (unsharp mask of the blurred image) + textures
    detail = img - mse
    gan = mse + rng.uniform(0.3, 0.9) * detail
    side = min(h, w)
    if n_patches is None:
        n_patches = int(rng.integers(2, 8)) + (h * w) // 30000
    min_side = min_side if min_side is not None else max(3, side // 25)
    max_side = max_side if max_side is not None else max(min_side + 1, min(side // 3, 160))
    add_patches(gan, rng, n_patches, min_side, max_side)
    return to_u8(gan), to_u8(mse)


def synthetic_pair(h: int, w: int, seed: int, n_patches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(gan, mse) uint8 HxWx3 with smooth gradients and large flat (often bright) regions in the
    MSE image and textures in parts of the GAN image: the float32 cancellation worst case
    (textured GAN over flat, bright MSE)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    mse = np.empty((h, w, 3))
    for c in range(3):
        a, b = rng.uniform(-0.3, 0.3, size=2)
        mse[..., c] = rng.uniform(60, 200) + a * yy * 200 / max(h, 1) + b * xx * 200 / max(w, 1)
    # flat plateaus (constant value, including near-white and near-black)
    for _ in range(int(rng.integers(1, 5))):
        ph, pw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        mse[y:y + ph, x:x + pw] = rng.choice([0.0, 3.0, 128.0, 250.0, 255.0, rng.uniform(0, 255)])
    mse = np.round(np.clip(mse, 0, 255))
    gan = mse.copy()
    if n_patches is None:
        n_patches = int(rng.integers(1, 6)) + (h * w) // 25000
    side = min(h, w)
    add_patches(gan, rng, n_patches, max(2, side // 20), max(3, min(side // 2, 140)))
    return to_u8(gan), to_u8(mse)


def to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def blocky_seg(h: int, w: int, seed: int, block: int | None = None, labels=None) -> np.ndarray:
    """Random blocky ADE20K label map (h, w) uint8: nearest-neighbour upsampled random labels,
    by default drawn from classes with a range of weights (sky 1.0 ... bulletin board 2.22)."""
    rng = np.random.default_rng(seed)
    block = block or int(rng.integers(4, max(5, min(h, w) // 3 + 1)))
    labels = np.arange(150) if labels is None else np.asarray(labels)
    gh, gw = -(-h // block), -(-w // block)
    grid = rng.choice(labels, size=(gh, gw)).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(grid, block, 0), block, 1)[:h, :w])


# Sizes used across the tests: odd and even, from the smallest legal image (11x11, a 1x1 D map)
SMALL_SIZES = [(11, 11), (11, 12), (12, 11), (13, 17), (16, 16), (21, 40), (33, 31), (48, 64),
               (64, 47), (97, 120), (128, 128), (150, 201)]
MEDIUM_SIZES = [(240, 320), (257, 383), (300, 451)]
LARGE_SIZES = [(1000, 1000), (1023, 977)]
