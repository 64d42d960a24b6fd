"""The super-resolution job behind ``desra-fast sr``: every image of a file or folder upscaled
with one model, as Real-ESRGAN's ``inference_realesrgan.py`` does, on the crash-safe engine.

Output names follow Real-ESRGAN: ``OUTPUT/<relative dir>/<name>_<suffix>.<ext>`` (no ``_`` part
for an empty suffix); ``ext="auto"`` keeps the input's extension, except that RGBA images are
written as PNG. Grayscale stays grayscale, RGBA keeps an upscaled alpha, 16-bit stays 16-bit
(PNG; JPEG output is 8-bit), as :meth:`desra_fast.models.SRModel.enhance` does.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from .. import imageio
from .engine import FolderJob, Item
from .store import JobError

EXTS = ("auto", "png", "jpg")


class SRJob(FolderJob):
    """``desra-fast sr`` as a :class:`~desra_fast.jobs.FolderJob`.

    Args:
        input: an image file or a folder (searched recursively; nested folders are kept).
        output: output folder. model: anything :func:`desra_fast.models.load_sr` accepts.
        outscale: final scale (Lanczos resize of the model's output when it differs), None =
            the model's. tile, tile_pad, pre_pad, precision, alpha_upsampler: as
            :meth:`~desra_fast.models.SRModel.enhance` (``tile="auto"`` fits ``max_memory``).
            ext, suffix: output names.
        mse_model, repair, feather, seg_model, threshold, area_threshold: with ``repair=True``
            every image is upscaled by both models and DeSRA's artifact regions of the GAN
            output are replaced by the MSE-SR output (:class:`desra_fast.Upscaler`); the
            manifest line gains ``replaced_px``, ``blended_px`` and ``replaced_fraction``.
    """

    name = "sr"
    noun = "image"
    task_max_items = 4

    def __init__(self, input: str, output: str, model: str, *, outscale: Optional[float] = None, tile=0,
                 tile_pad: Optional[int] = None, pre_pad: Optional[int] = None, precision: str = "fp32",
                 alpha_upsampler: str = "model", ext: str = "auto", suffix: str = "out", device: str = "cpu",
                 runtime: str = "auto", max_memory: Optional[str] = None, mse_model: Optional[str] = None,
                 repair: bool = False, feather: int = 0, seg_model: Optional[str] = None, threshold: float = 0.7,
                 area_threshold: int = 4000):
        self.input, self.output, self.model_path = input, output, model
        self.outscale, self.tile, self.tile_pad, self.pre_pad = outscale, tile, tile_pad, pre_pad
        self.precision, self.alpha_upsampler, self.ext, self.suffix = precision, alpha_upsampler, ext, suffix
        self.device, self.runtime = device, runtime
        self.max_memory, self.mse_model, self.repair, self.feather, self.seg_model = \
            max_memory, mse_model, repair, feather, seg_model
        self.detect_options = {"threshold": threshold, "area_threshold": area_threshold}
        self.model = None

    def validate(self) -> None:
        if not os.path.exists(self.input):
            raise JobError(f"--input {self.input}: no such file or folder")
        if os.path.isdir(self.input) and os.path.realpath(self.input) == os.path.realpath(self.output):
            raise JobError(f"--output {self.output} is the input folder; give the results a folder of their own")
        from .sources import resolve_model

        self.model_path = resolve_model(self.model_path, "--model")
        if not self.repair and (self.mse_model or self.seg_model or self.feather):
            raise JobError("--mse-model, --seg-model and --feather belong to --repair")
        if self.repair:
            if not self.mse_model:
                raise JobError("--repair needs --mse-model (the pixel-loss model whose output replaces the artifacts)")
            self.mse_model = resolve_model(self.mse_model, "--mse-model")
            if self.seg_model is not None and not os.path.isfile(self.seg_model) and not os.path.isdir(self.seg_model):
                raise JobError(f"--seg-model {self.seg_model}: no such file or folder")
        if self.ext not in EXTS:
            raise JobError(f"--ext must be one of {EXTS}, got {self.ext!r}")
        if "/" in self.suffix or os.sep in self.suffix:
            raise JobError(f"--suffix must not contain a path separator, got {self.suffix!r}")

    def settings(self):
        from .sources import file_fingerprint

        return {"model": file_fingerprint(self.model_path), "outscale": self.outscale, "tile": self.tile, "tile_pad": self.tile_pad,
                "pre_pad": self.pre_pad, "precision": self.precision, "alpha_upsampler": self.alpha_upsampler,
                "ext": self.ext, "suffix": self.suffix, "runtime": self.runtime,
                # only present when used, so that earlier runs resume with the same settings
                **({"max_memory": self.max_memory} if self.tile == "auto" else {}),
                **({"repair": {"mse_model": file_fingerprint(self.mse_model), "feather": self.feather,
                               **self.detect_options,
                               "seg_model": file_fingerprint(self.seg_model) if self.seg_model else None}}
                   if self.repair else {})}

    def plan(self) -> List[Item]:
        if os.path.isdir(self.input):
            root = self.input
            rels = sorted(r for rs in imageio.list_images(root, exclude=[self.output]).values() for r in rs)
        else:
            root, rels = os.path.dirname(self.input) or ".", [os.path.basename(self.input)]
        items, seen = [], {}
        for rel in rels:
            stem, ext = os.path.splitext(rel)
            name = f"{stem}_{self.suffix}" if self.suffix else stem
            out_ext = ext[1:] if self.ext == "auto" else self.ext
            if out_ext.lower() != "png" and has_alpha(os.path.join(root, rel)):
                out_ext = "png"  # as Real-ESRGAN: RGBA results are always PNG
            out = f"{name}.{out_ext}"
            err = None
            if out in seen:
                err = f"two inputs would write {out}: {seen[out]} and {rel}"
            seen.setdefault(out, rel)
            items.append(Item(out, (out,), {"input": rel}, (os.path.join(root, rel),), err, extra=name))
        return items

    def setup(self) -> None:
        if self.model is not None:
            return
        from ..models import load_sr

        try:
            # On CPU the precision goes to the loader: auto keeps torch for a non-fp32 request and
            # OpenVINO takes it as its inference hint (a runner's precision is fixed when built).
            prec = ({"precision": self.precision}
                    if str(self.device).startswith("cpu") and self.runtime in ("auto", "openvino") else {})
            self.model = load_sr(self.model_path, device=self.device, runtime=self.runtime, **prec)
            if self.repair:
                from ..models.upscaler import Upscaler

                seg = None
                if self.seg_model:
                    from ..models import load_segmenter

                    seg = load_segmenter(self.seg_model, device=self.device, runtime=self.runtime)
                mse = load_sr(self.mse_model, device=self.device, runtime=self.runtime)
                self.upscaler = Upscaler(self.model, mse, seg, feather=self.feather, **self._sr_options(),
                                         **self.detect_options)
        except Exception as exc:
            from .engine import describe

            raise JobError(f"cannot load the model {self.model_path}: {describe(exc)}") from exc

    def read(self, item: Item):
        import cv2

        img = imageio._decode(item.inputs[0], cv2.IMREAD_UNCHANGED)
        if img.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{item.inputs[0]}: unsupported sample type {img.dtype} (expected 8- or 16-bit)")
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        elif not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1)):
            raise ValueError(f"{item.inputs[0]}: unsupported number of channels {img.shape[2]}")
        return img

    def info(self, item, data):
        mode = "L" if data.ndim == 2 or data.shape[2] == 1 else ("RGBA" if data.shape[2] == 4 else "RGB")
        return {"size": list(data.shape[:2]), "mode": mode, "bits": 16 if data.dtype == np.uint16 else 8}

    def compute(self, items, datas):
        if not self.repair:
            return [self.model.enhance(d, self.outscale, alpha_upsampler=self.alpha_upsampler, **self._sr_options())
                    for d in datas]
        from ..repair import repair_stats

        out = []
        for d in datas:
            fixed, mask = self.upscaler.upscale(d, self.outscale, alpha_upsampler=self.alpha_upsampler)
            out.append((fixed, repair_stats(mask, self.feather)))
        return out

    def _sr_options(self) -> dict:
        # a runtime runner (ONNX Runtime, TensorRT) has its precision fixed when it is built
        prec = "fp32" if getattr(self.model, "runner", None) is not None else self.precision
        return dict(tile=self.tile, tile_pad=self.tile_pad, pre_pad=self.pre_pad, precision=prec,
                    max_memory=self.max_memory)

    def encode(self, item, data, result):
        import cv2

        out = item.outputs[-1]
        ext = out.rsplit(".", 1)[-1].lower()
        result, extra = result if isinstance(result, tuple) else (result, {})
        img = result
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
        elif img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if ext in ("jpg", "jpeg") and img.dtype == np.uint16:
            img = np.round(img.astype(np.float32) / 257.0).astype(np.uint8)  # JPEG is 8-bit
        if ext in ("jpg", "jpeg") and img.ndim == 3 and img.shape[2] == 4:
            raise ValueError("the result has an alpha channel, which JPEG cannot hold; use --ext png")
        ok, buf = cv2.imencode("." + ext, img)
        if not ok:
            raise ValueError(f"cannot encode the result as .{ext}")
        return [(out, buf.tobytes())], {"output": out, "out_size": list(result.shape[:2]), **extra}

    def summary_lines(self):
        return [f"  results:  {self.output}/", f"  manifest: {os.path.join(self.output, 'manifest.jsonl')}"]


def has_alpha(path: str) -> bool:
    """Whether an image file has an alpha channel (header only; False if unreadable: the read
    then reports the problem)."""
    if not path.lower().endswith((".png", ".webp")):
        return False
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info)
    except Exception:
        return False
