"""``desra_fast.Upscaler``: artifact-free upscaling in one object (GAN-SR, MSE-SR, detect, repair).

>>> up = desra_fast.Upscaler("realesrgan-x4plus", "srmd-x4", feather=4)
>>> repaired, mask = up.upscale(lr_rgb_uint8)      # (4H, 4W, 3) uint8, (4H, 4W) bool

The GAN model gives the detail, the pixel-loss (MSE) model the safe fallback; DeSRA's detection
finds the regions where the GAN invented texture and :func:`desra_fast.repair` replaces them by
the MSE-SR output (feathered edge optional). Everything else is the GAN-SR output, bit for bit.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..repair import repair

__all__ = ["Upscaler"]


def _as_model(m, what: str, device, runtime):
    from .sr import SRModel, load_sr

    if isinstance(m, SRModel):
        return m
    try:
        return load_sr(m, device=device, runtime=runtime)
    except (TypeError, FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"Upscaler: {what}: {exc}") from exc


class Upscaler:
    """GAN-SR with DeSRA's artifact regions replaced by MSE-SR, thread-safe.

    Args:
        gan, mse: :class:`desra_fast.models.SRModel` or anything :func:`desra_fast.load_sr`
            accepts (file, packaged name such as ``"realesrgan-x4plus"`` / ``"srmd-x4"``). Both
            must upscale by the same factor.
        seg: optional :class:`desra_fast.models.Segmenter` (or a path for
            :func:`desra_fast.load_segmenter`): ADE20K labels of GAN-SR weight the D map, as in
            the released script. None: no semantic weights.
        feather: soft edge width in output pixels grown outside the mask (see :func:`repair`).
        tile, tile_pad, overlap, max_memory, precision, pre_pad: passed to
            :meth:`SRModel.enhance` / :meth:`SRModel.upscale` for both models (``tile="auto"``
            picks the largest tile that fits ``max_memory``).
        device, runtime: used when ``gan`` / ``mse`` / ``seg`` are loaded here.
        **detect_options: :func:`desra_fast.detect` options (``threshold``, ``area_threshold``,
            ``window``, ``weights``, ``backend``, ...).

    Thread safety: :meth:`upscale` may be called from several threads at once; the models are
    only read (``SRModel.upscale`` is thread-safe) and nothing is stored per call.
    """

    def __init__(self, gan, mse, seg=None, *, feather: int = 0, tile: Any = 0, tile_pad: Optional[int] = None,
                 overlap: Optional[int] = None, max_memory=None, precision: str = "fp32",
                 pre_pad: Optional[int] = None, device="cpu", runtime: str = "auto", **detect_options):
        if isinstance(feather, (bool, np.bool_)) or not isinstance(feather, (int, np.integer)) or feather < 0:
            raise ValueError(f"Upscaler: feather must be an integer >= 0, got {feather!r}")
        if "seg" in detect_options or "mask" in detect_options:
            raise TypeError("Upscaler: give the segmenter as seg=, masks are computed per image")
        self.gan = _as_model(gan, "gan", device, runtime)
        self.mse = _as_model(mse, "mse", device, runtime)
        if self.gan.scale != self.mse.scale:
            raise ValueError(f"Upscaler: the GAN model upscales x{self.gan.scale}, the MSE model "
                             f"x{self.mse.scale}; DeSRA compares outputs of the same size")
        if seg is not None and not hasattr(seg, "segment"):
            from .segmenter import load_segmenter

            seg = load_segmenter(seg, device=device)
        self.seg = seg
        self.feather = int(feather)
        self.sr_options = dict(tile=tile, tile_pad=tile_pad, overlap=overlap, max_memory=max_memory,
                               precision=precision, pre_pad=pre_pad)
        self.detect_options = dict(detect_options)
        if self.detect_options:
            # fail now, not on the first image: detect validates its options on a tiny pair
            from ..api import detect

            z = np.zeros((11, 11, 3), np.uint8)
            detect(z, z, **self.detect_options)

    def __repr__(self) -> str:
        return (f"Upscaler(gan={self.gan.info.get('source')!r}, mse={self.mse.info.get('source')!r}, "
                f"seg={'yes' if self.seg is not None else None}, feather={self.feather}, {self.detect_options})")

    def sr_pair(self, img: np.ndarray, outscale: Optional[float] = None, *,
                alpha_upsampler: str = "model") -> tuple[np.ndarray, np.ndarray]:
        """(GAN-SR, MSE-SR) of one decoded image, as :meth:`SRModel.enhance` gives them: numpy
        (H, W), (H, W, 3) RGB or (H, W, 4) RGBA, uint8 / uint16 / float in [0, 1] -> the same
        layout and dtype at ``outscale`` (default the models' scale)."""
        kw = dict(self.sr_options, alpha_upsampler=alpha_upsampler)
        return self.gan.enhance(img, outscale, **kw), self.mse.enhance(img, outscale, **kw)

    def mask(self, gan_sr: np.ndarray, mse_sr: np.ndarray) -> np.ndarray:
        """DeSRA's artifact mask (H, W) bool of an SR pair (alpha ignored, grayscale accepted)."""
        from ..api import detect

        return detect(gan_sr, mse_sr, seg=self.seg, **self.detect_options)

    def upscale(self, img: np.ndarray, outscale: Optional[float] = None, *,
                alpha_upsampler: str = "model") -> tuple[np.ndarray, np.ndarray]:
        """Upscale and repair one image.

        Args:
            img: numpy (H, W), (H, W, 3) RGB or (H, W, 4) RGBA; uint8, uint16 or float in [0, 1].
            outscale: final scale (Lanczos resize of both outputs, as Real-ESRGAN), default the
                models' scale. alpha_upsampler: ``"model"`` or ``"bilinear"`` for RGBA.

        Returns:
            (repaired, mask): repaired has the layout and dtype of ``img`` at the output size
            (MSE-SR inside the mask, GAN-SR outside, a ``feather``-wide blend between); mask is
            (sH, sW) bool, the detected artifact regions before feathering.
        """
        if not isinstance(img, np.ndarray):
            raise TypeError(f"Upscaler.upscale: expected a numpy image, got {type(img).__name__}")
        gan_sr, mse_sr = self.sr_pair(img, outscale, alpha_upsampler=alpha_upsampler)
        mask = self.mask(gan_sr, mse_sr)
        return repair(gan_sr, mse_sr, mask, feather=self.feather), mask
