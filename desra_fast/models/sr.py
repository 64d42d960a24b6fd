"""``load_sr`` and :class:`SRModel`: any SR checkpoint form -> tiled, exact, thread-safe upscaling.

>>> from desra_fast.models import load_sr
>>> gan = load_sr("RealESRGAN_x4plus.pth")              # {'params_ema': ...}, RRDBNet inferred
>>> mse = load_sr("srmd_x4.param", noise_level=10)      # ncnn files, .bin beside
>>> sr = gan.upscale(lr_rgb_uint8, tile=256)            # (4H, 4W, 3) uint8
"""
from __future__ import annotations

import copy
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import tiling

from ..utils import file_sha256

__all__ = ["SRModel", "load_sr", "RUNTIMES"]

log = logging.getLogger(__name__)

#: Runtimes ``load_sr`` knows.
RUNTIMES = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")

#: Pre-padding the reference tools apply, by architecture: (pixels, mode).
_PRE_PAD = {"RRDBNet": (10, "reflect"), "SRMD": (12, "replicate")}
_DEFAULT_PRE_PAD = (10, "reflect")

_PRECISIONS = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "half": torch.float16,
               "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}

_FLOAT_TOL = 0.05   # float images may overshoot [0, 1] by this much (outputs of other models)


def _pad_index(n: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    """Indices of a reflect-101 / replicate padded axis, for any pad size (cv2 semantics)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    if not (top or bottom or left or right):
        return x
    h, w = x.shape[-2:]
    x = x.index_select(-2, _pad_index(h, top, bottom, mode, x.device))
    return x.index_select(-1, _pad_index(w, left, right, mode, x.device))


class SRModel:
    """A super-resolution network plus the conventions of the tool it comes from.

    Args:
        module: torch module, float32 NCHW RGB in [0, 1] -> NCHW at ``scale`` x (unclamped).
        info: at least ``arch`` and ``scale``; ``pre_pad`` / ``pad_mode`` / ``mod`` default by
            architecture (RRDBNet: 10 px reflect-101; SRMD: 12 px replicate; others 10 reflect).
        device: where the module runs.
        runner: optional callable replacing the module in :meth:`forward` (e.g. an ONNX Runtime
            session): float32 NCHW tensor -> float32 NCHW tensor. Tiling, pre-padding and rounding
            stay in :meth:`upscale` whatever the runner.
        channels_last: run the torch module in channels-last memory format (NHWC; oneDNN's
            fastest convolution layout on CPU, with ``precision="bf16"`` the fastest CPU path:
            see ``benchmarks/sr_cpu.py``). Results equal the NCHW ones up to float rounding.

    Attributes:
        scale (int), device (torch.device), module (nn.Module), info (dict), runner,
        stats (dict): cumulative ``tiles`` run and ``fp32_recomputed`` (half-precision tiles
        whose output held NaN/inf and were recomputed in float32).

    Thread safety: :meth:`upscale` may be called from several threads on one model; the module
    is only read, the half-precision copies are built once under a lock.
    """

    def __init__(self, module: nn.Module, info: dict, *, device: str | torch.device = "cpu",
                 runner: Callable[[torch.Tensor], torch.Tensor] | None = None, channels_last: bool = False):
        if "scale" not in info or "arch" not in info:
            raise ValueError("SRModel: info needs 'arch' and 'scale'")
        self.device = _device(device)
        if module is None and runner is None:
            raise ValueError("SRModel: needs a module or a runner")
        # module is None for models loaded from an exported .onnx / .engine file (runner only).
        self.module = module.to(self.device).eval() if module is not None else None
        for p in self.module.parameters() if module is not None else ():
            p.requires_grad_(False)
        self.channels_last = bool(channels_last) and self.module is not None
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.info = dict(info)
        self.scale = int(self.info["scale"])
        pp, mode = _PRE_PAD.get(self.info["arch"], _DEFAULT_PRE_PAD)
        self.info.setdefault("pre_pad", pp)
        self.info.setdefault("pad_mode", mode)
        if self.info["pad_mode"] not in ("reflect", "replicate"):
            raise ValueError(f"SRModel: pad_mode must be 'reflect' or 'replicate', got {self.info['pad_mode']!r}")
        if self.info["arch"] == "RRDBNet":
            self.info.setdefault("mod", {4: 1, 2: 2, 1: 4}[self.scale])
        self.info.setdefault("mod", 1)
        self.runner = runner
        self.stats = {"tiles": 0, "fp32_recomputed": 0}
        self._lock = threading.Lock()
        self._low: dict[torch.dtype, nn.Module] = {}
        self._bytes_per_pixel: float | None = None

    def __repr__(self) -> str:
        keep = {k: v for k, v in self.info.items() if k not in ("source",)}
        return f"SRModel({keep}, device={self.device}, runner={'torch' if self.runner is None else self.runner!r})"

    # ------------------------------------------------------------------ network
    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network (or its runner) on an already pre-padded float32 (N, 3, h, w) tensor."""
        if self.runner is not None:
            return self.runner(x)
        return self.module(x)

    def _module_in(self, dtype: torch.dtype) -> nn.Module:
        if dtype == torch.float32:
            return self.module
        with self._lock:
            m = self._low.get(dtype)
            if m is None:
                m = copy.deepcopy(self.module).to(dtype)
                self._low[dtype] = m
            return m

    @torch.no_grad()
    def _run_tile(self, x: torch.Tensor, dtype: torch.dtype, where: str) -> tuple[torch.Tensor, int]:
        recomputed = 0
        if self.channels_last and self.runner is None:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            if dtype == torch.float32:
                y = self.forward(x)
            else:
                y = self._module_in(dtype)(x.to(dtype)).float()
                if not torch.isfinite(y).all():
                    recomputed = 1
                    y = self.forward(x)
        except Exception as e:
            raise RuntimeError(f"SRModel.upscale: the {where} failed: {type(e).__name__}: {e}") from e
        want = (x.shape[0], 3, x.shape[2] * self.scale, x.shape[3] * self.scale)
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise RuntimeError(f"SRModel.upscale: the {where} gave {got}, expected {want}")
        if not torch.isfinite(y).all():
            raise RuntimeError(f"SRModel.upscale: the {where} gave NaN/inf values in float32")
        return y.to(self.device, torch.float32), recomputed

    # ------------------------------------------------------------------ upscale
    @torch.no_grad()
    def upscale(self, img, *, tile: int | str = 0, tile_pad: int | None = None, pre_pad: int | None = None,
                precision: str = "fp32", return_stats: bool = False, overlap: int | None = None,
                max_memory: int | str | None = None):
        """Upscale one image (numpy) or a batch (torch) with the reference tools' conventions.

        Input values are scaled to [0, 1] (uint8 / 255, uint16 / 65535, floats as given), the LR is
        pre-padded by ``pre_pad`` pixels (``info['pad_mode']``: reflect-101 or replicate), run
        whole or in overlapping tiles, cropped, clamped to [0, 1] and, for integer inputs,
        rounded as ``floor(v * 255 + 0.5)`` (65535 for uint16).

        Args:
            img: numpy (H, W, 3) uint8 / uint16 / float in [0, 1], RGB; or torch (N, 3, H, W)
                (or (3, H, W)) uint8 or float in [0, 1] on any device.
            tile: tile size in LR pixels of the pre-padded image; 0 = whole image at once;
                ``"auto"``: the largest tile whose pass fits ``max_memory`` (0 when the whole
                image fits; :func:`desra_fast.models.tiling.auto_tile`). Activation memory is
                bounded by ``(tile + 2 * tile_pad + overlap)^2``, not the image.
            tile_pad: context pixels run around the kept part of each tile and cropped from its
                output. None (default): the architecture's measured default
                (:data:`desra_fast.models.tiling.DEFAULT_TILING`: RRDBNet 48, SRMD 12).
            overlap: width in LR pixels of the band centred on each tile border that both
                neighbours keep and blend with raised-cosine weights (seam-free tiling). None:
                the architecture's default (RRDBNet 16, SRMD 0) when ``tile_pad`` is None too,
                else 0, so an explicit ``tile_pad`` alone is Real-ESRGAN's crop-only tiling.
            max_memory: bytes (or ``"2G"``-style text) for ``tile="auto"``; default 2 GiB on
                CPU, 80 % of the free memory on CUDA.
            pre_pad: LR pre-padding; default ``info['pre_pad']`` (10 RRDBNet, 12 SRMD).
            precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``; a half-precision tile whose output
                holds NaN/inf is recomputed in float32 (counted in ``stats['fp32_recomputed']``).
            return_stats: also return this call's ``{'tiles', 'fp32_recomputed'}``.

        Returns:
            numpy (sH, sW, 3) of the input's dtype (float32 for float inputs), or torch
            (N, 3, sH, sW) on the model's device (uint8 for uint8 input, else float32).
            With ``return_stats``, ``(output, stats)``.

        Raises:
            ValueError: bad shape, dtype, non-finite or out-of-range values, bad options.
            RuntimeError: a tile failed (never replaced by another tile's output).
        """
        tile_pad, overlap = tiling.resolve(self.info, None if tile_pad is None else _nonneg_int(tile_pad, "tile_pad"),
                                           None if overlap is None else _nonneg_int(overlap, "overlap"))
        pre_pad = self.info["pre_pad"] if pre_pad is None else _nonneg_int(pre_pad, "pre_pad")
        if precision not in _PRECISIONS:
            raise ValueError(f"upscale: precision must be one of fp32, fp16, bf16, got {precision!r}")
        dtype = _PRECISIONS[precision]
        if dtype != torch.float32 and self.runner is not None:
            raise ValueError(f"upscale: precision={precision!r} applies to the torch module; this model runs "
                             f"through a runner whose precision is fixed when the runtime is built (load it "
                             f"with precision={precision!r}, or runtime='torch' for a per-call precision)")
        x, restore = self._to_tensor(img)
        if isinstance(tile, str) and tile == "auto":
            tile = self.auto_tile(x.shape[2], x.shape[3], batch=x.shape[0], tile_pad=tile_pad, overlap=overlap,
                                  pre_pad=pre_pad, max_memory=max_memory)
        tile = _nonneg_int(tile, "tile")
        y, stats = self._upscale_tensor(x, tile, tile_pad, overlap, pre_pad, dtype)
        out = restore(y)
        with self._lock:
            for k, v in stats.items():
                self.stats[k] += v
        if stats["fp32_recomputed"]:
            log.warning("SRModel.upscale: %d of %d %s tiles gave NaN/inf and were recomputed in float32",
                        stats["fp32_recomputed"], stats["tiles"], precision)
        return (out, stats) if return_stats else out

    def _upscale_tensor(self, x: torch.Tensor, tile: int, tile_pad: int, overlap: int, pre_pad: int, dtype):
        n, _, h, w = x.shape
        s, mod, mode = self.scale, int(self.info["mod"]), self.info["pad_mode"]
        # pre-pad, then pad right/bottom to a multiple of `mod` (pixel-unshuffle models), as RealESRGANer
        hp, wp = h + 2 * pre_pad, w + 2 * pre_pad
        mh, mw = (-hp) % mod, (-wp) % mod
        xp = _pad(x, pre_pad, pre_pad + mh, pre_pad, pre_pad + mw, mode)
        H, W = xp.shape[-2:]
        stats = {"tiles": 0, "fp32_recomputed": 0}
        if tile == 0 or (tile >= H and tile >= W):
            y, r = self._run_tile(xp, dtype, "whole-image pass")
            stats["tiles"], stats["fp32_recomputed"] = 1, r
        else:
            def run(piece, where):
                out, r = self._run_tile(piece, dtype, where)
                stats["fp32_recomputed"] += r
                return out
            y, stats["tiles"] = tiling.upscale_tiled(run, xp, s, tile, tile_pad, overlap, mod)
        y = y[:, :, pre_pad * s:(pre_pad + h) * s, pre_pad * s:(pre_pad + w) * s]
        return y.clamp_(0, 1), stats

    def auto_tile(self, h: int, w: int, *, batch: int = 1, tile_pad: int | None = None, overlap: int | None = None,
                  pre_pad: int | None = None, max_memory: int | str | None = None) -> int:
        """The tile ``upscale(tile="auto")`` uses for ``batch`` LR images of h x w: the largest
        multiple of 8 (and of ``info['mod']``) whose pass fits ``max_memory`` bytes (default 2 GiB
        on CPU, 80 % of the free memory on CUDA), 0 when the whole image fits. ValueError if
        nothing fits. Other arguments as :meth:`upscale`."""
        tile_pad, overlap = tiling.resolve(self.info, tile_pad, overlap)
        pre_pad = self.info["pre_pad"] if pre_pad is None else pre_pad
        if max_memory is not None:
            budget = tiling.parse_memory(max_memory)
        elif self.device.type == "cuda":
            budget = int(torch.cuda.mem_get_info(self.device)[0] * 0.8)
        else:
            budget = 2 << 30
        with self._lock:
            if self._bytes_per_pixel is None:
                self._bytes_per_pixel = tiling.model_bytes_per_pixel(self.module, self.info, self.device)
        weights = sum(p.numel() * p.element_size() for p in self.module.parameters()) if self.module is not None else 0
        mod = int(self.info["mod"])
        return tiling.auto_tile(h + 2 * pre_pad, w + 2 * pre_pad, bytes_per_pixel=self._bytes_per_pixel,
                                budget=budget, scale=self.scale, tile_pad=tile_pad, overlap=overlap, batch=batch,
                                fixed=weights, mod=mod * 8 // math.gcd(mod, 8))

    def _to_tensor(self, img):
        if isinstance(img, torch.Tensor):
            t = img
            if t.ndim == 3:
                t = t.unsqueeze(0)
                squeeze = True
            else:
                squeeze = False
            if t.ndim != 4 or t.shape[1] != 3:
                raise ValueError(f"upscale: a tensor must be (N, 3, H, W) or (3, H, W) RGB, got {tuple(img.shape)}")
            if t.shape[0] == 0 or t.shape[2] == 0 or t.shape[3] == 0:
                raise ValueError(f"upscale: empty tensor {tuple(img.shape)}")
            if t.dtype == torch.uint8:
                x = t.to(self.device).float().div_(255.0)
                kind = "u8"
            elif t.is_floating_point():
                x = t.to(self.device, torch.float32)
                _check_float(x, "tensor")
                kind = "float"
            else:
                raise ValueError(f"upscale: tensor dtype must be uint8 or floating point, got {t.dtype}")

            def restore(y):
                if kind == "u8":
                    y = torch.floor(y * 255.0 + 0.5).to(torch.uint8)
                return y[0] if squeeze else y
            return x, restore
        if not isinstance(img, np.ndarray):
            raise TypeError(f"upscale: expected a numpy array or torch tensor, got {type(img).__name__}")
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"upscale: a numpy image must be (H, W, 3) RGB, got shape {img.shape} "
                             f"(use enhance() for grayscale / RGBA)")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"upscale: empty image {img.shape}")
        if img.dtype == np.uint8:
            maxv = 255.0
        elif img.dtype == np.uint16:
            maxv = 65535.0
        elif img.dtype.kind == "f":
            maxv = None
        else:
            raise ValueError(f"upscale: numpy dtype must be uint8, uint16 or float, got {img.dtype}")
        a = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        x = a.permute(2, 0, 1).unsqueeze(0).to(self.device)
        if maxv is None:
            _check_float(x, "image")
        else:
            x = x / maxv

        def restore(y):
            y = y[0].permute(1, 2, 0)
            if maxv is None:
                return y.cpu().numpy().astype(np.float32)
            q = torch.floor(y.double() * maxv + 0.5) if maxv > 255 else torch.floor(y * maxv + 0.5)
            return q.cpu().numpy().astype(img.dtype)
        return x, restore

    # ------------------------------------------------------------------ Real-ESRGAN's enhance
    def enhance(self, img: np.ndarray, outscale: float | None = None, *, tile: int | str = 0,
                tile_pad: int | None = None, pre_pad: int | None = None, precision: str = "fp32",
                alpha_upsampler: str = "model", overlap: int | None = None,
                max_memory: int | str | None = None) -> np.ndarray:
        """Upscale one decoded image file the way Real-ESRGAN's ``RealESRGANer.enhance`` does.

        - grayscale (H, W) or (H, W, 1): replicated to RGB, upscaled, converted back to one
          channel (ITU-R 601 luma, ``cv2.COLOR_RGB2GRAY``); returned (sH, sW).
        - RGBA (H, W, 4): RGB upscaled by the model; the alpha channel upscaled separately, by
          the model too (``alpha_upsampler="model"``, as Real-ESRGAN's default ``'realesrgan'``)
          or by bilinear resize (``"bilinear"``); returned (sH, sW, 4).
        - uint16 stays uint16 (values / 65535, rounded back), uint8 stays uint8, float stays float32.
        - ``outscale``: final size ``int(H * outscale) x int(W * outscale)`` by ``cv2.INTER_LANCZOS4``
          resize of the model output when it differs from the model's scale (as Real-ESRGAN).

        Channel order is R, G, B(, A): convert cv2's BGR(A) first (``desra_fast.imageio``'s readers
        return RGB). ``tile``, ``tile_pad``, ``overlap``, ``max_memory``, ``pre_pad``, ``precision``
        as in :meth:`upscale`.

        Returns:
            numpy array of the input's dtype, (sH, sW), (sH, sW, 3) or (sH, sW, 4).
        """
        import cv2

        if not isinstance(img, np.ndarray):
            raise TypeError(f"enhance: expected a numpy array, got {type(img).__name__}")
        if alpha_upsampler not in ("model", "realesrgan", "bilinear"):
            raise ValueError(f"enhance: alpha_upsampler must be 'model' or 'bilinear', got {alpha_upsampler!r}")
        if outscale is not None and (not isinstance(outscale, (int, float)) or isinstance(outscale, bool)
                                     or not math.isfinite(outscale) or outscale <= 0):
            raise ValueError(f"enhance: outscale must be a positive number, got {outscale!r}")
        kw = dict(tile=tile, tile_pad=tile_pad, pre_pad=pre_pad, precision=precision, overlap=overlap,
                  max_memory=max_memory)
        h, w = img.shape[:2]
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 2:
            out = self.upscale(np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2)), **kw)
            out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        elif img.ndim == 3 and img.shape[2] == 4:
            out = self.upscale(np.ascontiguousarray(img[:, :, :3]), **kw)
            alpha = img[:, :, 3]
            if alpha_upsampler == "bilinear":
                a = cv2.resize(alpha, (w * self.scale, h * self.scale), interpolation=cv2.INTER_LINEAR)
            else:
                a = self.upscale(np.ascontiguousarray(np.repeat(alpha[:, :, None], 3, axis=2)), **kw)
                a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
            out = np.concatenate([out, a[:, :, None]], axis=2)
        elif img.ndim == 3 and img.shape[2] == 3:
            out = self.upscale(img, **kw)
        else:
            raise ValueError(f"enhance: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {img.shape}")
        if outscale is not None and float(outscale) != float(self.scale):
            size = (int(w * outscale), int(h * outscale))
            if size[0] < 1 or size[1] < 1:
                raise ValueError(f"enhance: outscale={outscale} gives an empty {size[1]}x{size[0]} image")
            out = cv2.resize(out, size, interpolation=cv2.INTER_LANCZOS4)
        return out


def _check_float(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"upscale: the {what} holds NaN or inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -_FLOAT_TOL or hi > 1 + _FLOAT_TOL:
        raise ValueError(f"upscale: float {what} values must be in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                         f"(pass uint8/uint16, or divide by 255)")
    x.clamp_(0, 1)


def _nonneg_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"upscale: {name} must be a non-negative integer, got {v!r}")
    return int(v)


def _device(device) -> torch.device:
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r}: CUDA is not available on this machine (torch {torch.__version__})")
    return d


# ---------------------------------------------------------------------- loading
_OPTIONS = {"bin", "noise_level", "scale", "key", "pre_pad", "pad_mode", "precision", "channels_last", "trust"}


def _read_source(source, options: dict) -> tuple[nn.Module, dict]:
    """The torch module and info of any supported checkpoint form (format dispatch)."""
    from . import checkpoint, ncnn, registry, zoo

    scale, noise = options.get("scale"), options.get("noise_level")
    if isinstance(source, nn.Module):
        scale = scale if scale is not None else getattr(source, "scale", None)
        if not isinstance(scale, int) or scale < 1:
            raise ValueError("load_sr: an nn.Module source needs scale= (or a .scale attribute)")
        return source.float(), dict(arch=type(source).__name__, scale=scale, source=f"<{type(source).__name__}>")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_sr: source must be a path, a packaged model name or an nn.Module, "
                        f"got {type(source).__name__}")
    path = Path(source)
    if not path.exists() and str(source) in zoo.MODELS:
        path = zoo.packaged_model(str(source))
    if not path.is_file():
        raise FileNotFoundError(f"load_sr: no such file: {path} (packaged names: {', '.join(zoo.available_models())})")
    suffix = path.suffix.lower()
    if options.get("bin") is not None and suffix != ".param":
        raise ValueError("load_sr: bin= is only for ncnn .param sources")
    if suffix == ".param":
        wf = checkpoint.read_weights(path, bin=options.get("bin"))
        module, info = ncnn.ncnn_to_torch(wf.content, noise_level=noise)
        if scale is not None and scale != info["scale"]:
            raise ValueError(f"load_sr: scale={scale} given, the ncnn graph upscales x{info['scale']}")
        info.update(source=str(path), bin=str(wf.files[1]), format="ncnn", source_sha256=wf.sha256)
        return module, info
    if suffix in (".pth", ".pt", ".ckpt", ".safetensors"):
        sd, key = checkpoint.read_state_dict(path, options.get("key"), trust=bool(options.get("trust", False)))
        module, info = registry.load_architecture(sd, "sr", str(path), scale=scale, noise_level=noise)
        info.update(source=str(path), format="safetensors" if suffix == ".safetensors" else "torch",
                    checkpoint_key=key, source_sha256=file_sha256(path))
        return module, info
    raise ValueError(f"load_sr: unsupported model file {path.name!r}: expected .pth/.pt/.ckpt, .safetensors or "
                     f"an ncnn .param")


def _runner_for(runtime: str, module: nn.Module, info: dict, device: torch.device, options: dict):
    """The runner replacing ``module`` for ``runtime`` (None: the torch module itself)."""
    # --- runtimes (desra_fast.runtime): onnxruntime / tensorrt / auto for a torch checkpoint ---
    if runtime == "torch":
        return None
    from .runtimes import support

    _, _, runner = support().prepare_model(module, kind="sr", runtime=runtime, device=device,
                                 load_torch=lambda: SRModel(module, info, device=device),
                                 precision=options.get("precision"))
    return runner
    # --- end runtimes ---


def _load_exported(source, device: torch.device, runtime: str, options: dict) -> SRModel:
    """An SRModel running an exported ``.onnx`` / TensorRT ``.engine`` file (see desra_fast.runtime)."""
    from .runtimes import support

    fixed = set(options) - {"pre_pad", "pad_mode", "precision"}
    if fixed:
        raise ValueError(f"load_sr: {sorted(fixed)} cannot change an exported model (fixed in {Path(source).name}); "
                         f"export the source model again with them")
    rt, info, runner = support().prepare_model(source, kind="sr", runtime=runtime, device=device,
                                               precision=options.get("precision"))
    info = dict(info)
    for k in ("pre_pad", "pad_mode"):
        if options.get(k) is not None:
            info[k] = options[k]
    info.update(runtime=rt, exported=str(source), **getattr(runner, "describe", dict)())
    return SRModel(None, info, device=device, runner=runner)


def load_sr(source, *, device: str | torch.device = "cpu", runtime: str = "auto", **options: Any) -> SRModel:
    """Load a super-resolution model from any checkpoint form users have.

    Args:
        source: one of
            - ``.pth`` / ``.pt`` / ``.ckpt``: ``params_ema`` preferred, then ``params``, then a bare
              state dict; read with ``torch.load(weights_only=True)`` (a pickle that would run
              code is refused); architecture and hyper-parameters inferred from the tensor
              shapes (RRDBNet in BasicSR layout, SRMD in KAIR layout, others via spandrel if
              installed); strict keys.
            - ``.safetensors``: same key rules.
            - an ncnn ``.param`` (``.bin`` beside it, or ``bin=``): converted to torch
              (RRDBNet graphs get the official key names).
            - a packaged model name (``"realesrgan-x4plus"``, ``"srmd-x4"``: see
              :mod:`desra_fast.models.zoo`), or an ``nn.Module`` (with ``scale=``).
        device: torch device.
        runtime: ``"auto"``, ``"torch"``, ``"onnxruntime"``, ``"tensorrt"`` or ``"openvino"`` (see
            :mod:`desra_fast.runtime`; ``auto`` on CPU is OpenVINO fp32 when installed); an
            ``.onnx`` / ``.engine`` / OpenVINO ``.xml`` source (written by
            :func:`desra_fast.export.to_onnx` / ``desra-fast export``) loads directly and keeps the
            source model's pre-pad, scale and rounding.
        **options: ``precision`` (TensorRT engine: ``"fp32"``/``"fp16"``/``"bf16"``; OpenVINO:
            the inference precision hint, default ``"fp32"``, recorded in ``.info``), ``bin`` (ncnn weights path), ``noise_level`` (SRMD: -1..255, default 10;
            noise-free models take none), ``scale`` (override the inferred scale of a
            RRDBNet checkpoint), ``key`` (checkpoint entry, e.g. ``"params"``), ``pre_pad`` and
            ``pad_mode`` (override the architecture's defaults), ``channels_last`` (bool, default
            False: NHWC memory format for the torch module, faster on CPU), ``trust`` (bool,
            default False: unpickle a checkpoint holding objects beyond tensors; only for files
            you trust, see :func:`desra_fast.models.checkpoint.read_weights`).

    Returns:
        :class:`SRModel`; ``.info`` holds ``arch``, ``scale``, ``pre_pad``, ``pad_mode``, the
        hyper-parameters, ``source`` and ``source_sha256``.

    Raises:
        FileNotFoundError, ValueError (unknown options / runtime, unsupported file),
        desra_fast.models.checkpoint.CheckpointError (keys, shapes, layout),
        desra_fast.models.checkpoint.UnsafeCheckpointError (malicious pickle),
        desra_fast.models.ncnn.NcnnFormatError (bad, truncated or unsupported ncnn files).
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"load_sr: unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
    if runtime not in RUNTIMES:
        raise ValueError(f"load_sr: unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")
    from .runtimes import support

    if support().source_kind(source) != "torch":      # an exported .onnx / .engine file
        return _load_exported(source, _device(device), runtime, options)
    module, info = _read_source(source, options)
    for k in ("pre_pad", "pad_mode"):
        if options.get(k) is not None:
            info[k] = options[k]
    if "pre_pad" in info:
        _nonneg_int(info["pre_pad"], "pre_pad")
    dev = _device(device)
    runner = _runner_for(runtime, module, info, dev, options)
    info["runtime"] = "torch" if runner is None else runner.runtime
    info.update(getattr(runner, "describe", dict)())     # e.g. OpenVINO's precision hint and threads
    return SRModel(module, info, device=dev, runner=runner, channels_last=bool(options.get("channels_last", False)))
