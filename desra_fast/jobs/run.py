"""The end-to-end job: LR image -> MSE-SR and GAN-SR -> (segmentation) -> detection -> mask,
manifest line (and optional SR outputs, label map, overlay), on the :mod:`desra_fast.jobs` engine.

Output layout under ``OUT`` (``<rel>`` = the LR file's relative path without extension):
``masks/<rel>.png`` (0/255, the item's completion marker), ``gan/<rel>.<fmt>`` and
``mse/<rel>.<fmt>`` (``save_sr``), ``seg/<rel>.png`` (with a segmenter), ``overlays/<rel>.jpg``
(``overlay``), ``manifest.jsonl``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .. import imageio
from .detect import encode_mask_outputs, mask_stats
from .engine import FolderJob, Item
from .sources import file_fingerprint, resolve_model
from .store import JobError

MASK_DIR, GAN_DIR, MSE_DIR, SEG_DIR, OVERLAY_DIR = "masks", "gan", "mse", "seg", "overlays"
REPAIRED_DIR = "repaired"
SR_FORMATS = ("none", "png", "jpg", "webp")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

#: LR images with more pixels than this are upscaled in tiles of AUTO_TILE (``tile=0``), so that
#: memory stays bounded by the tile, not the image (about 1.3 GB of fp32 activations per
#: megapixel of LR input for RRDBNet x4 untiled).
AUTO_TILE_MAX_PIXELS = 1024 * 1024
AUTO_TILE = 512


#: Informational run file: the LR folder the run read (not compared on restart).
RUN_INFO = ".desra-fast-run.json"


@dataclass
class PipelineConfig:
    """Settings of one ``desra-fast run`` (see :func:`desra_fast.pipeline.run`)."""

    lr_dir: str
    gan_model: str
    mse_model: str
    out_dir: str
    seg_model: Optional[str] = None
    device: str = "cpu"
    runtime: str = "auto"
    precision: str = "auto"
    tile: int = 0
    tile_pad: Optional[int] = None
    batch: int = 1
    save_sr: str = "none"
    overlay: bool = False
    save_repaired: str = "none"
    feather: int = 0
    only: Optional[Sequence[str]] = None
    limit: Optional[int] = None
    threshold: float = 0.7
    area_threshold: int = 4000
    window: str = "gaussian"
    backend: str = "auto"

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        return "fp16" if self.device.startswith("cuda") else "fp32"

    def settings(self) -> Dict[str, Any]:
        """What changes the masks (stored in OUT/.desra-fast-job.json)."""
        return {"gan_model": file_fingerprint(self.gan_model), "mse_model": file_fingerprint(self.mse_model),
                "seg_model": file_fingerprint(self.seg_model) if self.seg_model else None,
                "runtime": self.runtime, "precision": self.resolved_precision(), "tile": int(self.tile),
                "tile_pad": None if self.tile_pad is None else int(self.tile_pad), "threshold": float(self.threshold),
                "area_threshold": int(self.area_threshold), "window": self.window,
                # only when used, so that runs without repaired outputs resume with the same settings
                **({"repair_feather": int(self.feather)} if self.save_repaired != "none" else {})}


def select_keys(found: Dict[str, List[str]], only: Optional[Sequence[str]], limit: Optional[int]) -> List[str]:
    """Keys (relative paths without extension) of the LR images to process: all of ``found``,
    or those named by ``only`` (relative paths with or without extension, as ``desra-fast
    select`` writes them), sorted, then the first ``limit``."""
    keys = sorted(found)
    if only is not None:
        by_rel = {rel: k for k, rels in found.items() for rel in rels}
        wanted = set()
        for name in only:
            name = name.replace(os.sep, "/").lstrip("./") if name.startswith("./") else name.replace(os.sep, "/")
            wanted.add(by_rel.get(name, name))
        keys = [k for k in keys if k in wanted]
    if limit is not None:
        keys = keys[:limit]
    return keys


@dataclass
class _Decoded:
    img: np.ndarray  # (H, W, 3) uint8/uint16 RGB
    seconds: float


@dataclass
class _Models:
    gan: Any
    mse: Any
    seg: Any
    device: Any
    timings: Dict[str, float] = field(default_factory=dict)


class PipelineJob(FolderJob):
    """``desra-fast run`` as a :class:`~desra_fast.jobs.FolderJob`."""

    name = "run"
    noun = "image"
    task_max_items = 16

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.max_batch = max(1, int(cfg.batch))
        self.task_max_items = max(16, self.max_batch)
        self._models: Optional[_Models] = None

    def __getstate__(self):  # shipped to Ray workers without loaded models
        state = dict(self.__dict__)
        state["_models"] = None
        return state

    # -- planning -----------------------------------------------------------------------------
    def validate(self) -> None:
        cfg = self.cfg
        if not os.path.isdir(cfg.lr_dir):
            raise JobError(f"--lr {cfg.lr_dir}: not a directory")
        if os.path.realpath(cfg.out_dir) == os.path.realpath(cfg.lr_dir):
            raise JobError(f"--out {cfg.out_dir} is the --lr folder; give the outputs a folder of their own")
        cfg.gan_model = resolve_model(cfg.gan_model, "--gan-model")
        cfg.mse_model = resolve_model(cfg.mse_model, "--mse-model")
        if cfg.seg_model is not None and not os.path.exists(cfg.seg_model):
            raise JobError(f"--seg-model {cfg.seg_model}: no such file")
        if cfg.save_sr not in SR_FORMATS:
            raise JobError(f"--save-sr must be one of {SR_FORMATS}, got {cfg.save_sr!r}")
        if cfg.save_repaired not in SR_FORMATS:
            raise JobError(f"--save-repaired must be one of {SR_FORMATS}, got {cfg.save_repaired!r}")
        if isinstance(cfg.feather, bool) or not isinstance(cfg.feather, int) or cfg.feather < 0:
            raise JobError(f"--feather must be an integer >= 0, got {cfg.feather!r}")
        if cfg.precision not in PRECISIONS:
            raise JobError(f"--precision must be one of {PRECISIONS}, got {cfg.precision!r}")
        if cfg.limit is not None and cfg.limit < 0:
            raise JobError(f"--limit must be >= 0, got {cfg.limit}")

    def settings(self):
        return self.cfg.settings()

    def plan(self) -> List[Item]:
        cfg = self.cfg
        # Where the inputs came from, for later stages (``desra-fast finetune --run OUT`` pairs the
        # LR images with OUT/gan, OUT/mse, OUT/masks). Informational, so not part of settings():
        # moving the LR folder and resuming with the new path is allowed.
        info = {"lr_dir": os.path.abspath(cfg.lr_dir)}
        imageio.write_bytes_atomic(os.path.join(cfg.out_dir, RUN_INFO),
                                   (json.dumps(info, indent=1) + "\n").encode(), fsync=True)
        found = imageio.list_images(cfg.lr_dir, exclude=[cfg.out_dir])
        items = []
        for key in select_keys(found, cfg.only, cfg.limit):
            rels = found[key]
            outputs = []
            if cfg.save_sr != "none":
                outputs += [f"{GAN_DIR}/{key}.{cfg.save_sr}", f"{MSE_DIR}/{key}.{cfg.save_sr}"]
            if cfg.seg_model:
                outputs.append(f"{SEG_DIR}/{key}.png")
            if cfg.overlay:
                outputs.append(f"{OVERLAY_DIR}/{key}.jpg")
            if cfg.save_repaired != "none":
                outputs.append(f"{REPAIRED_DIR}/{key}.{cfg.save_repaired}")
            outputs.append(f"{MASK_DIR}/{key}.png")
            err = f"ambiguous name: several files for {key}: {sorted(rels)}" if len(rels) > 1 else None
            items.append(Item(f"{MASK_DIR}/{key}.png", tuple(outputs), {"lr": rels[0]},
                              (os.path.join(cfg.lr_dir, rels[0]),), err))
        return items

    # -- per item -----------------------------------------------------------------------------
    def setup(self) -> None:
        if self._models is not None:
            return
        import torch

        from ..models import load_sr

        cfg = self.cfg
        try:
            device = torch.device(cfg.device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise JobError(f"--device {cfg.device}: torch sees no CUDA device")
            # On CPU the precision goes to the loader: auto keeps torch for a non-fp32 request (the
            # per-call precision below then applies) and OpenVINO takes it as its inference hint.
            prec = ({"precision": cfg.resolved_precision()}
                    if device.type == "cpu" and cfg.runtime in ("auto", "openvino") else {})
            gan = load_sr(cfg.gan_model, device=cfg.device, runtime=cfg.runtime, **prec)
            mse = load_sr(cfg.mse_model, device=cfg.device, runtime=cfg.runtime, **prec)
            seg = None
            if cfg.seg_model:
                from ..models import load_segmenter

                seg = load_segmenter(cfg.seg_model, device=cfg.device, runtime=cfg.runtime)
        except JobError:
            raise
        except Exception as exc:  # any loader failure: one clear job-level error
            from .engine import describe

            raise JobError(f"cannot load the models: {describe(exc)}") from exc
        if gan.scale != mse.scale:
            raise JobError(f"the GAN model is x{gan.scale} and the MSE model x{mse.scale}: "
                           f"their outputs must have the same size")
        self._models = _Models(gan, mse, seg, device)

    def read(self, item: Item) -> _Decoded:
        t0 = time.perf_counter()
        img = imageio.read_rgb(item.inputs[0])  # grey -> RGB, alpha dropped, CMYK -> RGB, 16-bit kept
        if min(img.shape[:2]) < 1:
            raise ValueError(f"{item.inputs[0]}: empty image")
        return _Decoded(img, time.perf_counter() - t0)

    def tile_for(self, h: int, w: int) -> int:
        if self.cfg.tile > 0:
            return int(self.cfg.tile)
        return AUTO_TILE if h * w > AUTO_TILE_MAX_PIXELS else 0

    def info(self, item, data):
        return {"lr_size": list(data.img.shape[:2])}

    def batch_key(self, item, data):
        h, w = data.img.shape[:2]
        return (data.img.shape, data.img.dtype.str, self.tile_for(h, w))

    def compute(self, items, datas):
        import torch

        from ..detect_d import detect_with_d

        cfg, m = self.cfg, self._models
        imgs = np.stack([d.img for d in datas])
        maxv = 65535.0 if imgs.dtype == np.uint16 else 255.0
        qdtype = torch.int32 if imgs.dtype == np.uint16 else torch.uint8
        h, w = imgs.shape[1:3]
        tile = self.tile_for(h, w)
        sync = (torch.cuda.synchronize if m.device.type == "cuda" else (lambda: None))
        t = {}
        with torch.inference_mode():
            t0 = time.perf_counter()
            x = torch.from_numpy(imgs).to(m.device).permute(0, 3, 1, 2).float().div_(maxv)
            outs = []
            for name, model in (("gan", m.gan), ("mse", m.mse)):
                # a runtime runner (ONNX Runtime, TensorRT, OpenVINO) has its precision fixed when it is built
                prec = "fp32" if getattr(model, "runner", None) is not None else cfg.resolved_precision()
                y = model.upscale(x, tile=tile, tile_pad=cfg.tile_pad, precision=prec)
                # the reference tools' rounding: floor(v * max + 0.5), clamped
                y = (y.double() if maxv > 255 else y.float()).mul_(maxv).add_(0.5).floor_().clamp_(0, maxv).to(qdtype)
                if qdtype == torch.int32:
                    y = y.to(torch.uint16) if hasattr(torch, "uint16") else y
                sync()
                t1 = time.perf_counter()
                t[name] = t1 - t0
                t0 = t1
                outs.append(y)
            gan, mse = outs
            labels = None
            if m.seg is not None:
                labels = m.seg.segment(gan)
                sync()
                t1 = time.perf_counter()
                t["seg"] = t1 - t0
                t0 = t1
            # One D computation gives the mask and the manifest's D statistics.
            masks, counts, d = detect_with_d(gan, mse, labels, threshold=cfg.threshold,
                                             area_threshold=cfg.area_threshold, window=cfg.window,
                                             backend=cfg.backend)
            dstats = _d_statistics(d, cfg.threshold)
            masks = masks.cpu().numpy() if hasattr(masks, "cpu") else np.asarray(masks)
            counts = counts.cpu().numpy() if hasattr(counts, "cpu") else np.asarray(counts)
            t["detect"] = time.perf_counter() - t0
            need_sr = cfg.save_sr != "none" or cfg.overlay or cfg.save_repaired != "none"
            gan_np = _to_hwc(gan) if need_sr else None
            mse_np = _to_hwc(mse) if need_sr else None
            seg_np = labels.cpu().numpy().astype(np.uint8) if labels is not None and hasattr(labels, "cpu") else labels
        n = len(datas)
        results = []
        for i in range(n):
            timings = {"decode": round(datas[i].seconds, 6)}
            timings.update({k: round(v / n, 6) for k, v in t.items()})
            results.append({"mask": masks[i].astype(bool, copy=False), "regions": int(counts[i]),
                            "d": dstats[i], "tile": tile, "timings": timings,
                            "gan": None if gan_np is None else gan_np[i],
                            "mse": None if mse_np is None else mse_np[i],
                            "seg": None if seg_np is None else np.asarray(seg_np[i], np.uint8)})
        return results

    def encode(self, item, data, result):
        cfg = self.cfg
        t0 = time.perf_counter()
        key = item.key[len(MASK_DIR) + 1:-4]
        files = []
        if cfg.save_sr != "none":
            files.append((f"{GAN_DIR}/{key}.{cfg.save_sr}", encode_sr(result["gan"], cfg.save_sr)))
            files.append((f"{MSE_DIR}/{key}.{cfg.save_sr}", encode_sr(result["mse"], cfg.save_sr)))
        if result["seg"] is not None:
            files.append((f"{SEG_DIR}/{key}.png", encode_sr(result["seg"], "png")))
        overlay = f"{OVERLAY_DIR}/{key}.jpg" if cfg.overlay else None
        gan, mse = result["gan"], result["mse"]
        if overlay is not None and gan.dtype != np.uint8:
            gan, mse = (np.round(a.astype(np.float32) / 257.0).astype(np.uint8) for a in (gan, mse))
        files += encode_mask_outputs(result["mask"], gan, mse, item.key, overlay)
        mask = result["mask"]
        fields = {"size": list(mask.shape), **mask_stats(mask), "d": result["d"], "tile": result["tile"]}
        if cfg.save_repaired != "none":
            from ..repair import repair, repair_stats

            fixed = repair(result["gan"], result["mse"], mask, feather=int(cfg.feather))
            files.append((f"{REPAIRED_DIR}/{key}.{cfg.save_repaired}", encode_sr(fixed, cfg.save_repaired)))
            fields.update(repair_stats(mask, int(cfg.feather)))
        fields["timings"] = dict(result["timings"], write=round(time.perf_counter() - t0, 6))
        return files, fields

    def recover(self, item, out_dir: Path):
        mask = imageio.read_mask(out_dir / item.key) != 0
        return {"size": list(mask.shape), **mask_stats(mask), "d": None}

    def summary_lines(self):
        out = self.cfg.out_dir
        lines = [f"  masks:    {out}/{MASK_DIR}/<relative path>.png"]
        if self.cfg.save_sr != "none":
            lines.append(f"  SR pairs: {out}/{GAN_DIR}/, {out}/{MSE_DIR}/ (.{self.cfg.save_sr})")
        if self.cfg.seg_model:
            lines.append(f"  labels:   {out}/{SEG_DIR}/")
        if self.cfg.save_repaired != "none":
            lines.append(f"  repaired: {out}/{REPAIRED_DIR}/<relative path>.{self.cfg.save_repaired}")
        if self.cfg.overlay:
            lines.append(f"  overlays: {out}/{OVERLAY_DIR}/<relative path>.jpg")
        lines.append(f"  manifest: {out}/manifest.jsonl   (rank it: desra-fast select --run {out})")
        lines.append(f"  review:   desra-fast report --run {out}   (writes {out}/report/index.html)")
        return lines


def _to_hwc(t) -> np.ndarray:
    a = t.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return a.astype(np.uint16) if a.dtype == np.int32 else a


def _d_statistics(d, threshold: float) -> List[Dict[str, float]]:
    """Per image of a (N, h, w) D map: mean, min, 1st and 5th percentile, share below the
    threshold (before the semantic weights and the morphology)."""
    import torch

    d = torch.as_tensor(d).float()
    flat = d.reshape(d.shape[0], -1)
    k = flat.shape[1]
    p1 = torch.kthvalue(flat, max(1, int(0.01 * k)), dim=1).values
    p5 = torch.kthvalue(flat, max(1, int(0.05 * k)), dim=1).values
    stats = torch.stack([flat.mean(1), flat.amin(1), p1, p5, (flat < threshold).float().mean(1)], 1).cpu().tolist()
    return [{"mean": round(a, 6), "min": round(b, 6), "p1": round(c, 6), "p5": round(e, 6),
             "below_threshold": round(f, 6)} for a, b, c, e, f in stats]


def encode_sr(img: np.ndarray, fmt: str) -> bytes:
    """Encode an RGB (H, W, 3) (or label (H, W)) array: PNG keeps 16-bit; JPEG (quality 95) and
    WebP (lossless) are 8-bit."""
    import cv2

    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        if img.dtype == np.uint16:
            img = np.round(img.astype(np.float32) / 257.0).astype(np.uint8)
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == "jpg" else [cv2.IMWRITE_WEBP_QUALITY, 101]
        ok, buf = cv2.imencode("." + fmt, img, params)
    if not ok:  # pragma: no cover
        raise ValueError(f"{fmt} encoding failed")
    return buf.tobytes()
