"""The segmentation job behind ``desra-fast segment``: a folder of images -> ADE20K label maps.

For every image under ``in_dir`` (nested folders allowed), ``OUT/<relative path without
extension>.png`` is a palette PNG whose pixel values are the ADE20K labels 0..149 (readable by
``desra-fast detect --seg OUT``), and one JSON line goes to ``OUT/manifest.jsonl`` (image size,
the five most frequent classes). Crash safety, resume and failure recording are those of
:mod:`desra_fast.jobs.engine`; the settings check refuses a restart with other weights, scale or
preprocessing.
"""
from __future__ import annotations

import os

import numpy as np

from .. import imageio
from .engine import FolderJob, Item
from .store import JobError


class SegmentJob(FolderJob):
    """The :class:`~desra_fast.jobs.FolderJob` of ``desra-fast segment``.

    Args:
        in_dir: folder of images (PNG/JPEG/WebP, 8/16-bit).
        out_dir: output folder (the label maps and the manifest).
        segmenter: a loaded :class:`desra_fast.models.Segmenter` (its ``segment`` maps an
            (N, H, W, 3) uint8/uint16 batch to (N, H, W) uint8 labels 0..149).
        batch_size: same-size images per network call (>= 1).
    """

    name, noun = "segment", "image"

    def __init__(self, in_dir: str, out_dir: str, segmenter, batch_size: int = 1):
        self.in_dir, self.out_dir, self.segmenter = in_dir, out_dir, segmenter
        self.max_batch = int(batch_size)

    def validate(self):
        if not os.path.isdir(self.in_dir):
            raise JobError(f"-i {self.in_dir}: not a directory")

    def settings(self):
        seg = self.segmenter
        return {"model_sha256": seg.info.get("source_sha256"), "scale": list(seg.scale or ()),
                "preprocess": seg.preprocess}

    def exclude(self):
        return (self.out_dir,)

    def plan(self):
        items = []
        for key, rels in sorted(imageio.list_images(self.in_dir, self.exclude()).items()):
            it = Item(key, (key + ".png",), {"input": rels[0]}, (os.path.join(self.in_dir, rels[0]),))
            if len(rels) > 1:
                it.error = f"ambiguous name: several files for {key}: {sorted(rels)}"
            items.append(it)
        return items

    def read(self, item):
        return imageio.read_rgb(item.inputs[0])

    def batch_key(self, item, data):
        return data.shape, str(data.dtype)

    def info(self, item, data):
        return {"size": [int(data.shape[1]), int(data.shape[0])]}

    def compute(self, items, datas):
        return list(self.segmenter.segment(np.stack(datas)))

    def encode(self, item, data, result):
        from ..models.segmenter import label_png_bytes

        classes = np.bincount(result.ravel(), minlength=1)
        top = [int(c) for c in np.argsort(classes)[::-1][:5] if classes[c] > 0]
        return [(item.outputs[0], label_png_bytes(result))], {"top_classes": top}

    def summary_lines(self):
        return [f"label maps: {self.out_dir}/<path>.png (palette PNG, values = ADE20K labels)"]


__all__ = ["SegmentJob"]
