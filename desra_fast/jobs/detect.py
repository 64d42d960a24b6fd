"""The detection job behind ``desra-fast detect``: GAN-SR / MSE-SR pairs of two folders ->
full-size 0/255 masks (and overlays) on the crash-safe job engine.

For every pair found at the same relative path (extension ignored) under the two folders (flat,
or nested class folders such as ImageNet val): reader threads decode the pair (and its label map
with ``seg_dir``), :func:`desra_fast.detect` runs on same-size batches, writer threads write the
overlay ``OUT_DIR/overlays/<relative path>.jpg`` (with ``overlay=True``) and then the mask
``OUT_DIR/<relative path>.png`` (its completion marker), and one JSON line per pair is appended
to ``OUT_DIR/manifest.jsonl``. Failures of single pairs (unreadable or corrupt file, missing
partner, size mismatch, ambiguous names, images under 11x11...) are recorded with an ``error``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import imageio
from .engine import FolderJob, Item, JobResult, RunOptions, format_summary as _format_summary, run_job as _run
from .store import MANIFEST, JobError

OVERLAY_DIR = "overlays"


@dataclass
class JobConfig:
    """Settings of one ``desra-fast detect`` run (see :func:`run_job`)."""

    gan_dir: str
    mse_dir: str
    out_dir: str
    seg_dir: Optional[str] = None
    seg_model: Optional[str] = None  # segment GAN-SR with this ADE20K segmenter (instead of seg_dir)
    threshold: float = 0.7
    area_threshold: int = 4000
    window: str = "gaussian"
    backend: str = "auto"
    workers: int = 2
    overlay: bool = False
    retry_failed: bool = False
    progress: Optional[bool] = None  # None: only when stderr is a terminal
    fsync: bool = True

    def detection_settings(self) -> Dict[str, object]:
        """The settings that change mask content (stored in OUT_DIR/.desra-fast-job.json)."""
        out = {"threshold": float(self.threshold), "area_threshold": int(self.area_threshold),
               "window": self.window, "seg": self.seg_dir is not None or self.seg_model is not None}
        if self.seg_model is not None:
            from .sources import file_fingerprint

            out["seg_model"] = file_fingerprint(self.seg_model) if os.path.exists(self.seg_model) else self.seg_model
        return out

    def options(self) -> RunOptions:
        return RunOptions(workers=self.workers, retry_failed=self.retry_failed, progress=self.progress,
                          fsync=self.fsync)


@dataclass
class Pair:
    key: str                  # relative path without extension, '/'-separated
    gan: Optional[str]        # relative paths under the input folders (None if missing)
    mse: Optional[str]
    seg: Optional[str] = None
    error: Optional[str] = None  # set when the pair cannot be processed (found while planning)

    @property
    def mask(self) -> str:
        return self.key + ".png"

    @property
    def overlay(self) -> str:
        return f"{OVERLAY_DIR}/{self.key}.jpg"


def non_mask_dirs(folder: str) -> List[str]:
    """The folders of a ``desra-fast detect`` output folder (recognised by its manifest) that hold
    no masks (the overlay pictures), for readers of mask folders to skip; [] for other folders."""
    if os.path.isfile(os.path.join(folder, MANIFEST)):
        return [os.path.join(folder, OVERLAY_DIR)]
    return []


def find_pairs(gan_dir: str, mse_dir: str, seg_dir: Optional[str] = None,
               exclude: Sequence[str] = ()) -> List[Pair]:
    """Pair the images of the two folders by relative path without extension (sorted by key).

    Pairs that cannot be processed carry an ``error`` (missing partner or label map, several
    files with the same name and different extensions). Folders in ``exclude`` (the output
    folder, if it lies inside an input folder) are not searched."""
    gan = imageio.list_images(gan_dir, exclude)
    mse = imageio.list_images(mse_dir, exclude)
    seg = imageio.list_images(seg_dir, exclude) if seg_dir is not None else None
    pairs = []
    for key in sorted(gan.keys() | mse.keys()):
        g, m = gan.get(key), mse.get(key)
        p = Pair(key, g[0] if g else None, m[0] if m else None)
        if g is None:
            p.error = f"missing partner: {m[0]} is in the MSE folder but no {key}.* in the GAN folder"
        elif m is None:
            p.error = f"missing partner: {g[0]} is in the GAN folder but no {key}.* in the MSE folder"
        elif len(g) > 1 or len(m) > 1:
            p.error = f"ambiguous name: several files for {key}: {sorted(g + m)}"
        elif seg is not None:
            s = seg.get(key)
            if not s:
                p.error = f"missing label map: no {key}.* in the segmentation folder"
            elif len(s) > 1:
                p.error = f"ambiguous name: several label maps for {key}: {sorted(s)}"
            else:
                p.seg = s[0]
        pairs.append(p)
    return pairs


def read_pair(gan_path: str, mse_path: str, seg_path: Optional[str] = None):
    """Decode a GAN-SR / MSE-SR pair (and label map) for detection: (gan, mse, seg or None),
    same shape and dtype (an 8-bit image beside a 16-bit one is widened exactly, v -> 257 v).
    Raises ValueError on a size mismatch or an undecodable file."""
    gan = imageio.read_rgb(gan_path)
    mse = imageio.read_rgb(mse_path)
    if gan.shape != mse.shape:
        raise ValueError(f"size mismatch: GAN-SR is {gan.shape[1]}x{gan.shape[0]}, "
                         f"MSE-SR is {mse.shape[1]}x{mse.shape[0]} (W x H)")
    if gan.dtype != mse.dtype:
        gan, mse = (g.astype(np.uint16) * 257 if g.dtype == np.uint8 else g for g in (gan, mse))
    seg = None
    if seg_path is not None:
        seg = imageio.read_labels(seg_path)
        if seg.shape != gan.shape[:2]:
            raise ValueError(f"size mismatch: label map is {seg.shape[1]}x{seg.shape[0]}, "
                             f"images are {gan.shape[1]}x{gan.shape[0]} (W x H)")
    return gan, mse, seg


def mask_stats(mask: np.ndarray) -> Dict[str, object]:
    """Manifest statistics of a (H, W) bool mask: ``artifact_fraction`` (share of the image
    marked), ``regions`` (8-connected regions) and ``areas`` (their pixel counts, largest first)."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    areas = sorted((int(a) for a in stats[1:, cv2.CC_STAT_AREA]), reverse=True)
    return {"artifact_fraction": float(np.count_nonzero(mask)) / mask.size, "regions": int(n - 1),
            "areas": areas}


def encode_mask_outputs(mask: np.ndarray, gan: np.ndarray, mse: np.ndarray, mask_path: str,
                        overlay_path: Optional[str]):
    """Files ([(relative path, bytes)]) of a detection: the overlay JPEG (if a path is given)
    and the 0/255 mask PNG."""
    files = []
    if overlay_path is not None:
        from ..overlay import make_overlay

        files.append((overlay_path, imageio.rgb_to_jpeg_bytes(make_overlay(gan, mse, mask))))
    files.append((mask_path, imageio.mask_to_png_bytes(mask)))
    return files


def make_detector(backend: str) -> Callable:
    """``detect_fn`` for :func:`run_job`: :func:`desra_fast.detect` on numpy batches, or, for
    ``backend`` "triton"/"cuda", on torch tensors moved to the GPU (results back to numpy).

    Raises JobError when the backend cannot run here (so that the job fails once, clearly,
    instead of once per pair)."""
    from ..api import detect
    from ..backends import host_data_device

    try:
        device = host_data_device(backend)
    except (ValueError, RuntimeError) as exc:
        raise JobError(f"--backend {backend}: {exc}") from None
    if device is None:
        return detect
    import torch

    def detect_torch(gan, mse, seg=None, **kw):
        # (N, H, W, 3) numpy -> (N, 3, H, W) strided views of the tensors on the device
        g = torch.from_numpy(gan).to(device).permute(0, 3, 1, 2)
        m = torch.from_numpy(mse).to(device).permute(0, 3, 1, 2)
        s = torch.from_numpy(seg).to(device) if seg is not None else None
        mask, counts = detect(g, m, s, **kw)
        counts = counts.cpu().numpy() if hasattr(counts, "cpu") else np.asarray(counts)
        return mask.cpu().numpy(), counts

    return detect_torch


class DetectJob(FolderJob):
    """``desra-fast detect`` as a :class:`~desra_fast.jobs.FolderJob`."""

    name = "detect"
    noun = "pair"

    def __init__(self, cfg: JobConfig, detect_fn: Optional[Callable] = None):
        self.cfg = cfg
        self.detect_fn = detect_fn
        self.segmenter = None

    def validate(self) -> None:
        cfg = self.cfg
        for name, d in (("--gan", cfg.gan_dir), ("--mse", cfg.mse_dir), ("--seg", cfg.seg_dir)):
            if d is not None and not os.path.isdir(d):
                raise JobError(f"{name} {d}: not a directory")
        if cfg.workers < 1:
            raise JobError(f"--workers must be >= 1, got {cfg.workers}")
        if cfg.seg_model is not None and cfg.seg_dir is not None:
            raise JobError("give --seg SEG_DIR (label maps) or --seg-model PATH (segment GAN-SR), not both")
        if cfg.seg_model is not None and not os.path.exists(cfg.seg_model):
            raise JobError(f"--seg-model {cfg.seg_model}: no such file or folder")
        for name, d in (("--gan", cfg.gan_dir), ("--mse", cfg.mse_dir), ("--seg", cfg.seg_dir)):
            # Masks written into an input folder would be read back as inputs (and PNG inputs
            # taken for finished masks): the output must be a folder of its own.
            if d is not None and os.path.realpath(cfg.out_dir) == os.path.realpath(d):
                raise JobError(f"--out {cfg.out_dir} is the {name} folder; give the masks a folder of their own")

    def settings(self):
        return self.cfg.detection_settings()

    def plan(self) -> List[Item]:
        cfg = self.cfg
        items = []
        for p in find_pairs(cfg.gan_dir, cfg.mse_dir, cfg.seg_dir, exclude=[cfg.out_dir]):
            fields = {"gan": p.gan, "mse": p.mse}
            if p.seg is not None:
                fields["seg"] = p.seg
            inputs = ()
            if p.error is None:
                inputs = (os.path.join(cfg.gan_dir, p.gan), os.path.join(cfg.mse_dir, p.mse),
                          os.path.join(cfg.seg_dir, p.seg) if p.seg is not None else None)
            outputs = (p.overlay, p.mask) if cfg.overlay else (p.mask,)
            items.append(Item(p.mask, outputs, fields, tuple(x for x in inputs if x), p.error, extra=inputs))
        return items

    def setup(self) -> None:
        if self.detect_fn is None:
            self.detect_fn = make_detector(self.cfg.backend)
        if self.cfg.seg_model is not None and self.segmenter is None:
            from ..models import load_segmenter

            try:
                self.segmenter = load_segmenter(self.cfg.seg_model)
            except Exception as exc:
                from .engine import describe

                raise JobError(f"cannot load the segmenter {self.cfg.seg_model}: {describe(exc)}") from exc

    def read(self, item: Item):
        return read_pair(*item.extra)

    def info(self, item, data):
        return {"size": list(data[0].shape[:2])}

    def batch_key(self, item, data):
        gan, _, seg = data
        return (gan.shape, gan.dtype.str, seg is not None)

    def compute(self, items, datas):
        cfg = self.cfg
        gan = np.stack([d[0] for d in datas])
        mse = np.stack([d[1] for d in datas])
        seg = np.stack([d[2] for d in datas]) if datas[0][2] is not None else None
        if self.segmenter is not None:
            seg = self.segmenter.segment(gan)  # (N, H, W) ADE20K labels of GAN-SR
        masks, counts = self.detect_fn(gan, mse, seg, threshold=cfg.threshold, area_threshold=cfg.area_threshold,
                                       window=cfg.window, backend=cfg.backend, return_counts=True)
        return [(np.asarray(masks[i], dtype=bool), int(counts[i])) for i in range(len(datas))]

    def encode(self, item, data, result):
        mask, count = result
        overlay = item.outputs[0] if self.cfg.overlay else None
        files = encode_mask_outputs(mask, data[0], data[1], item.key, overlay)
        fields = {"artifact_fraction": float(np.count_nonzero(mask)) / mask.size, "regions": count}
        if overlay is not None:
            fields["overlay"] = overlay
        return files, fields

    def recover(self, item, out_dir: Path):
        mask = imageio.read_mask(out_dir / item.key) != 0
        st = mask_stats(mask)
        return {"size": list(mask.shape), "artifact_fraction": st["artifact_fraction"], "regions": st["regions"]}

    def summary_lines(self):
        cfg = self.cfg
        lines = [f"  masks:    {cfg.out_dir}/<relative path>.png"]
        if cfg.overlay:
            lines.append(f"  overlays: {os.path.join(cfg.out_dir, OVERLAY_DIR)}/<relative path>.jpg")
        lines.append(f"  manifest: {os.path.join(cfg.out_dir, MANIFEST)}")
        return lines


def run_job(cfg: JobConfig, detect_fn: Optional[Callable] = None, log=sys.stderr) -> JobResult:
    """Run (or resume) a detection job.

    ``detect_fn(gan, mse, seg, *, threshold, area_threshold, window, backend, return_counts=True)``
    defaults to :func:`desra_fast.detect`; it gets (N, H, W, 3) batches of same-size pairs and
    must return ((N, H, W) bool masks, (N,) region counts).
    Raises JobError if the job cannot start; per-pair failures are in the result instead.
    """
    return _run(DetectJob(cfg, detect_fn), cfg.out_dir, cfg.options(), log=log)


def format_summary(cfg: JobConfig, res: JobResult, max_errors: int = 20) -> str:
    """Human-readable end-of-job summary."""
    return _format_summary(DetectJob(cfg), res, max_errors)
