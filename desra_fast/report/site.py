"""What both reports share: the page template, data embedding, pictures, the atomic site swap.

A report is a static folder (``index.html`` + pictures + data chunks) that opens from ``file://``
with no network: the CSS and JavaScript are inlined from this package's ``templates/``, the data
is JSON inside a ``<script type="application/json">`` element (every ``<``, ``>``, ``&`` escaped so
no file name can close the element), and the page builds its DOM with ``textContent`` only, so
a hostile file name is shown, never run.
"""
from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import shutil
import uuid
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from ..overlay import to_uint8
from ..utils import write_bytes_atomic

TMP_PREFIX = ".desra-report-tmp-"
OLD_PREFIX = ".desra-report-old-"
# Region outlines drawn on the pictures (RGB).
OUTLINE_RGB = (255, 255, 0)
# Pictures of whole images are shown scaled; region crops are kept at full SR resolution.
MAX_SIDE = 1024
THUMB_WIDTH = 360


class ReportError(RuntimeError):
    """The report cannot be built (no manifest, unreadable report.json, bad output folder)."""


def template(name: str) -> str:
    """Text of a file of ``desra_fast/report/templates`` (package data)."""
    return resources.files("desra_fast.report").joinpath("templates", name).read_text("utf-8")


def clean_json(obj):
    """``obj`` with NaN/inf floats as None (JSON has no such numbers; the page shows 'n/a')."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def script_json(obj) -> str:
    """JSON safe inside a ``<script>`` element or a ``.js`` file: ``<``, ``>``, ``&`` and every
    non-ASCII character escaped, so no string of the data can end the element or start markup."""
    # ensure_ascii: non-ASCII as \uXXXX, so U+2028/U+2029 and names that are not valid Unicode
    # (lone surrogates from undecodable file names) are written too.
    try:
        text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    except ValueError:  # NaN or inf somewhere: the slower cleaning pass
        text = json.dumps(clean_json(obj), allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(title: str, page_js: str, data) -> str:
    """The complete ``index.html``: shared CSS/JS, the page's script and its data, all inline.

    ``title`` is HTML-escaped here; ``data`` goes through :func:`script_json`."""
    import html
    import re

    parts = {"@TITLE@": html.escape(title), "/*@CSS@*/": template("style.css"),
             "/*@COMMON_JS@*/": template("common.js"), "/*@PAGE_JS@*/": template(page_js),
             "@DATA@": script_json(data)}
    # one pass: a placeholder-like string inside a title or the data is never substituted
    return re.sub("|".join(re.escape(k) for k in parts), lambda m: parts[m.group(0)], template("page.html"))


def write_text(path: Path, text: str) -> None:
    # "replace": a folder name that is not valid Unicode (in the page title) cannot stop the report
    write_bytes_atomic(path, text.encode("utf-8", "replace"), fsync=False)


def save_picture(path: Path, rgb: np.ndarray, *, max_side: Optional[int] = None, quality: int = 90) -> list:
    """Write an (H, W, 3) uint8/uint16 RGB picture (JPEG by ``path``'s suffix, else PNG),
    scaled down (area filter) so that its longer side is at most ``max_side``.

    Returns the written [height, width]."""
    img = to_uint8(rgb)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    h, w = img.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    if path.suffix == ".jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV does not fail on uint8 RGB
        raise ReportError(f"cannot encode {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return list(img.shape[:2])


def outlined(rgb: np.ndarray, mask: Optional[np.ndarray], color=OUTLINE_RGB) -> np.ndarray:
    """uint8 copy of ``rgb`` (H, W, 3) with the outer contours of ``mask`` (H, W, non-zero =
    region) drawn; thickness grows with the image so it stays visible once scaled."""
    out = to_uint8(rgb).copy()
    if mask is not None and mask.any():
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, max(1, round(max(mask.shape) / 300)))
    return out


def find_file(root: Path, key: str, exts=(".png", ".jpg", ".jpeg", ".webp")) -> Optional[Path]:
    """``root/<key><ext>`` for the first extension that exists (None if none)."""
    for ext in exts:
        p = root / (key + ext)
        if p.is_file():
            return p
    return None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``); False when the
    system cannot (then the caller falls back to two renames)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            return False
        raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Temporary folders of earlier builds of this report that were killed."""
    for p in parent.glob(f"{TMP_PREFIX}{name}-*"):
        pid = p.name.rsplit("-", 2)[-2]
        try:
            os.kill(int(pid), 0)
            continue  # a build still running
        except (ValueError, ProcessLookupError):
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            continue
    for p in parent.glob(f"{OLD_PREFIX}{name}-*"):
        shutil.rmtree(p, ignore_errors=True)


@contextmanager
def atomic_site(out: Path) -> Iterator[Path]:
    """Build a site in a temporary sibling folder and swap it onto ``out`` when done.

    Readers of ``out`` see the previous complete site or the new complete one, never a mix
    (one ``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, with ``out``
    missing for an instant). A build killed at any moment leaves ``out`` as it was and a
    temporary folder that the next build removes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a folder")
    # The swap replaces OUT entirely: never a folder that is not an earlier report (the run
    # folder itself, its parent, a folder of the user's).
    if out.is_dir() and any(out.iterdir()) and not (out / "index.html").is_file():
        raise ReportError(f"{out}: not empty and not a report (no index.html); refusing to replace it")
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent, out.name)
    tmp = parent / f"{TMP_PREFIX}{out.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        if _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old site
            return
        old = parent / f"{OLD_PREFIX}{out.name}-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
