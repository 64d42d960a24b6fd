"""The DeSRA fine-tune (paper section 3.3): Real-ESRGAN's GAN training on (LR, pseudo-GT) pairs.

Per iteration (as Real-ESRGAN's ``RealESRGANModel.optimize_parameters``):

1. generator step, discriminator frozen: ``out = G(lr)``;
   ``L_G = L1(out, gt) + perceptual(out, gt) + gan_weight * BCE(D(out), real)``; Adam step;
2. discriminator step: ``BCE(D(gt), real)`` and ``BCE(D(out.detach()), fake)``, each
   back-propagated; Adam step;
3. EMA of the generator, decay 0.999.

Defaults are Real-ESRGAN's fine-tuning recipe: Adam lr 1e-4, betas (0.9, 0.99), 1000 iterations,
total batch 48, HR patch 256. No USM sharpening of the target: the pseudo-GT is already the
GAN output outside the artifact regions.

Checkpoints (:mod:`desra_fast.train.checkpoint`) every ``ckpt_every`` iterations and at the end
hold everything the next iteration depends on, so ``resume=True`` continues bit-identically on
the same machine and thread count; a finished run resumed is a no-op. The final model
``OUT/net_g_final.pth`` is ``{'params_ema': ..., 'params': ...}`` in BasicSR's RRDBNet layout.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..imageio import write_bytes_atomic
from . import distributed
from .checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, rng_state,
                         save_checkpoint, set_rng_state)
from .data import FinetuneData
from .discriminator import UNetDiscriminatorSN
from .losses import GANLoss, L1Loss, PerceptualLoss, ema_update

FINAL_NAME = "net_g_final.pth"
CKPT_DIR = "checkpoints"
LOG_NAME = "train_log.jsonl"

Hook = Callable[[str, int], None]


@dataclass
class FinetuneConfig:
    """Settings of a fine-tune run (defaults: Real-ESRGAN's fine-tuning recipe)."""

    iters: int = 1000
    ckpt_every: int = 100
    batch: int = 48
    patch: int = 256
    learning_rate: float = 1e-4
    betas: Tuple[float, float] = (0.9, 0.99)
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    gan_weight: float = 0.1
    ema_decay: float = 0.999
    seed: int = 0
    keep_checkpoints: int = 2

    def check(self) -> None:
        for name in ("iters", "ckpt_every", "batch", "patch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("learning_rate", "pixel_weight", "perceptual_weight", "gan_weight", "ema_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def fingerprint(self) -> Dict[str, object]:
        """The settings a resumed run must share (``iters`` may grow, ``ckpt_every`` change)."""
        d = asdict(self)
        for k in ("iters", "ckpt_every", "keep_checkpoints"):
            d.pop(k)
        d["betas"] = list(d["betas"])
        return d


@dataclass
class FinetuneResult:
    final_path: Path
    iterations: int
    resumed_from: int
    seconds: float
    last_losses: Dict[str, float] = field(default_factory=dict)


def state_fingerprint(sd: Dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, shapes and bytes (identifies the starting weights)."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _write_final(path: Path, g: nn.Module, ema: nn.Module) -> None:
    buf = io.BytesIO()
    torch.save({"params_ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()},
                "params": {k: v.detach().cpu() for k, v in g.state_dict().items()}}, buf)
    write_bytes_atomic(path, buf.getbuffer(), fsync=True)


def finetune(net_g: nn.Module, data: FinetuneData, out_dir: os.PathLike, config: FinetuneConfig = None, *,
             vgg: Optional[nn.Module] = None, net_d: Optional[nn.Module] = None, device: str = "cpu",
             resume: bool = False, progress: bool = True, hooks: Optional[Hook] = None,
             allow_random_vgg: bool = False) -> FinetuneResult:
    """Fine-tune ``net_g`` on ``data``; write checkpoints and ``OUT/net_g_final.pth``.

    Args:
        net_g: the GAN-SR generator to repair (an :class:`~desra_fast.models.RRDBNet`, or any
            module (N, 3, h, w) -> (N, 3, s*h, s*w) float RGB); it is trained in place.
        data: the (LR, pseudo-GT) pairs; ``data.scale`` must be the generator's scale.
        out_dir: writes ``checkpoints/``, ``net_g_final.pth`` and ``train_log.jsonl`` there.
        config: :class:`FinetuneConfig` (Real-ESRGAN's recipe by default).
        vgg: the perceptual loss's :class:`~desra_fast.train.vgg.VGG19Features`; required when
            ``config.perceptual_weight > 0``.
        net_d: the discriminator to start from; None: a random ``UNetDiscriminatorSN(3, 64)``
            drawn from ``config.seed``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``. Under ``torchrun`` each rank uses its own.
        resume: continue from the newest complete checkpoint in ``out_dir/checkpoints``.
            Without it, an ``out_dir`` that already holds checkpoints is refused.
        hooks: ``hooks(event, iteration)`` after each generator step (``"g_step"``), iteration
            (``"iteration"``) and checkpoint (``"checkpoint"``) - for tests and monitoring.

    Returns:
        a :class:`FinetuneResult`.
    """
    config = config or FinetuneConfig()
    config.check()
    out = Path(out_dir)
    ctx = distributed.setup(device)
    try:
        return _run(net_g, data, out, config, ctx, vgg, net_d, resume, progress, hooks, allow_random_vgg)
    finally:
        ctx.close()


def _run(net_g, data, out, config, ctx, vgg, net_d, resume, progress, hooks, allow_random_vgg):
    t0 = time.perf_counter()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / CKPT_DIR
    final = out / FINAL_NAME
    if data.patch != config.patch:
        raise ValueError(f"data patch {data.patch} differs from config.patch {config.patch}")
    if config.batch % ctx.world:
        raise ValueError(f"total batch {config.batch} is not divisible by {ctx.world} processes")
    dev = ctx.device
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)

    init_fp = state_fingerprint(net_g.state_dict())
    fingerprint = dict(config.fingerprint(), data_keys=hashlib.sha256(
        "\n".join(s.key for s in data.samples).encode()).hexdigest(), scale=data.scale)

    net_g = net_g.to(dev).train().requires_grad_(True)
    ema = copy.deepcopy(net_g).eval().requires_grad_(False)
    if net_d is None:
        g = torch.random.get_rng_state()
        torch.manual_seed(config.seed)
        net_d = UNetDiscriminatorSN(3, 64)
        torch.random.set_rng_state(g)
    net_d = net_d.to(dev).train()
    opt_g = torch.optim.Adam(net_g.parameters(), lr=config.learning_rate, betas=tuple(config.betas))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=config.learning_rate, betas=tuple(config.betas))

    pix = L1Loss(config.pixel_weight)
    percep = None
    if config.perceptual_weight > 0:
        if vgg is None:
            raise ValueError("perceptual_weight > 0 needs the VGG19 weights (vgg=load_vgg19(...)); "
                             "or set perceptual_weight 0")
        percep = PerceptualLoss(vgg.to(dev), weight=config.perceptual_weight, allow_random=allow_random_vgg)
    gan = GANLoss(config.gan_weight)
    use_d = config.gan_weight > 0

    start = 0
    existing = list_checkpoints(ckpt_dir)
    if resume:
        state = latest_checkpoint(ckpt_dir)
        if state is not None:
            saved = state["config"]
            if saved.get("fingerprint") != fingerprint:
                diff = sorted(k for k in set(saved.get("fingerprint", {})) | set(fingerprint)
                              if saved.get("fingerprint", {}).get(k) != fingerprint.get(k))
                raise CheckpointError(f"{ckpt_dir}: the checkpoint was made with other settings "
                                      f"({', '.join(diff)} differ); use another --out or the same settings")
            if saved.get("init_weights") != init_fp:
                raise CheckpointError(f"{ckpt_dir}: the checkpoint started from other generator weights "
                                      "(--model differs)")
            net_g.load_state_dict(state["net_g"])
            ema.load_state_dict(state["net_g_ema"])
            net_d.load_state_dict(state["net_d"])
            opt_g.load_state_dict(state["optimizer_g"])
            opt_d.load_state_dict(state["optimizer_d"])
            set_rng_state(state["rng"])
            start = int(state["iteration"])
            if int(state["data"]["samples_drawn"]) != start * config.batch:
                raise CheckpointError(f"{ckpt_dir}: inconsistent data position in the checkpoint")
            del state
    elif existing:
        raise CheckpointError(f"{out}: holds checkpoints of an earlier run ({existing[-1].name}); "
                              "pass --resume to continue it, or choose another --out")

    if start >= config.iters:
        if ctx.is_main and not final.is_file():  # killed between the last checkpoint and the final file
            _write_final(final, net_g, ema)
        ctx.barrier()
        return FinetuneResult(final, start, start, time.perf_counter() - t0)

    g_run = distributed.wrap(net_g, ctx)
    d_run = distributed.wrap(net_d, ctx)
    bar = None
    if progress and ctx.is_main:
        from tqdm import tqdm

        bar = tqdm(total=config.iters, initial=start, desc="finetune", unit="it", dynamic_ncols=True)
    log = open(out / LOG_NAME, "a", encoding="utf-8") if ctx.is_main else None
    losses: Dict[str, float] = {}
    try:
        for it in range(start, config.iters):
            lr_img, gt = data.batch(it, config.batch, ctx.rank, ctx.world)
            lr_img, gt = lr_img.to(dev, non_blocking=True), gt.to(dev, non_blocking=True)

            # 1. generator step (discriminator frozen; its plain module: no DDP gradient sync)
            net_d.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            sr = g_run(lr_img)
            terms = {"l_pix": pix(sr, gt)}
            if percep is not None:
                terms["l_percep"] = percep(sr, gt)
            if use_d:
                terms["l_gan"] = gan(net_d(sr), True, is_disc=False)
            total = sum(terms.values())
            if not torch.isfinite(total.detach()):
                raise FloatingPointError(
                    f"iteration {it + 1}: non-finite generator loss ("
                    + ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in terms.items())
                    + "); nothing was written past the last checkpoint: lower --learning-rate and resume")
            total.backward()
            opt_g.step()
            if hooks:
                hooks("g_step", it + 1)

            # 2. discriminator step
            if use_d:
                net_d.requires_grad_(True)
                opt_d.zero_grad(set_to_none=True)
                l_real = gan(d_run(gt), True, is_disc=True)
                l_real.backward()
                l_fake = gan(d_run(sr.detach().clone()), False, is_disc=True)
                l_fake.backward()
                opt_d.step()
                terms["l_d_real"], terms["l_d_fake"] = l_real, l_fake

            # 3. EMA
            ema_update(ema, net_g, config.ema_decay)

            done = it + 1
            if bar is not None or log is not None:
                losses = {k: float(v.detach()) for k, v in terms.items()}
            if log is not None:
                log.write(json.dumps({"iter": done, **{k: round(v, 6) for k, v in losses.items()}}) + "\n")
            if bar is not None:
                bar.set_postfix({k[2:]: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
                bar.update(1)
            if hooks:
                hooks("iteration", done)
            if done % config.ckpt_every == 0 or done == config.iters:
                if ctx.is_main:
                    log.flush()
                    save_checkpoint(ckpt_dir, {
                        "iteration": done,
                        "net_g": _cpu(net_g.state_dict()), "net_g_ema": _cpu(ema.state_dict()),
                        "net_d": _cpu(net_d.state_dict()),
                        "optimizer_g": opt_g.state_dict(), "optimizer_d": opt_d.state_dict(),
                        "rng": rng_state(),
                        "data": {"samples_drawn": done * config.batch, "seed": data.seed},
                        "config": {"fingerprint": fingerprint, "init_weights": init_fp},
                    }, keep=config.keep_checkpoints)
                ctx.barrier()
                if hooks:
                    hooks("checkpoint", done)
        if ctx.is_main:
            _write_final(final, net_g, ema)
        ctx.barrier()
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    return FinetuneResult(final, config.iters, start, time.perf_counter() - t0, losses)


def _cpu(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


__all__ = ["finetune", "FinetuneConfig", "FinetuneResult", "FINAL_NAME", "CKPT_DIR", "state_fingerprint"]
