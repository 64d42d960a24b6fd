"""``desra-fast report --eval EVAL``: the review site of a ``desra-fast evaluate-finetune`` folder.

Reads the evaluation contract (docs/report.md): ``EVAL/report.json`` (pooled figures, ``per_image``
figures, ``errors``), the masks ``EVAL/before|after/<key>.png`` and the SR images
``EVAL/sr/before|after|mse/<key>.png``, and writes::

    OUT/index.html           pooled figures, the per-image table, per image before | after | MSE
    OUT/e/<n>/{before,after,mse}.jpg   SR images with the regions outlined (scaled)

The figures are shown as the JSON holds them (each table cell keeps the exact value in its
``data-value`` attribute); nothing is recomputed.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import imageio
from ..jobs.evaluate_finetune import REPORT, SR_DIRS
from .site import (MAX_SIDE, ReportError, atomic_site, find_file, outlined, render_page, save_picture,
                   write_text)

BEFORE_RGB = (0, 220, 255)   # regions before the fine-tune, where drawn on the after picture


@dataclass
class EvalReportResult:
    index: Path
    images: int
    errors: int
    missing: int
    seconds: float


def _load(eval_dir: Path) -> dict:
    path = eval_dir / REPORT
    if not path.is_file():
        raise ReportError(f"{path}: no report.json (is --eval the --out folder of desra-fast evaluate-finetune?)")
    try:
        rep = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path}: unreadable ({exc})") from None
    if not isinstance(rep, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(rep).__name__}")
    per_image = rep.get("per_image") or {}
    errors = rep.get("errors") or {}
    if not isinstance(per_image, dict) or not all(isinstance(v, dict) for v in per_image.values()):
        raise ReportError(f"{path}: 'per_image' must map image keys to objects")
    if not isinstance(errors, dict):
        raise ReportError(f"{path}: 'errors' must map image keys to messages")
    return rep


def _read(path: Optional[Path], reader, what: str, missing: list):
    if path is None:
        missing.append(f"{what}: missing")
        return None
    try:
        return reader(path)
    except ValueError as exc:
        missing.append(f"{what}: unreadable ({exc})")
        return None


def _image(eval_dir: Path, site: Path, n: int, key: str) -> dict:
    d = f"e/{n:05d}"
    missing: list = []
    mb = _read(find_file(eval_dir / "before", key, (".png",)), imageio.read_mask, "mask before", missing)
    ma = _read(find_file(eval_dir / "after", key, (".png",)), imageio.read_mask, "mask after", missing)
    pics = {}
    for name in ("before", "after", "mse"):
        img = _read(find_file(eval_dir / SR_DIRS[name], key), imageio.read_rgb, f"SR {name}", missing)
        if img is not None:
            for m in (mb, ma):
                if m is not None and m.shape != img.shape[:2]:
                    missing.append(f"SR {name} {img.shape[1]}x{img.shape[0]} does not match a mask")
                    img = None
                    break
        if img is None:
            continue
        if name == "before":
            img = outlined(img, mb)
        elif name == "after":
            img = outlined(outlined(img, mb, BEFORE_RGB), ma)
        else:
            img = outlined(img, mb, BEFORE_RGB)
        save_picture(site / d / f"{name}.jpg", img, max_side=MAX_SIDE)
        pics[name] = f"{d}/{name}.jpg"
    return {"pics": pics, "missing": missing}


def build_eval_report(eval_dir: os.PathLike, out: Optional[os.PathLike] = None) -> EvalReportResult:
    """Write the review site of an evaluation folder (see the module docstring).

    Args:
        eval_dir: the ``--out`` folder of ``desra-fast evaluate-finetune``.
        out: the site folder (default ``EVAL/report``), replaced atomically.

    Raises:
        ReportError: no or unreadable ``report.json``, or an output folder that cannot be written.
    """
    t0 = time.perf_counter()
    eval_dir = Path(eval_dir)
    rep = _load(eval_dir)
    out = Path(out) if out is not None else eval_dir / "report"
    # Every figure report.json holds, in its order (pooled: the top-level scalars; per image: the
    # union of the images' fields), so figures added to the evaluation (IoU with --gt) show too.
    pooled = {k: v for k, v in rep.items() if k not in ("per_image", "errors") and not isinstance(v, (dict, list))}
    fields = list(dict.fromkeys(f for fig in rep.get("per_image", {}).values() for f in fig))
    with atomic_site(out) as site:
        images = []
        for n, (key, fig) in enumerate(sorted(rep.get("per_image", {}).items())):
            item = _image(eval_dir, site, n + 1, key)
            images.append(dict(item, key=key, figures={f: fig.get(f) for f in fields}))
        data = {"kind": "eval", "eval": str(eval_dir), "pooled": pooled,
                "image_fields": fields, "pooled_fields": list(pooled), "images": images,
                "errors": sorted([str(k), str(v)] for k, v in (rep.get("errors") or {}).items()),
                "generated": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_text(site / "index.html", render_page(f"DeSRA fine-tune evaluation: {eval_dir.name}", "eval.js", data))
    return EvalReportResult(out / "index.html", len(images), len(data["errors"]),
                            sum(1 for it in images if it["missing"]), time.perf_counter() - t0)
