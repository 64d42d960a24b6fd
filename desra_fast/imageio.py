"""Image files in and out: decode GAN-SR/MSE-SR pictures as RGB arrays, write masks atomically.

Reading goes through OpenCV's decoder with ``IMREAD_UNCHANGED`` (as the authors' detection
script does), so 16-bit PNGs stay uint16 and no EXIF rotation is applied. Writing never leaves a
half-written file under a final name: bytes go to a hidden temporary file in the same directory,
are fsync'ed, then ``os.replace``-d onto the final name (atomic on POSIX within a filesystem).
A job killed at any moment therefore leaves either the complete file or a ``*.desra-tmp`` file
that :func:`remove_stale_tmp_files` deletes on the next start.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence, Union

import cv2
import numpy as np

# The one atomic writer and the constants it shares with the readers live in utils; re-exported
# here because every image writer of the package is reached through this module.
from .utils import IMAGE_EXTENSIONS, TMP_SUFFIX, scan_files, write_bytes_atomic

PathLike = Union[str, os.PathLike]


def read_rgb(path: PathLike) -> np.ndarray:
    """Decode an image file into an RGB array.

    Returns an (H, W, 3) C-contiguous array, dtype uint8 (8-bit files) or uint16 (16-bit PNG),
    channels in R, G, B order. Grey images are replicated to 3 channels; an alpha channel is
    dropped. Raises ValueError naming the file if it cannot be read or decoded, or if its sample
    type is neither 8- nor 16-bit.
    """
    img = _decode(path, cv2.IMREAD_UNCHANGED)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: unsupported sample type {img.dtype} (expected 8- or 16-bit)")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"{path}: unsupported number of channels {channels}")


def read_labels(path: PathLike) -> np.ndarray:
    """Read a segmentation label map: (H, W) uint8, one ADE20K label (0..149) per pixel.

    The file must be a single-channel 8-bit image holding label values (not a colour palette
    rendering); raises ValueError otherwise.
    """
    img = _decode(path, cv2.IMREAD_UNCHANGED)
    if img.ndim == 3 and _is_palette_png(path):
        # A palette ('P' mode) PNG, the usual way segmentation outputs are saved: OpenCV expands
        # the palette to colours; the label values are the palette indices, which PIL returns.
        img = _palette_indices(path)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(
            f"{path}: a label map must be a single-channel 8-bit image of label values, "
            f"got shape {img.shape} dtype {img.dtype}"
        )
    return np.ascontiguousarray(img)


def _is_palette_png(path: PathLike) -> bool:
    """PNG colour type 3 (indexed): byte 25 of the file, in the IHDR chunk."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return False
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[25] == 3


def _palette_indices(path: PathLike) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a test/dev dependency
        raise ValueError(f"{path}: palette PNG label maps need pillow (pip install pillow)") from exc
    with Image.open(path) as im:
        if im.mode != "P":
            raise ValueError(f"{path}: expected a palette PNG, PIL reads mode {im.mode}")
        return np.asarray(im, dtype=np.uint8)


def read_mask(path: PathLike) -> np.ndarray:
    """Read a mask file as the authors' metric scripts do: ``cv2.imread(path, IMREAD_GRAYSCALE)``.

    Returns (H, W) uint8 (artifact pixels are 255 in masks written by desra-fast).
    """
    return _decode(path, cv2.IMREAD_GRAYSCALE)


def _decode(path: PathLike, flags: int) -> np.ndarray:
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise ValueError(f"{path}: empty file")
    img = cv2.imdecode(data, flags)
    if img is None:
        raise ValueError(f"{path}: not a decodable image (corrupt or unsupported format)")
    return img


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """Encode a (H, W) boolean (or 0/1) mask as an 8-bit greyscale PNG with values 0/255."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    img = np.where(mask.astype(bool, copy=False), np.uint8(255), np.uint8(0))
    # Level 1: masks are mostly runs of 0/255, so fast compression already gives small files.
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV does not fail on 2-D uint8
        raise ValueError("PNG encoding of the mask failed")
    return buf.tobytes()


def rgb_to_jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 RGB picture as JPEG."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def write_mask_png(path: PathLike, mask: np.ndarray, *, fsync: bool = True) -> None:
    """Atomically write a (H, W) bool mask as a 0/255 PNG at ``path``."""
    write_bytes_atomic(path, mask_to_png_bytes(mask), fsync=fsync)


def remove_stale_tmp_files(root: PathLike) -> int:
    """Delete every ``*.desra-tmp`` file under ``root`` (left by a killed job); returns the count."""
    return scan_files(root)[1]


def list_images(root: PathLike, exclude: Sequence[PathLike] = ()) -> Dict[str, List[str]]:
    """Find image files below ``root`` (recursively, following directory symlinks).

    Returns {key: [relative paths]} where the relative path uses '/' separators and the key is
    that path without its extension, so ``n01440764/x.JPEG`` and a mask ``n01440764/x.png``
    share the key ``n01440764/x``. More than one path under a key means an ambiguous pair.
    Hidden files and directories (name starting with '.') are skipped, and so are the
    directories in ``exclude`` (e.g. an output folder placed inside an input folder).
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a directory")
    skip = {os.path.realpath(d) for d in exclude}
    found: Dict[str, List[str]] = {}
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(dirpath, d)) not in skip)
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(files):
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            rel = rel.replace(os.sep, "/")
            key = rel[: len(rel) - len(ext)]
            found.setdefault(key, []).append(rel)
    return found
