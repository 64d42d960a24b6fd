"""Training pairs (LR, pseudo-GT) for the fine-tune: from folders or from a ``desra-fast run`` output.

Inputs, paired by relative path without extension (as ``desra-fast detect`` pairs files):

- ``lr``: the low-resolution images the models were run on;
- ``gan``, ``mse``: the GAN-SR and MSE-SR outputs (``scale`` times the LR size);
- ``mask``: the detected artifact masks (0/255 PNG, SR size).

Each image's pseudo-GT ``M * mse + (1 - M) * gan`` (:func:`desra_fast.pseudo_gt`) is built once
and kept in memory with its LR image (the paper fine-tunes on 50 images). Sample number ``k``
(counting from the start of training over every process) is fully determined by ``(seed, k)``:
epoch ``k // n`` visits the images in a permutation drawn from ``(seed, epoch)``, and the crop
position and flips/rotation of sample ``k`` come from a generator seeded with ``(seed, k)``.
So the data order needs no state beyond the count of samples drawn, a resumed run draws exactly
what the uninterrupted run would have, and ``R`` processes drawing interleaved shares of each
batch see the same samples as one process.

Artifact-focused crops (``focus=F``): sample ``k`` is *focused* when a draw from ``(seed, k, 3)``
falls below ``F`` and the data set has a detected region; a focused crop is centred (clamped to the
image) on a masked pixel chosen by picking one of the 8-connected regions of *all* the images
uniformly, then one of that region's pixels uniformly. So a share ``F`` of all crops holds an
artifact however few of the images have one (a run's folder is mostly images without detections,
and the crops of those teach the generator to stay as it is). Regions are weighted equally, not by
area, because the method is judged per region (a region is removed or not) and a large region
would otherwise take most focused crops; a uniform pixel inside the region still spreads the crops
over its extent. The other ``1 - F`` of the samples are the uniform crops above (the permutation's
image), drawn exactly as without ``focus`` (the uniform path's draws are unchanged).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..imageio import list_images, read_mask, read_rgb
from ..utils import read_list

ROLES = ("lr", "gan", "mse", "mask")


class DataError(ValueError):
    """Training data that cannot be used (missing partners, sizes that do not fit, no images)."""


@dataclass(frozen=True)
class Sample:
    """One training image: its key (relative path without extension) and its four files."""

    key: str
    lr: str
    gan: str
    mse: str
    mask: str


def pair_folders(lr: os.PathLike, gan: os.PathLike, mse: os.PathLike, mask: os.PathLike,
                 only: Optional[Sequence[str]] = None) -> List[Sample]:
    """Pair the files of the four folders by relative path without extension.

    ``only``: restrict to these keys (a ``desra-fast select`` list). Raises DataError listing the
    keys that lack a partner or are ambiguous; keys present in every folder are used.
    """
    dirs = dict(zip(ROLES, (os.fspath(lr), os.fspath(gan), os.fspath(mse), os.fspath(mask))))
    found: Dict[str, Dict[str, List[str]]] = {}
    for role, d in dirs.items():
        if not os.path.isdir(d):
            raise DataError(f"--{role} {d}: not a directory")
        found[role] = list_images(d)
    keys = set(found["lr"]) if only is None else set(only)
    problems = []
    samples = []
    for key in sorted(keys):
        paths = {}
        for role in ROLES:
            hits = found[role].get(key, [])
            if not hits:
                problems.append(f"{key}: no {role} file under {dirs[role]}")
            elif len(hits) > 1:
                problems.append(f"{key}: ambiguous {role} files {sorted(hits)}")
            else:
                paths[role] = os.path.join(dirs[role], hits[0])
        if len(paths) == len(ROLES):
            samples.append(Sample(key, **paths))
    if problems and only is not None:
        raise DataError("training data incomplete:\n  " + "\n  ".join(problems[:20])
                        + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""))
    if not samples:
        raise DataError("no training images: no key has all of lr, gan, mse and mask files"
                        + (":\n  " + "\n  ".join(problems[:10]) if problems else ""))
    return samples


def from_run(run_dir: os.PathLike, list_file: Optional[os.PathLike] = None,
             lr_dir: Optional[os.PathLike] = None) -> List[Sample]:
    """Samples from a ``desra-fast run --save-sr png`` output folder.

    Uses ``RUN/gan``, ``RUN/mse``, ``RUN/masks`` and the LR folder the run read (``lr_dir`` when
    given, else the one recorded in the run's settings file), restricted to ``list_file``.
    """
    run = Path(run_dir)
    for sub in ("gan", "mse", "masks"):
        if not (run / sub).is_dir():
            raise DataError(f"--run {run}: no {sub}/ folder (run 'desra-fast run ... --save-sr png' "
                            "to keep the SR outputs the fine-tune needs)")
    lr = Path(lr_dir) if lr_dir is not None else _recorded_lr_dir(run)
    only = read_list(list_file) if list_file is not None else None
    if only == []:
        raise DataError(f"{list_file}: empty list")
    return pair_folders(lr, run / "gan", run / "mse", run / "masks", only=only)


def _recorded_lr_dir(run: Path) -> Path:
    """The LR folder recorded by ``desra-fast run`` in its job settings file."""
    for name in (".desra-fast-run.json", ".desra-fast-job.json"):
        p = run / name
        if p.is_file():
            try:
                settings = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DataError(f"{p}: unreadable settings ({exc})") from None
            for holder in (settings, settings.get("settings", {}) if isinstance(settings, dict) else {}):
                if isinstance(holder, dict):
                    for key in ("lr_dir", "lr", "input_dir", "input"):
                        if isinstance(holder.get(key), str):
                            d = Path(holder[key])
                            return d if d.is_absolute() else (run / d)
    raise DataError(f"--run {run}: the run's settings do not name its LR folder; pass --lr DIR too")


def usm_sharp(img: np.ndarray, weight: float = 0.5, radius: int = 50, threshold: float = 10) -> np.ndarray:
    """Real-ESRGAN's unsharp masking of the training target (BasicSR ``usm_sharp``).

    ``sharp = clip(img + weight * (img - blur), 0, 1)`` blended in by a blurred mask of the
    pixels whose residual exceeds ``threshold`` / 255; blur: cv2 Gaussian of size ``radius``
    (made odd: 51), sigma from the size (8.0), reflect-101 borders.

    Args:
        img: (H, W, 3) float32 in [0, 1].

    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    import cv2

    if radius % 2 == 0:
        radius += 1
    img = np.ascontiguousarray(img, dtype=np.float32)
    blur = cv2.GaussianBlur(img, (radius, radius), 0)
    residual = img - blur
    mask = (np.abs(residual) * 255 > threshold).astype(np.float32)
    soft = cv2.GaussianBlur(mask, (radius, radius), 0)
    sharp = np.clip(img + weight * residual, 0, 1)
    return (soft * sharp + (1 - soft) * img).astype(np.float32)


def _regions(mask: np.ndarray) -> List[np.ndarray]:
    """Flat pixel indices (int64) of each 8-connected region of a (H, W) mask, in label order."""
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return []
    flat = labels.reshape(-1)
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(1, n + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n - 1)]


def _to_float(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8/uint16 -> (3, H, W) float32 in [0, 1]."""
    scale = 255.0 if img.dtype == np.uint8 else 65535.0
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(scale)


class FinetuneData:
    """Deterministic random paired crops of (LR, pseudo-GT) with flips and 90-degree rotations.

    Args:
        samples: from :func:`pair_folders` or :func:`from_run`.
        scale: the SR factor (SR size = scale * LR size).
        patch: HR patch size (256 in the recipe); the LR patch is ``patch // scale``.
        seed: the data seed.
        progress: show a progress bar while the images are read.
        focus: fraction in [0, 1] of the samples cropped around a detected region (see the
            module docstring); 0: uniform crops only.
        gt_usm: sharpen the pseudo-GT with Real-ESRGAN's :func:`usm_sharp` (off by default:
            the pseudo-GT is the model's own output outside the regions, and sharpening it
            asks the generator to change there too).

    Raises DataError naming every file that is unreadable, the sizes do not fit
    (SR = scale x LR, mask = SR size) or an image is smaller than the LR patch.
    """

    def __init__(self, samples: Sequence[Sample], scale: int, patch: int = 256, seed: int = 0,
                 progress: bool = False, focus: float = 0.0, gt_usm: bool = False):
        if not (isinstance(focus, (int, float)) and 0.0 <= float(focus) <= 1.0):
            raise DataError(f"focus must be a fraction in [0, 1], got {focus!r}")
        self.focus, self.gt_usm = float(focus), bool(gt_usm)
        if patch % scale or patch // scale < 1:
            raise DataError(f"patch {patch} must be a positive multiple of the scale {scale}")
        if patch % 8:
            raise DataError(f"patch {patch} must be a multiple of 8 (the discriminator downsamples 3 times)")
        if not samples:
            raise DataError("no training images")
        self.samples = list(samples)
        self.scale, self.patch, self.lr_patch, self.seed = int(scale), int(patch), int(patch) // scale, int(seed)
        self._lr: List[np.ndarray] = []
        self._gt: List[np.ndarray] = []
        self._mask: List[np.ndarray] = []
        self._regions: List[List[np.ndarray]] = []
        from tqdm import tqdm

        problems = []
        for s in tqdm(self.samples, desc="reading training pairs", unit="img", disable=not progress,
                      leave=False):
            try:
                lr, gt, mask = self._load(s)
            except DataError as exc:
                problems.append(str(exc))
                continue
            self._lr.append(lr)
            self._gt.append(gt)
            self._mask.append(mask)
            self._regions.append(_regions(mask))
        if problems:
            raise DataError(f"{len(problems)} of {len(self.samples)} training image(s) unusable:\n  "
                            + "\n  ".join(problems[:20]))
        #: (image index, region index) of every detected region of the data set, for focused crops
        self._all_regions = [(i, r) for i, regs in enumerate(self._regions) for r in range(len(regs))]

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, s: Sample) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        from ..repair import pseudo_gt

        try:
            lr, gan, mse, mask = read_rgb(s.lr), read_rgb(s.gan), read_rgb(s.mse), read_mask(s.mask)
        except ValueError as exc:
            raise DataError(f"{s.key}: {exc}") from None
        h, w = lr.shape[:2]
        want = (h * self.scale, w * self.scale)
        for name, img in (("gan", gan), ("mse", mse)):
            if img.shape[:2] != want:
                raise DataError(f"{s.key}: {name} {getattr(s, name)} is {img.shape[1]}x{img.shape[0]}, "
                                f"expected {want[1]}x{want[0]} ({self.scale} x the LR {w}x{h})")
        if mask.shape != want:
            raise DataError(f"{s.key}: mask {s.mask} is {mask.shape[1]}x{mask.shape[0]}, expected "
                            f"{want[1]}x{want[0]}")
        if gan.dtype != mse.dtype:
            raise DataError(f"{s.key}: gan is {gan.dtype} but mse is {mse.dtype}")
        if h < self.lr_patch or w < self.lr_patch:
            raise DataError(f"{s.key}: LR image {w}x{h} is smaller than the LR patch "
                            f"{self.lr_patch} (= --patch {self.patch} / scale {self.scale})")
        gt = _to_float(pseudo_gt(gan, mse, mask))
        if self.gt_usm:
            gt = np.ascontiguousarray(usm_sharp(gt.transpose(1, 2, 0)).transpose(2, 0, 1))
        return _to_float(lr), gt, (mask != 0).astype(np.uint8)

    def regions(self, index: int) -> List[np.ndarray]:
        """Flat SR-pixel indices of each detected region of image ``index`` (8-connected)."""
        return self._regions[index]

    def order(self, epoch: int) -> np.ndarray:
        """The image order of ``epoch``."""
        return np.random.default_rng([self.seed, int(epoch), 1]).permutation(len(self.samples))

    def crop_of(self, k: int) -> Dict[str, int]:
        """Where sample ``k`` comes from: ``index`` (the image), LR ``top``/``left``,
        ``hflip``/``vflip``/``rot`` (0/1) and ``focused`` (1: centred on a masked pixel)."""
        n = len(self.samples)
        idx = int(self.order(k // n)[k % n])
        rng = np.random.default_rng([self.seed, int(k), 2])
        h, w = self._lr[idx].shape[1:]
        p, s = self.lr_patch, self.scale
        top = int(rng.integers(0, h - p + 1))
        left = int(rng.integers(0, w - p + 1))
        hflip, vflip, rot = (int(v) for v in rng.random(3) < 0.5)
        focused = 0
        if self.focus > 0 and self._all_regions:
            frng = np.random.default_rng([self.seed, int(k), 3])
            if frng.random() < self.focus:
                idx, r = self._all_regions[int(frng.integers(len(self._all_regions)))]
                region = self._regions[idx][r]
                h, w = self._lr[idx].shape[1:]
                y, x = divmod(int(region[int(frng.integers(len(region)))]), w * s)
                top = min(max(y // s - p // 2, 0), h - p)
                left = min(max(x // s - p // 2, 0), w - p)
                focused = 1
        return {"index": idx, "top": top, "left": left, "hflip": hflip, "vflip": vflip, "rot": rot,
                "focused": focused}

    def sample(self, k: int, with_mask: bool = False):
        """Sample number ``k``: (LR (3, p, p), pseudo-GT (3, P, P)) float32 in [0, 1]; with
        ``with_mask`` also the mask crop (1, P, P) float32 0/1."""
        c = self.crop_of(k)
        p, s, top, left = self.lr_patch, self.scale, c["top"], c["left"]
        lr = self._lr[c["index"]][:, top:top + p, left:left + p]
        gt = self._gt[c["index"]][:, top * s:(top + p) * s, left * s:(left + p) * s]
        m = self._mask[c["index"]][None, top * s:(top + p) * s, left * s:(left + p) * s]
        if c["hflip"]:
            lr, gt, m = lr[:, :, ::-1], gt[:, :, ::-1], m[:, :, ::-1]
        if c["vflip"]:
            lr, gt, m = lr[:, ::-1, :], gt[:, ::-1, :], m[:, ::-1, :]
        if c["rot"]:
            lr, gt, m = lr.transpose(0, 2, 1), gt.transpose(0, 2, 1), m.transpose(0, 2, 1)
        if with_mask:
            return np.ascontiguousarray(lr), np.ascontiguousarray(gt), m.astype(np.float32)
        return np.ascontiguousarray(lr), np.ascontiguousarray(gt)

    def batch(self, iteration: int, total: int, rank: int = 0, world: int = 1, with_mask: bool = False):
        """This process's share of batch ``iteration`` (0-based) of ``total`` samples:
        samples ``iteration*total + rank*total/world ...`` as torch tensors (B, 3, p, p),
        (B, 3, P, P); with ``with_mask`` also the masks (B, 1, P, P) float32 0/1."""
        import torch

        if total % world:
            raise DataError(f"total batch {total} is not divisible by the {world} processes")
        per = total // world
        first = iteration * total + rank * per
        pairs = [self.sample(first + j, with_mask) for j in range(per)]
        return tuple(torch.from_numpy(np.stack([p[i] for p in pairs])) for i in range(len(pairs[0])))


__all__ = ["Sample", "FinetuneData", "pair_folders", "from_run", "read_list", "DataError", "usm_sharp"]
