"""End to end: a folder of LR images -> MSE-SR, GAN-SR, (segmentation), DeSRA masks, manifest;
then ``desra-fast select`` ranks the images into train/val lists (the paper's data step).

>>> from desra_fast import pipeline
>>> res = pipeline.run("imagenet/val", gan_model="RealESRGAN_x4plus.pth",
...                    mse_model="RealESRNet_x4plus.pth", out="desra_run", device="cuda", batch=4)
>>> res.exit_code                      # 1 when any input failed (see OUT/manifest.jsonl)

Per image: decode (reader threads) -> both SR models (same-size images batched, models loaded
once per worker) -> segmentation of GAN-SR (with ``seg_model``) -> :func:`desra_fast.detect` on
the device the SR outputs are on -> mask PNG, manifest line, optional SR outputs and overlay
(writer threads). Crash safety, resume, failure recording and the settings check are those of
:mod:`desra_fast.jobs`. ``engine="ray"`` runs the same stages on Ray Data
(:mod:`desra_fast.pipeline.ray_engine`).
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..jobs import JobResult, RunOptions, run_job
from ..jobs.run import (AUTO_TILE, AUTO_TILE_MAX_PIXELS, GAN_DIR, MASK_DIR, MSE_DIR, OVERLAY_DIR, SEG_DIR,
                  PipelineConfig, PipelineJob)

ENGINES = ("local", "ray")


def run(lr_dir: str, gan_model: str, mse_model: str, out: str, *, seg_model: Optional[str] = None,
        engine: str = "local", device: str = "cpu", runtime: str = "auto", precision: str = "auto",
        tile: int = 0, tile_pad: Optional[int] = None, batch: int = 1, save_sr: str = "none", overlay: bool = False,
        save_repaired: str = "none", feather: int = 0,
        only: Optional[Sequence[str]] = None, limit: Optional[int] = None, threshold: float = 0.7,
        area_threshold: int = 4000, window: str = "gaussian", backend: str = "auto", workers: int = 2,
        retry_failed: bool = False, progress: Optional[bool] = None, fsync: bool = True,
        ray_address: Optional[str] = None, ray_actors: Optional[int] = None, log=sys.stderr) -> JobResult:
    """Run (or resume) the whole DeSRA data step over ``lr_dir`` into ``out``.

    Args:
        lr_dir: folder of LR images (flat, or nested class folders as ImageNet val; PNG/JPEG/WebP,
            8/16-bit, grey and CMYK JPEGs converted to RGB, alpha dropped).
        gan_model, mse_model, seg_model: model files for :func:`desra_fast.models.load_sr`
            (``.pth``/``.safetensors``/ncnn ``.param``...) and ``load_segmenter``.
        out: output folder (layout in :mod:`desra_fast.jobs.run`).
        engine: ``"local"`` (threads in this process) or ``"ray"`` (Ray Data; ``ray_address``
            of an existing cluster, else a local instance; ``ray_actors`` model actors).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; runtime: passed to the loaders.
        precision: ``"auto"`` (fp16 on CUDA, fp32 on CPU), ``"fp32"``, ``"fp16"``, ``"bf16"``.
        tile: SR tile size in LR pixels; 0 = untiled up to ``AUTO_TILE_MAX_PIXELS`` LR pixels,
            tiles of ``AUTO_TILE`` above. tile_pad: context around each tile (None: the model's
            measured seam-free context and blended overlap, see
            :func:`desra_fast.models.SRModel.upscale`).
        batch: same-size images per model call.
        save_sr: ``"none"`` (default; 50,000 SR pairs are about a terabyte), ``"png"``,
            ``"jpg"`` or ``"webp"``: keep ``OUT/gan/`` and ``OUT/mse/``.
        overlay: also write ``OUT/overlays/<rel>.jpg``.
        save_repaired: ``"none"`` (default), ``"png"``, ``"jpg"`` or ``"webp"``: write
            ``OUT/repaired/<rel>``, GAN-SR with the detected regions replaced by MSE-SR
            (:func:`desra_fast.repair`, ``feather`` px of soft edge); the manifest line gains
            ``replaced_px``, ``blended_px`` and ``replaced_fraction``.
        only: relative paths (or paths without extension) to process, e.g. the lines of
            ``desra-fast select``'s ``train.txt``; limit: process the first N (sorted).
        threshold, area_threshold, window, backend: as :func:`desra_fast.detect`.
        workers, retry_failed, progress, fsync: as ``desra-fast detect``.

    Returns:
        :class:`desra_fast.jobs.JobResult`. Raises :class:`desra_fast.jobs.JobError` when the
        job cannot start (missing folder or model, changed settings, another job running).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    cfg = PipelineConfig(lr_dir=lr_dir, gan_model=gan_model, mse_model=mse_model, out_dir=out,
                         seg_model=seg_model, device=device, runtime=runtime, precision=precision, tile=tile,
                         tile_pad=tile_pad, batch=batch, save_sr=save_sr, overlay=overlay,
                         save_repaired=save_repaired, feather=feather,
                         only=list(only) if only is not None else None, limit=limit, threshold=threshold,
                         area_threshold=area_threshold, window=window, backend=backend)
    opts = RunOptions(workers=workers, retry_failed=retry_failed, progress=progress, fsync=fsync)
    executor = None
    if engine == "ray":
        from .ray_engine import RayExecutor

        executor = RayExecutor(address=ray_address, actors=ray_actors)
    return run_job(PipelineJob(cfg), out, opts, log=log, executor=executor)


__all__ = ["run", "PipelineConfig", "PipelineJob", "ENGINES", "AUTO_TILE", "AUTO_TILE_MAX_PIXELS",
           "MASK_DIR", "GAN_DIR", "MSE_DIR", "SEG_DIR", "OVERLAY_DIR"]
