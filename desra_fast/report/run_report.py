"""``desra-fast report --run RUN``: the review site of a ``desra-fast run`` output folder.

Reads ``RUN/manifest.jsonl`` once (streamed, see :mod:`.runindex`) and the files of the top N
images only (``masks/``, ``gan/``, ``mse/``, ``overlays/``, ``seg/``), and writes::

    OUT/index.html            summary, gallery, detail view, curation, full ranking table
    OUT/img/<rank>/...        per top image: thumb.jpg, gan.jpg/mse.jpg/fix.jpg (scaled),
                              r<k>_{gan,mse,fix}.jpg and r<k>_mask.png (region crops, full SR size)
    OUT/rows/<n>.js           the full ranking in chunks of 5,000 rows (loaded by the page)

Picture files are named by rank, never by the image's own name, so no file name reaches a path.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from .. import imageio
from ..jobs.select import SCORES
from ..jobs.store import MANIFEST
from ..repair import repair
from ..weights import class_names
from . import runindex
from .site import (MAX_SIDE, THUMB_WIDTH, ReportError, atomic_site, find_file, render_page, save_picture,
                   script_json, write_text)

MAX_REGIONS = 4       # region crops per image (largest first)
CROP_MAX = 384        # a crop larger than this (either side) is centred on its region and cut
CROP_PAD = 16


@dataclass
class ReportResult:
    index: Path           # OUT/index.html: the page to open
    images: int           # images in the manifest (last line per path)
    top: int              # images in the gallery
    corrupt_lines: int
    missing: int          # gallery images with at least one missing file
    seconds: float


def _key(rec: dict) -> str:
    """``<rel>``: the manifest path ``masks/<rel>.png`` without folder and extension."""
    p = rec["path"]
    p = p[len("masks/"):] if p.startswith("masks/") else p
    return os.path.splitext(p)[0]


def _read(path: Optional[Path], reader):
    if path is None:
        return None, "missing"
    try:
        return reader(path), None
    except ValueError as exc:
        return None, f"unreadable ({exc})"


def _crop_box(x, y, w, h, H, W):
    """A box around a region, padded, at most CROP_MAX per side (centred on the region)."""
    cx, cy = x + w / 2, y + h / 2
    bw, bh = min(w + 2 * CROP_PAD, CROP_MAX, W), min(h + 2 * CROP_PAD, CROP_MAX, H)
    x0 = int(min(max(0, round(cx - bw / 2)), W - bw))
    y0 = int(min(max(0, round(cy - bh / 2)), H - bh))
    return x0, y0, int(bw), int(bh)


def _image_assets(run: Path, site: Path, rank: int, rec: dict, has_seg: bool) -> dict:
    """Pictures of one gallery image under ``site/img/<rank>/`` and its card/detail data."""
    key = _key(rec)
    d = f"img/{rank:05d}"
    folder = site / d
    folder.mkdir(parents=True)
    mask, mask_err = _read(find_file(run / "masks", key, (".png",)), imageio.read_mask)
    gan, gan_err = _read(find_file(run / "gan", key), imageio.read_rgb)
    mse, mse_err = _read(find_file(run / "mse", key), imageio.read_rgb)
    ovl, ovl_err = _read(find_file(run / "overlays", key, (".jpg",)), imageio.read_rgb)
    missing = [f"{what}: {err}" for what, err in (("mask", mask_err), ("GAN-SR", gan_err), ("MSE-SR", mse_err),
                                                  ("overlay", ovl_err)) if err]
    if mask is not None and gan is not None and mask.shape != gan.shape[:2]:
        missing.append(f"mask {mask.shape[1]}x{mask.shape[0]} does not match GAN-SR {gan.shape[1]}x{gan.shape[0]}")
        gan = mse = None
    if gan is not None and mse is not None and gan.shape != mse.shape:
        missing.append("MSE-SR size differs from GAN-SR")
        mse = None
    item = {"rank": rank, "lr": rec.get("lr"), "key": key, "fraction": rec.get("artifact_fraction"),
            "regions": rec.get("regions"), "areas": (rec.get("areas") or [])[:20], "d": rec.get("d"),
            "size": rec.get("size"), "missing": missing, "thumb": None, "full": None, "crops": [], "classes": []}
    thumb = ovl if ovl is not None else gan if gan is not None else mask
    if thumb is not None:
        save_picture(folder / "thumb.jpg", thumb, max_side=None if thumb.shape[1] <= THUMB_WIDTH else
                     round(max(thumb.shape[:2]) * THUMB_WIDTH / thumb.shape[1]), quality=85)
        item["thumb"] = f"{d}/thumb.jpg"
    if gan is None or mse is None or mask is None:
        return item
    m = mask > 0
    fix = repair(gan, mse, m)
    for name, img in (("gan", gan), ("mse", mse), ("fix", fix)):
        save_picture(folder / f"{name}.jpg", img, max_side=MAX_SIDE)
    item["full"] = {n: f"{d}/{n}.jpg" for n in ("gan", "mse", "fix")}
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    order = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:MAX_REGIONS]
    H, W = m.shape
    for k, i in enumerate(order):
        x, y, w, h, area = (int(v) for v in stats[i])
        x0, y0, bw, bh = _crop_box(x, y, w, h, H, W)
        sl = (slice(y0, y0 + bh), slice(x0, x0 + bw))
        crop = {"x": x0, "y": y0, "w": bw, "h": bh, "area": area}
        for name, img in (("gan", gan), ("mse", mse), ("fix", fix)):
            save_picture(folder / f"r{k}_{name}.jpg", img[sl], quality=92)
            crop[name] = f"{d}/r{k}_{name}.jpg"
        save_picture(folder / f"r{k}_mask.png", np.where(labels[sl] == i, 255, 0).astype(np.uint8))
        crop["mask"] = f"{d}/r{k}_mask.png"
        item["crops"].append(crop)
    if has_seg:
        item["classes"] = _classes(run, key, m, missing)
    return item


def _classes(run: Path, key: str, m: np.ndarray, missing: List[str]) -> list:
    """[[ADE20K class name, region pixels], ...] of one image, most pixels first."""
    seg, err = _read(find_file(run / "seg", key, (".png",)), imageio.read_labels)
    if seg is None or seg.shape != m.shape:
        missing.append(f"label map: {err or 'size differs from the mask'}")
        return []
    counts = np.bincount(seg[m].ravel(), minlength=256)
    names = class_names()
    return [[names[c] if c < len(names) else f"label {c}", int(counts[c])]
            for c in np.argsort(-counts, kind="stable") if counts[c] > 0]


def _write_chunks(idx: runindex.RunIndex, site: Path) -> int:
    (site / "rows").mkdir()
    chunk, n = [], 0
    for row in runindex.table_rows(idx):
        chunk.append(row)
        if len(chunk) == runindex.TABLE_CHUNK:
            write_text(site / "rows" / f"{n:05d}.js", f"desraRows({n},{script_json(chunk)});\n")
            chunk, n = [], n + 1
    if chunk or n == 0:
        write_text(site / "rows" / f"{n:05d}.js", f"desraRows({n},{script_json(chunk)});\n")
        n += 1
    return n


def build_run_report(run: os.PathLike, out: Optional[os.PathLike] = None, *, top: int = 200,
                     by: str = "fraction", train: int = 50, log=None) -> ReportResult:
    """Write the review site of a run folder (see the module docstring).

    Args:
        run: the ``--out`` folder of ``desra-fast run`` (must hold ``manifest.jsonl``).
        out: the site folder (default ``RUN/report``), replaced atomically.
        top: images in the gallery (>= 1); by: ranking, a key of ``desra_fast.jobs.select.SCORES``;
        train: the curated lists' default ``--train`` (as ``desra-fast select --train``).

    Raises:
        ReportError: no manifest, bad arguments, or the output folder cannot be written.
    """
    t0 = time.perf_counter()
    run = Path(run)
    if by not in SCORES:
        raise ReportError(f"--by {by!r}: expected one of {', '.join(sorted(SCORES))}")
    if top < 1 or train < 0:
        raise ReportError("--top must be >= 1 and --train >= 0")
    manifest = run / MANIFEST
    if not manifest.is_file():
        raise ReportError(f"{manifest}: no manifest (is --run the OUT folder of desra-fast run?)")
    out = Path(out) if out is not None else run / "report"
    has_seg = (run / "seg").is_dir()
    with atomic_site(out) as site:
        idx = runindex.build_index(manifest, site / ".index.sqlite", by)
        try:
            records = runindex.top_records(idx, top)
            hist = runindex.histograms(idx)
            chunks = _write_chunks(idx, site)
            items = []
            for i, rec in enumerate(records):
                items.append(_image_assets(run, site, i + 1, rec, has_seg))
                if log is not None and (i + 1) % 50 == 0:
                    print(f"desra-fast report: {i + 1}/{len(records)} gallery images", file=log)
        finally:
            idx.close()
            os.unlink(site / ".index.sqlite")
        classes = {}
        for it in items:
            for name, px in it["classes"]:
                classes[name] = classes.get(name, 0) + px
        data = {"kind": "run", "run": str(run), "by": by, "top": top, "train": train,
                "id": hashlib.sha256(os.fsencode(f"{run.resolve()}|{by}|{top}")).hexdigest()[:16],
                "counts": dict(idx.counts, lines=idx.lines, corrupt_lines=idx.corrupt), "hist": hist,
                "has_seg": has_seg, "classes": sorted(classes.items(), key=lambda kv: -kv[1]),
                "chunks": chunks, "columns": runindex.TABLE_COLUMNS, "items": items,
                "generated": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_text(site / "index.html", render_page(f"DeSRA report: {run.name}", "run.js", data))
    return ReportResult(out / "index.html", idx.counts["images"], len(items), idx.corrupt,
                        sum(1 for it in items if it["missing"]), time.perf_counter() - t0)


__all__ = ["build_run_report", "ReportResult", "ReportError"]
