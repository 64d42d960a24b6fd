"""ADE20K segmentation for DeSRA's semantic weights: :func:`load_segmenter` and :class:`Segmenter`.

Reads the two SegFormer checkpoint families users have (network :mod:`.segformer`, key filters
:mod:`.segformer_keys`, files through the one reader :func:`.checkpoint.read_weights`):

- **mmsegmentation** ``.pth`` files (0.x and 1.x: ``{'meta': ..., 'state_dict': ...}`` or a bare
  state dict), keys ``backbone.layers.{i}.{0,1,2}...`` and ``decode_head.{convs, fusion_conv,
  conv_seg}`` — the authors' ``segformer_mit-b5_640x640_160k_ade20k`` is one;
- **Hugging Face** folders or files (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``), with transformers 4.x names (``segformer.encoder.block.*``) or 5.x
  names (``segformer.stages.*``).

The MiT variant, decoder width, head kind and class count are inferred from the tensor shapes;
every key must be used and every expected key present (errors list them).

:meth:`Segmenter.segment` reproduces mmsegmentation's test pipeline of the authors' config by
default (``preprocess="mmseg"``): ``Resize(scale=(2048, 640), keep_ratio=True)`` — factor
``s = min(2048 / long side, 640 / short side)``, size ``int(w*s + 0.5), int(h*s + 0.5)``, OpenCV
``INTER_LINEAR`` on the 8-bit image — then mean (123.675, 116.28, 103.53) / std (58.395, 57.12,
57.375) on RGB, whole-image inference, logits resized bilinearly (``align_corners=False``) to the
resized size and then to the original size, argmax. ``preprocess="hf"`` is transformers'
``SegformerImageProcessor`` instead (squash to 512x512 with PIL bilinear, one logits resize).

Memory: the network sees at most ``scale`` (2048x640 = 1.3 Mpx by default) whatever the input
size; logits are brought to the original size in one piece while 150 float32 maps of the sizes
involved fit in ``strip_bytes`` (1 GiB), else in strips of output rows within that bound, so a
16 Mpx image needs about 1 GiB plus its (H, W) label map (mmseg: 600 bytes per pixel, 9.6 GB)
(:mod:`.seg_labels`). Label maps are written as palette PNGs by :mod:`.palette`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np

from .._inputs import (_as_numpy, _check_values_numpy, _check_values_tensor, _scale_for, _to_4d_numpy,
                       _to_4d_tensor, is_tensor)
from .checkpoint import CheckpointError, read_config_json, read_weights
from .palette import ADE20K_PALETTE, label_png_bytes, save_label_png
from .registry import load_architecture
from .seg_labels import logits_to_labels
from .segformer import build_segformer
from .segformer_keys import detect_family, state_dict_of

#: mmsegmentation's ADE20K normalisation (RGB, 0..255 scale); HF's ImageNet mean/std are the same /255.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
PREPROCESS = ("mmseg", "hf")
NUM_CLASSES = 150


def _torch():
    import torch

    return torch


def rescale_size(w: int, h: int, scale: Tuple[int, int]) -> Tuple[int, int]:
    """mmcv's keep-ratio ``rescale_size``: the (w, h) an image gets under ``Resize(scale, keep_ratio=True)``."""
    long_edge, short_edge = max(scale), min(scale)
    s = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(w * s + 0.5), int(h * s + 0.5)


class Segmenter:
    """An ADE20K semantic segmenter (SegFormer) with the reference preprocessing.

    Args:
        module: the network: normalised (N, 3, H, W) float32 -> logits (N, K, ~H/4, ~W/4).
        info: description (``variant``, ``head``, ``width``, ``num_classes``, ``format``...).
        device: where the network runs (default: the module's parameters' device, else CPU).
        scale: mmseg's keep-ratio ``Resize`` scale (long, short), default (2048, 640) as the
            authors' config; ``None`` feeds the image at its own size.
        preprocess: ``"mmseg"`` (default, the authors' pipeline) or ``"hf"``.
        hf_size: (height, width) of the ``"hf"`` squash resize, default (512, 512).
        runner: optional callable replacing ``module`` when running the network (a runtime such
            as ONNX Runtime); it takes and returns torch tensors like ``module``.
        batch_size: images per network call in :meth:`segment` of a batch.
    """

    def __init__(self, module, *, info: Optional[dict] = None, device=None, scale: Optional[Tuple[int, int]] = (2048, 640),
                 preprocess: str = "mmseg", hf_size: Tuple[int, int] = (512, 512),
                 runner: Optional[Callable] = None, batch_size: int = 4, mean=MEAN, std=STD):
        torch = _torch()
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        if scale is not None:
            if len(scale) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in scale):
                raise ValueError(f"scale must be None or two positive integers (long, short), got {scale!r}")
            scale = (int(scale[0]), int(scale[1]))
        if device is None:
            p = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
            device = p.device if p is not None else "cpu"
        self.device = torch.device(device)
        self.module = module
        self.runner = runner
        self.scale = scale
        self.preprocess = preprocess
        self.hf_size = tuple(int(v) for v in hf_size)
        self.batch_size = int(batch_size)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.info = dict(info or {})
        self.info.update(preprocess=preprocess, scale=scale, mean=tuple(mean), std=tuple(std))
        self.num_classes = int(self.info.get("num_classes", NUM_CLASSES))

    def __repr__(self) -> str:
        i = self.info
        return (f"Segmenter(variant={i.get('variant')!r}, head={i.get('head')!r}, width={i.get('width')}, "
                f"classes={self.num_classes}, preprocess={self.preprocess!r}, scale={self.scale}, device={self.device})")

    def forward(self, x):
        """Run the network on normalised float32 (N, 3, H, W) on :attr:`device` -> logits."""
        torch = _torch()
        with torch.inference_mode():
            return (self.runner or self.module)(x)

    __call__ = forward

    def _net_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.preprocess == "hf":
            return self.hf_size
        if self.scale is None:
            return h, w
        nw, nh = rescale_size(w, h, self.scale)
        return max(1, nh), max(1, nw)  # mmcv would fail on a zero side (extreme aspect ratios)

    def _resize_sizes(self, h: int, w: int, nh: int, nw: int) -> List[Tuple[int, int]]:
        return [(h, w)] if self.preprocess == "hf" else [(nh, nw), (h, w)]

    def segment(self, img, *, return_logits: bool = False):
        """ADE20K labels for an image or a batch.

        Args:
            img: numpy RGB (H, W, 3) or (N, H, W, 3) (also (H, W) grey, 4th channel dropped),
                uint8 0..255, uint16 0..65535 or float in [0, 1]; or a torch tensor (3, H, W) /
                (N, 3, H, W) of those dtypes on any device (moved to :attr:`device`).
            return_logits: also return the network's logits (N, K, h/4, w/4) of the last chunk
                (for debugging).

        Returns:
            numpy: uint8 (H, W) or (N, H, W) labels 0..K-1. torch: int64 (H, W) / (N, H, W) on
            :attr:`device`. uint8 numpy input reproduces mmsegmentation's ``inference_model``
            (OpenCV resize of the 8-bit image); other dtypes are resized in float32.
        """
        torch = _torch()
        if is_tensor(img):
            x, batched = _to_4d_tensor(img, "img")
            _scale_for(x, "img")
            _check_values_tensor(x, "img")
            labels = self._segment_torch(x)
            return labels if batched else labels[0]
        a = _as_numpy(img, "img")
        _scale_for(a, "img")
        a, batched = _to_4d_numpy(a, "img")
        _check_values_numpy(a, "img")
        if a.shape[1] < 1 or a.shape[2] < 1:
            raise ValueError(f"img: empty image of shape {a.shape}")
        out = np.empty(a.shape[:3], dtype=np.uint8 if self.num_classes <= 256 else np.int64)
        for s in range(0, a.shape[0], self.batch_size):
            chunk = a[s:s + self.batch_size]
            x = torch.from_numpy(np.stack([self._prepare_numpy(im) for im in chunk])).to(self.device)
            out[s:s + len(chunk)] = self._labels(x, *chunk.shape[1:3]).cpu().numpy()
        return out if batched else out[0]

    def _prepare_numpy(self, im: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (3, h, w) float32 on the 0..255 scale, resized as the reference does."""
        import cv2

        if im.shape[2] == 1:
            im = np.repeat(im, 3, axis=2)
        im = np.ascontiguousarray(im[:, :, :3])
        h, w = im.shape[:2]
        nh, nw = self._net_size(h, w)
        if im.dtype == np.uint8:
            pass
        elif im.dtype == np.uint16:
            im = im.astype(np.float32) * np.float32(255.0 / 65535.0)
        else:
            im = im.astype(np.float32) * np.float32(255.0)
        if (nh, nw) != (h, w):
            if self.preprocess == "hf":
                im = _pil_bilinear(im, nw, nh)
            else:
                im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(im.astype(np.float32).transpose(2, 0, 1))

    def _segment_torch(self, x):
        torch = _torch()
        import torch.nn.functional as F

        n, c, h, w = x.shape
        x = x.to(self.device)
        if c == 1:
            x = x.expand(n, 3, h, w)
        x = x[:, :3]
        u8 = x.dtype == torch.uint8
        xf = x.float() * float(_scale_for(x, "img"))
        nh, nw = self._net_size(h, w)
        out = torch.empty((n, h, w), dtype=torch.int64, device=self.device)
        for s in range(0, n, self.batch_size):
            xs = xf[s:s + self.batch_size]
            if (nh, nw) != (h, w):
                xs = F.interpolate(xs, size=(nh, nw), mode="bilinear", align_corners=False)
                if u8:  # OpenCV resizes 8-bit images to 8-bit
                    xs = xs.round().clamp(0, 255)
            out[s:s + xs.shape[0]] = self._labels(xs, h, w)
        return out

    def _labels(self, x, h: int, w: int):
        """0..255-scale float (N, 3, nh, nw) on the device -> int64 (N, h, w) labels."""
        nh, nw = x.shape[2:]
        logits = self.forward((x - self.mean) / self.std)
        if logits.dim() != 4 or logits.shape[0] != x.shape[0]:
            raise RuntimeError(f"the segmentation network returned shape {tuple(logits.shape)}, "
                               f"expected ({x.shape[0]}, K, h, w)")
        return logits_to_labels(logits.float(), self._resize_sizes(h, w, nh, nw))


def _pil_bilinear(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """transformers' resize: PIL bilinear on the 8-bit image (float images per channel in mode F)."""
    from PIL import Image

    if im.dtype == np.uint8:
        return np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
    return np.stack([np.asarray(Image.fromarray(im[:, :, c].astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
                     for c in range(im.shape[2])], axis=2)


def load_segmenter(source: Union[str, os.PathLike], *, device="cpu", scale: Optional[Tuple[int, int]] = (2048, 640),
                   runtime: str = "auto", preprocess: str = "mmseg", trust: bool = False,
                   num_classes: Optional[int] = NUM_CLASSES, batch_size: int = 4) -> Segmenter:
    """Load a SegFormer checkpoint (mmsegmentation or Hugging Face) as a :class:`Segmenter`.

    Args:
        source: an mmseg ``.pth`` (0.x / 1.x layout), a Hugging Face folder (``config.json`` +
            ``model.safetensors`` or ``pytorch_model.bin``) or one of those files.
        device: torch device for the network (``"cpu"``, ``"cuda"``...).
        scale: mmseg's keep-ratio resize scale (default (2048, 640), the authors' config), or None.
        runtime: ``"auto"``, ``"torch"`` (eager PyTorch), ``"onnxruntime"`` or ``"tensorrt"``
            (:mod:`desra_fast.runtime`); an ``.onnx`` / ``.engine`` written by
            :func:`desra_fast.export.to_onnx` loads directly with its stored preprocessing.
        preprocess: ``"mmseg"`` (default) or ``"hf"`` (transformers' SegformerImageProcessor).
        trust: allow unpickling non-tensor objects (e.g. numpy arrays in an mmcv checkpoint's
            ``meta``); only for files you trust — unpickling can run code. The package's one
            opt-in (:func:`desra_fast.models.checkpoint.read_weights`), logged when used.
        num_classes: required class count (150 for DeSRA's ADE20K weights); None accepts any.
        batch_size: images per network call for batches.

    Returns:
        A :class:`Segmenter`; ``.info`` holds ``format`` (``"mmseg"`` / ``"hf"``), ``names``
        (HF ``"4.x"`` / ``"5.x"``), ``variant`` (``"b0"``..``"b5"`` or ``"custom"``), ``head``,
        ``width``, ``num_classes``, ``config`` and ``source_sha256``.

    Raises:
        CheckpointError (a ValueError): unreadable/truncated file, missing or unexpected keys
        (listed), wrong shapes, a class count other than ``num_classes``;
        UnsafeCheckpointError (a CheckpointError): pickled objects without ``trust=True``.
    """
    # --- runtimes (desra_fast.runtime): .onnx / .engine files, runtime="onnxruntime"|"tensorrt" ---
    from .runtimes import support

    rt_support = support()
    if runtime not in rt_support.runtimes:
        raise ValueError(f"runtime must be one of {rt_support.runtimes}, got {runtime!r}")
    if rt_support.source_kind(source) != "torch":
        return _load_exported(source, device=device, scale=scale, runtime=runtime, preprocess=preprocess,
                              num_classes=num_classes, batch_size=batch_size)
    # --- end runtimes ---
    wf = read_weights(source, trust=trust)
    if wf.format not in ("torch", "safetensors"):
        raise CheckpointError(f"{wf.path}: a {wf.format} file holds no SegFormer weights")
    sd, meta = state_dict_of(wf.content, wf.path)
    family = detect_family(sd)  # the error for a file of another kind names what was expected
    hf_config = wf.config if family == "hf" else None
    beside = wf.path.parent / "config.json"
    if hf_config is None and family == "hf" and beside.is_file():  # an HF weights file given alone
        hf_config = read_config_json(beside)
    model, info = load_architecture(sd, "segmenter", str(wf.path), hf_config=hf_config, meta=meta)
    if num_classes is not None and info["num_classes"] != num_classes:
        raise CheckpointError(f"{wf.path}: the classifier has {info['num_classes']} classes, expected {num_classes} "
                              "(ADE20K, the classes of DeSRA's semantic weights); pass num_classes=None to accept it")
    info.update(source=str(Path(os.fspath(source))), source_sha256=wf.sha256)
    del info["arch"]  # .info's keys as before: format, names, variant, head, width, ...
    model = model.to(device)
    seg = Segmenter(model, info=info, device=device, scale=scale, preprocess=preprocess, batch_size=batch_size)
    # --- runtimes: a non-torch runtime runs the (cached) export of this model ---
    rt, _, runner = rt_support.prepare_model(source, kind="segmenter", runtime=runtime, device=device, load_torch=lambda: seg)
    seg.runner = runner
    seg.info["runtime"] = rt
    return seg


def _load_exported(source, *, device, scale, runtime, preprocess, num_classes, batch_size) -> Segmenter:
    """A Segmenter running an exported ``.onnx`` / ``.engine`` (desra_fast.runtime). The file's
    preprocessing (resize scale, mmseg/hf, mean/std) is used unless other values are passed."""
    from .runtimes import support

    rt, info, runner = support().prepare_model(source, kind="segmenter", runtime=runtime, device=device)
    info = dict(info)
    if num_classes is not None and int(info.get("num_classes", NUM_CLASSES)) != num_classes:
        raise CheckpointError(f"{source}: the exported segmenter has {info.get('num_classes')} classes, expected "
                              f"{num_classes}; pass num_classes=None to accept it")
    if preprocess == "mmseg":
        preprocess = info.get("preprocess", "mmseg")
    if scale == (2048, 640):
        scale = tuple(info["scale"]) if info.get("scale") is not None else None
    info.update(runtime=rt, exported=str(source))
    return Segmenter(None, info=info, device=device, scale=scale, preprocess=preprocess, runner=runner,
                     batch_size=batch_size, mean=tuple(info.get("mean", MEAN)), std=tuple(info.get("std", STD)))
    # --- end runtimes ---


__all__ = ["Segmenter", "load_segmenter", "CheckpointError", "build_segformer", "logits_to_labels", "rescale_size",
           "save_label_png", "label_png_bytes", "ADE20K_PALETTE", "MEAN", "STD"]
