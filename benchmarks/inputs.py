"""Deterministic, real-looking GAN-SR / MSE-SR benchmark pairs at 0.25, 1, 4 and 16 Mpx.

Why not noise: every stage's cost depends on the content (how many pixels fall under the
threshold, how many components and holes there are, how often the float64 re-check fires near
0.7). Noise or zeros would time a different workload than real images.

How a pair of ``mpx`` megapixels (4:3, e.g. 1732 x 2309 for 4 Mpx) is built:

1. The canvas is tiled with cells of 300-560 px cut (random crop, flip, mild rescale 0.8-1.25)
   from real photographs, so the density of detail per pixel stays that of real photos at every size:
   - about a third of the cells come from the two REAL pairs in ``samples/`` (outputs of
     Real-ESRGAN x4plus = GAN and SRMD x4 = MSE on the same input): gan and mse cells are cut alike;
   - the other cells come from scikit-image photographs (astronaut, coffee, chelsea, rocket,
     motorcycle): GAN = the photo (sharp), MSE = the photo Gaussian-blurred (sigma 1.2), i.e. the
     smoother output a pixel-loss model gives.
2. GAN-like artifacts: in a few elliptical regions (about 12 per Mpx, 25-140 px radii), the GAN
   image gets synthetic high-frequency texture (two oriented gratings of 3-7 px period plus
   band-pass noise, amplitude 10-28 grey levels, soft edges), as GAN-SR models hallucinate.
3. Segmentation: a blocky ADE20K label map (Voronoi cells on a 1/16 grid, upscaled by nearest
   neighbour) with labels drawn from classes common in photos (sky, building, tree, person, ...).

All randomness comes from ``numpy.random.default_rng`` seeded with (size, seed): same pair on every
run and machine. Pairs are cached in memory per process (``make_pair`` is memoised) and returned
read-only so that no benchmark can modify another one's input.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
WEIGHTS_TSV = ROOT / "desra_fast" / "data" / "ade20k_semantic_weights.tsv"

SIZES = (0.25, 1.0, 4.0, 16.0)
"""Benchmark sizes in megapixels (1 Mpx = 10^6 pixels)."""

# ADE20K labels that are common in photographs (label: name), used for the synthetic label maps.
COMMON_LABELS = (2, 1, 4, 12, 6, 9, 0, 3, 13, 16, 17, 20, 21, 25, 26, 29, 34, 46, 52, 60, 68, 90)


@dataclass(frozen=True)
class Pair:
    """One benchmark input: gan, mse (H, W, 3) uint8; seg (H, W) uint8 ADE20K labels 0..149."""
    gan: np.ndarray
    mse: np.ndarray
    seg: np.ndarray
    mpx_nominal: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.gan.shape[:2]

    @property
    def pixels(self) -> int:
        return self.gan.shape[0] * self.gan.shape[1]

    @property
    def mpx(self) -> float:
        """Actual megapixels (H * W / 1e6)."""
        return self.pixels / 1e6

    def __repr__(self) -> str:
        h, w = self.shape
        return f"Pair({self.mpx_nominal:g} Mpx: {h}x{w})"


def shape_for(mpx: float) -> tuple[int, int]:
    """(H, W) of a 3:4 (landscape) image of about ``mpx`` megapixels."""
    h = int(round(math.sqrt(mpx * 1e6 * 3 / 4)))
    w = int(round(mpx * 1e6 / h))
    return h, w


def load_weights() -> np.ndarray:
    """float64 (150,) ADE20K semantic weights W[label] (the ``weight`` column of the bundled TSV)."""
    table = np.genfromtxt(WEIGHTS_TSV, delimiter="\t", names=True, dtype=None, encoding="utf-8")
    # a field of a structured array is a strided view: copy it into a plain contiguous vector
    weights = np.ascontiguousarray(table["weight"], dtype=np.float64)
    if weights.shape != (150,) or not np.array_equal(table["label"], np.arange(150)):
        raise ValueError(f"{WEIGHTS_TSV}: expected labels 0..149 in order")
    return weights


@functools.lru_cache(maxsize=None)
def _sources() -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """(photos, real_pairs): RGB uint8 photographs and real (gan, mse) SR pairs."""
    import skimage.data as data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(),
              data.stereo_motorcycle()[0]]
    photos = [np.ascontiguousarray(p[..., :3]) for p in photos]
    pairs = []
    for gan_path in sorted((SAMPLES / "gan").glob("*.png")):
        gan = cv2.imread(str(gan_path), cv2.IMREAD_COLOR)
        mse = cv2.imread(str(SAMPLES / "mse" / gan_path.name), cv2.IMREAD_COLOR)
        if gan is None or mse is None or gan.shape != mse.shape:
            raise FileNotFoundError(f"missing or mismatched sample pair {gan_path.name} in {SAMPLES}")
        pairs.append((gan[..., ::-1].copy(), mse[..., ::-1].copy()))
    if not pairs:
        raise FileNotFoundError(f"no sample pairs in {SAMPLES}/gan")
    return photos, pairs


def _cut(images: tuple[np.ndarray, ...], ch: int, cw: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random crop (after a random rescale and flip) of each image, of size ch x cw."""
    h, w = images[0].shape[:2]
    scale = max(rng.uniform(0.8, 1.25), ch / h, cw / w)
    nh, nw = max(ch, int(math.ceil(h * scale))), max(cw, int(math.ceil(w * scale)))
    y0 = int(rng.integers(0, nh - ch + 1))
    x0 = int(rng.integers(0, nw - cw + 1))
    flip = bool(rng.integers(0, 2))
    out = []
    for img in images:
        if (nh, nw) != (h, w):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        cell = img[y0:y0 + ch, x0:x0 + cw]
        out.append(cell[:, ::-1] if flip else cell)
    return out


def _splits(total: int, lo: int, hi: int, rng: np.random.Generator) -> list[int]:
    """Cut ``total`` into lengths in [lo, hi] (the last one absorbs the rest)."""
    sizes, left = [], total
    while left > hi:
        s = int(rng.integers(lo, hi + 1))
        if left - s < lo:
            s = left - lo
        sizes.append(s)
        left -= s
    sizes.append(left)
    return sizes


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (h, w, 3) zero-mean GAN-like high-frequency texture, amplitude ~1."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = np.zeros((h, w), np.float32)
    for _ in range(2):
        period = rng.uniform(3.0, 7.0)
        theta = rng.uniform(0, math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        k = 2 * math.pi / period
        tex += np.sin(k * (xx * math.cos(theta) + yy * math.sin(theta)) + phase).astype(np.float32)
    noise = rng.standard_normal((h, w)).astype(np.float32)
    band = noise - cv2.GaussianBlur(noise, (0, 0), 2.0)            # band-pass: keep fine grain
    tex = 0.35 * tex + 1.2 * band
    tint = rng.uniform(0.7, 1.0, size=3).astype(np.float32)          # slightly coloured, like real GAN texture
    return tex[..., None] * tint


def _add_artifacts(gan: np.ndarray, rng: np.random.Generator) -> None:
    """Add synthetic GAN texture in elliptical regions of ``gan`` (float32, in place)."""
    h, w = gan.shape[:2]
    count = max(3, int(round(12 * h * w / 1e6)))
    for _ in range(count):
        ry, rx = (int(v) for v in rng.integers(25, 141, size=2))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = max(0, cy - ry), min(h, cy + ry + 1)
        x0, x1 = max(0, cx - rx), min(w, cx + rx + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        r2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        weight = np.clip((1.0 - r2) * 3.0, 0.0, 1.0)[..., None]        # soft edge
        amp = rng.uniform(10.0, 28.0)
        gan[y0:y1, x0:x1] += amp * weight * _texture(y1 - y0, x1 - x0, rng)


def _label_map(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Blocky (H, W) uint8 ADE20K label map: Voronoi regions on a 1/16 grid, upscaled (nearest)."""
    gh, gw = max(2, h // 16), max(2, w // 16)
    n = max(4, int(round(6 * h * w / 1e6)) + 4)
    seeds = rng.uniform(0, 1, size=(n, 2)) * (gh, gw)
    labels = rng.choice(np.asarray(COMMON_LABELS, np.uint8), size=n)
    yy, xx = np.mgrid[0:gh, 0:gw]
    d2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    small = labels[np.argmin(d2, axis=-1)].astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


@functools.lru_cache(maxsize=None)
def make_pair(mpx: float, seed: int = 0) -> Pair:
    """The benchmark pair of about ``mpx`` megapixels (memoised; arrays are read-only)."""
    if not mpx > 0:
        raise ValueError(f"mpx must be > 0, got {mpx}")
    h, w = shape_for(mpx)
    rng = np.random.default_rng([int(round(mpx * 1000)), seed])
    photos, real_pairs = _sources()
    gan = np.empty((h, w, 3), np.float32)
    mse = np.empty((h, w, 3), np.float32)
    y = 0
    for ch in _splits(h, 300, 560, rng):
        x = 0
        for cw in _splits(w, 300, 560, rng):
            if rng.uniform() < 1 / 3:
                g, m = real_pairs[int(rng.integers(len(real_pairs)))]
                g, m = _cut((g, m), ch, cw, rng)
            else:
                (g,) = _cut((photos[int(rng.integers(len(photos)))],), ch, cw, rng)
                m = cv2.GaussianBlur(g, (0, 0), 1.2, borderType=cv2.BORDER_REFLECT)
            gan[y:y + ch, x:x + cw] = g
            mse[y:y + ch, x:x + cw] = m
            x += cw
        y += ch
    _add_artifacts(gan, rng)
    gan8 = np.clip(np.rint(gan), 0, 255).astype(np.uint8)
    mse8 = np.clip(np.rint(mse), 0, 255).astype(np.uint8)
    seg = _label_map(h, w, rng)
    for a in (gan8, mse8, seg):
        a.setflags(write=False)
    return Pair(gan=gan8, mse=mse8, seg=seg, mpx_nominal=float(mpx))
