"""The DeSRA fine-tune (paper section 3.3): Real-ESRGAN's GAN training on (LR, pseudo-GT) pairs.

Per iteration (as Real-ESRGAN's ``RealESRGANModel.optimize_parameters``):

1. generator step, discriminator frozen: ``out = G(lr)``;
   ``L_G = L1(out, gt) + perceptual(out, gt) + gan_weight * BCE(D(out), real)``; Adam step;
2. discriminator step: ``BCE(D(gt), real)`` and ``BCE(D(out.detach()), fake)``, each
   back-propagated; Adam step;
3. EMA of the generator.

The first ``netd_warmup`` iterations are discriminator-only (BasicSR's ``net_d_init_iters``): the
generator is run without gradient and neither stepped nor averaged, so a random discriminator
learns what the pseudo-GT looks like before its gradient reaches the generator.

Defaults are Real-ESRGAN's fine-tuning recipe (Adam lr 1e-4, betas (0.9, 0.99), 1000 iterations,
total batch 48, HR patch 256, EMA 0.999 at 1000 iterations) with these departures, each an option
(docs/finetune.md gives the measurements): ``focus`` (artifact-centred crops), ``netd_warmup``
(when the discriminator starts from random weights), ``perceptual_norm="target"`` (each VGG
layer's distance relative to its mean |feature| on the training targets, instead of raw
torchvision-scale features), ``ema_decay="auto"`` (``0.999 ** (1000 / generator steps)``: the
share of the start weights left in the EMA is the recipe's at any run length), ``gan_outside``
(the generator's GAN term outside the masks dilated by ``gan_margin``: 0 by default, so outside the
artifacts the generator only sees L1 + perceptual toward its own output and cannot drift; 1 is the
recipe), ``outside_target`` (outside the masks the target is the *starting generator's own output on
the same crop*, computed by a frozen copy, instead of the crop of the full-image pseudo-GT: the
two differ at every crop's zero-padded border, and that difference alone retrains the whole
network; ``"pseudo-gt"`` is the recipe). No USM sharpening of the target by default
(``gt_usm``): the pseudo-GT is the model's own output outside the artifact regions.

Checkpoints (:mod:`desra_fast.train.checkpoint`) every ``ckpt_every`` iterations and at the end
hold everything the next iteration depends on (the perceptual scale measured at the start
included), so ``resume=True`` continues bit-identically on the same machine and thread count, in
fp32 and bf16; a finished run resumed is a no-op. The final model ``OUT/net_g_final.pth`` is
``{'params_ema': ..., 'params': ...}`` in BasicSR's RRDBNet layout.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils import write_bytes_atomic
from . import distributed, precision as amp
from .checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, rng_state,
                         save_checkpoint, set_rng_state)
from .data import FinetuneData
from .discriminator import UNetDiscriminatorSN
from .losses import DEFAULT_LAYER_WEIGHTS, GANLoss, L1Loss, PerceptualLoss, ema_update, feature_norms

FINAL_NAME = "net_g_final.pth"
CKPT_DIR = "checkpoints"
LOG_NAME = "train_log.jsonl"
#: Discriminator-only iterations when the discriminator starts from random weights, as a share of
#: ``iters`` (capped at ``NETD_WARMUP_MAX``); see docs/finetune.md for the measurement.
NETD_WARMUP_SHARE = 0.1
NETD_WARMUP_MAX = 100
#: What the generator is trained toward outside the masks (``FinetuneConfig.outside_target``).
OUTSIDE_TARGETS = ("model", "pseudo-gt")
#: Samples whose pseudo-GT crops measure the perceptual loss's per-layer scale.
NORM_SAMPLES = 16
#: The networks' memory format while training.
MEMORY_FORMAT = torch.channels_last

Hook = Callable[[str, int], None]


@dataclass
class FinetuneConfig:
    """Settings of a fine-tune run (defaults: Real-ESRGAN's fine-tuning recipe, plus the options
    listed in the module docstring).

    ``precision``: ``"auto"|"fp32"|"bf16"`` (:mod:`desra_fast.train.precision`). ``focus``: share
    in [0, 1] of artifact-centred crops. ``netd_warmup``: discriminator-only iterations, None =
    ``min(NETD_WARMUP_MAX, NETD_WARMUP_SHARE * iters)`` when the discriminator is random, 0 when
    one is given. ``ema_decay``: a number in [0, 1) or ``"auto"``. ``perceptual_norm``:
    ``"target"`` or ``"raw"``. ``gan_outside``: weight in [0, 1] of the generator's GAN term
    farther than ``gan_margin`` HR pixels from every masked pixel (1: the recipe).
    ``outside_target``: the target outside the masks, ``"model"`` (the starting generator's own
    output on the same LR crop) or ``"pseudo-gt"`` (the pseudo-GT image's crop: the recipe).
    ``outside_weight``: weight >= 0 of the L1 and perceptual terms' pixels outside the masks,
    relative to the masked pixels' 1 (1: the recipe, one weight for all pixels).
    """

    iters: int = 1000
    ckpt_every: int = 100
    batch: int = 48
    patch: int = 256
    learning_rate: float = 1e-4
    betas: Tuple[float, float] = (0.9, 0.99)
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    gan_weight: float = 0.1
    ema_decay: Union[float, str] = "auto"
    seed: int = 0
    keep_checkpoints: int = 2
    precision: str = "auto"
    focus: float = 0.5
    netd_warmup: Optional[int] = None
    perceptual_norm: str = "target"
    gt_usm: bool = False
    gan_outside: float = 0.0
    gan_margin: int = 16
    outside_target: str = "model"
    outside_weight: float = 1.0

    def check(self) -> None:
        for name in ("iters", "ckpt_every", "batch", "patch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("learning_rate", "pixel_weight", "perceptual_weight", "gan_weight", "outside_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.ema_decay != "auto" and not (isinstance(self.ema_decay, (int, float))
                                             and 0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be 'auto' or in [0, 1), got {self.ema_decay!r}")
        for name in ("focus", "gan_outside"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        for name in ("netd_warmup", "gan_margin"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.netd_warmup is not None and self.netd_warmup >= self.iters:
            raise ValueError(f"netd_warmup {self.netd_warmup} leaves no generator step in {self.iters} iterations")
        if self.precision not in amp.PRECISIONS:
            raise ValueError(f"precision must be one of {amp.PRECISIONS}, got {self.precision!r}")
        if self.outside_target not in OUTSIDE_TARGETS:
            raise ValueError(f"outside_target must be one of {OUTSIDE_TARGETS}, got {self.outside_target!r}")
        if self.perceptual_norm not in ("target", "raw"):
            raise ValueError(f"perceptual_norm must be 'target' or 'raw', got {self.perceptual_norm!r}")

    def warmup(self, random_netd: bool) -> int:
        """The discriminator-only iterations of this run."""
        if self.netd_warmup is not None:
            return self.netd_warmup
        return min(NETD_WARMUP_MAX, int(NETD_WARMUP_SHARE * self.iters)) if random_netd else 0

    def decay(self, warmup: int) -> float:
        """The EMA decay: the number given, or for ``"auto"`` ``0.999 ** (1000 / G steps)``."""
        if self.ema_decay == "auto":
            return 0.999 ** (1000.0 / max(1, self.iters - warmup))
        return float(self.ema_decay)

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
    precision: str = "fp32"
    seconds_per_iter: float = float("nan")


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
    torch.save({"params_ema": _cpu(ema.state_dict()), "params": _cpu(g.state_dict())}, buf)
    write_bytes_atomic(path, buf.getbuffer(), fsync=True)


def finetune(net_g: nn.Module, data: FinetuneData, out_dir: os.PathLike, config: FinetuneConfig = None, *,
             vgg: Optional[nn.Module] = None, net_d: Optional[nn.Module] = None, device: str = "cpu",
             resume: bool = False, progress: bool = True, hooks: Optional[Hook] = None,
             allow_random_vgg: bool = False) -> FinetuneResult:
    """Fine-tune ``net_g`` on ``data``; write checkpoints and ``OUT/net_g_final.pth``.

    Args:
        net_g: the GAN-SR generator to repair (an :class:`~desra_fast.models.RRDBNet`, or any
            module (N, 3, h, w) -> (N, 3, s*h, s*w) float RGB); it is trained in place.
        data: the (LR, pseudo-GT) pairs; ``data.scale`` must be the generator's scale, and
            ``data.gt_usm`` must be ``config.gt_usm``; ``data.focus`` is set to ``config.focus``.
        out_dir: writes ``checkpoints/``, ``net_g_final.pth`` and ``train_log.jsonl`` there.
        config: :class:`FinetuneConfig`.
        vgg: the perceptual loss's :class:`~desra_fast.train.vgg.VGG19Features`; required when
            ``config.perceptual_weight > 0``.
        net_d: the discriminator to start from; None: a random ``UNetDiscriminatorSN(3, 64)``
            drawn from ``config.seed`` (and ``config.warmup(True)`` warm-up iterations).
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
    ctx = distributed.setup(device)
    try:
        trainer = _Trainer(net_g, data, Path(out_dir), config, ctx, vgg, net_d, allow_random_vgg)
        return trainer.run(resume, progress, hooks)
    finally:
        net_g.to(memory_format=torch.contiguous_format)
        ctx.close()


class _Trainer:
    """One run's networks, optimisers, losses and state; :meth:`run` is the loop."""

    def __init__(self, net_g, data, out, config, ctx, vgg, net_d, allow_random_vgg):
        self.t0 = time.perf_counter()
        self.data, self.out, self.cfg, self.ctx = data, out, config, ctx
        if data.patch != config.patch:
            raise ValueError(f"data patch {data.patch} differs from config.patch {config.patch}")
        if data.gt_usm != config.gt_usm:
            raise ValueError(f"the data's gt_usm ({data.gt_usm}) differs from config.gt_usm ({config.gt_usm}): "
                             "build FinetuneData(..., gt_usm=config.gt_usm)")
        data.focus = float(config.focus)  # the crops' focus is the run's setting
        if config.batch % ctx.world:
            raise ValueError(f"total batch {config.batch} is not divisible by {ctx.world} processes")
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        self.dev = dev = ctx.device
        self.precision = amp.resolve(config.precision, dev)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        random.seed(config.seed)
        self.init_fp = state_fingerprint(net_g.state_dict())
        self.warmup = config.warmup(net_d is None)
        self.decay = config.decay(self.warmup)
        self.fingerprint = dict(config.fingerprint(), data_keys=hashlib.sha256(
            "\n".join(s.key for s in data.samples).encode()).hexdigest(), scale=data.scale,
            precision=self.precision, netd_warmup=self.warmup)

        # channels-last activations and weights: oneDNN's (and cuDNN's) faster convolution layout
        # for training (measured 1.2x on G + D forward and backward here); state dicts are saved
        # in the usual contiguous layout, and the caller's module is given back in it.
        self.net_g = net_g.to(dev, memory_format=MEMORY_FORMAT).train().requires_grad_(True)
        self.ema = copy.deepcopy(self.net_g).eval().requires_grad_(False)
        # The frozen starting generator, whose output on each crop is the target outside the masks:
        # the same crop through the same weights, so at the start the loss there is exactly zero
        # (a crop's zero-padded border differs from the full-image pseudo-GT, which would otherwise
        # teach every crop a new border) and only the masked pixels can move the weights.
        self.g0 = (copy.deepcopy(self.net_g).eval().requires_grad_(False)
                   if config.outside_target == "model" else None)
        if net_d is None:
            g = torch.random.get_rng_state()
            torch.manual_seed(config.seed)
            net_d = UNetDiscriminatorSN(3, 64)
            torch.random.set_rng_state(g)
        self.net_d = net_d.to(dev, memory_format=MEMORY_FORMAT).train()
        betas = tuple(config.betas)
        self.opt_g = torch.optim.Adam(self.net_g.parameters(), lr=config.learning_rate, betas=betas)
        self.opt_d = torch.optim.Adam(self.net_d.parameters(), lr=config.learning_rate, betas=betas)
        self.pix = L1Loss(config.pixel_weight)
        self.gan = GANLoss(config.gan_weight)
        self.use_d = config.gan_weight > 0
        self.vgg, self.allow_random_vgg, self.percep, self.norm = None, allow_random_vgg, None, None
        if config.perceptual_weight > 0:
            if vgg is None:
                raise ValueError("perceptual_weight > 0 needs the VGG19 weights (vgg=load_vgg19(...)); "
                                 "or set perceptual_weight 0")
            self.vgg = vgg.to(dev, memory_format=MEMORY_FORMAT)
        self.start = 0

    # ---------------------------------------------------------------- state
    def restore(self, resume: bool) -> None:
        ckpt_dir = self.out / CKPT_DIR
        existing = list_checkpoints(ckpt_dir)
        if not resume:
            if existing:
                raise CheckpointError(f"{self.out}: holds checkpoints of an earlier run ({existing[-1].name}); "
                                      "pass --resume to continue it, or choose another --out")
            return
        state = latest_checkpoint(ckpt_dir)
        if state is None:
            return
        saved = state["config"]
        if saved.get("fingerprint") != self.fingerprint:
            old = saved.get("fingerprint", {})
            diff = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
            raise CheckpointError(f"{ckpt_dir}: the checkpoint was made with other settings "
                                  f"({', '.join(diff)} differ); use another --out or the same settings")
        if saved.get("init_weights") != self.init_fp:
            raise CheckpointError(f"{ckpt_dir}: the checkpoint started from other generator weights "
                                  "(--model differs)")
        self.net_g.load_state_dict(state["net_g"])
        self.ema.load_state_dict(state["net_g_ema"])
        self.net_d.load_state_dict(state["net_d"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        set_rng_state(state["rng"])
        self.norm = state.get("perceptual_norm")
        self.start = int(state["iteration"])
        if int(state["data"]["samples_drawn"]) != self.start * self.cfg.batch:
            raise CheckpointError(f"{ckpt_dir}: inconsistent data position in the checkpoint")

    def save(self, done: int) -> None:
        save_checkpoint(self.out / CKPT_DIR, {
            "iteration": done,
            "net_g": _cpu(self.net_g.state_dict()), "net_g_ema": _cpu(self.ema.state_dict()),
            "net_d": _cpu(self.net_d.state_dict()),
            "optimizer_g": self.opt_g.state_dict(), "optimizer_d": self.opt_d.state_dict(),
            "rng": rng_state(), "perceptual_norm": self.norm,
            "data": {"samples_drawn": done * self.cfg.batch, "seed": self.data.seed},
            "config": {"fingerprint": self.fingerprint, "init_weights": self.init_fp},
        }, keep=self.cfg.keep_checkpoints)

    def setup_perceptual(self) -> None:
        """The perceptual loss, its per-layer scale measured on the first training targets
        (fp32, no RNG drawn) unless restored from the checkpoint."""
        if self.vgg is None:
            return
        if self.cfg.perceptual_norm == "target" and self.norm is None:
            n = max(NORM_SAMPLES, self.cfg.batch)
            gts = torch.from_numpy(np.stack([self.data.sample(k)[1] for k in range(n)])).to(self.dev)
            self.norm = feature_norms(self.vgg, gts, DEFAULT_LAYER_WEIGHTS)
        self.percep = PerceptualLoss(self.vgg, weight=self.cfg.perceptual_weight,
                                     allow_random=self.allow_random_vgg,
                                     norm=self.norm if self.cfg.perceptual_norm == "target" else None)

    # ---------------------------------------------------------------- steps
    def forward_no_grad(self, net: nn.Module, lr_img: torch.Tensor) -> torch.Tensor:
        """``net``'s output on the batch, without gradient, in the run's precision, as fp32."""
        with torch.no_grad(), amp.autocast(self.precision, self.dev):
            return net(lr_img).float()

    def _gan_weight_map(self, mask: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-pixel weight of the generator's GAN term: 1 within ``gan_margin`` px of a masked
        pixel, ``gan_outside`` elsewhere; None when ``gan_outside`` is 1 (the recipe)."""
        if self.cfg.gan_outside >= 1.0:
            return None
        r = self.cfg.gan_margin
        near = F.max_pool2d(mask, 2 * r + 1, stride=1, padding=r) if r else mask
        return self.cfg.gan_outside + (1.0 - self.cfg.gan_outside) * near

    def _content_weight_map(self, mask: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-pixel weight of the L1 and perceptual terms: 1 on masked pixels, ``outside_weight``
        elsewhere (soft masks in between); None when ``outside_weight`` is 1 (the recipe)."""
        w = float(self.cfg.outside_weight)
        return None if w == 1.0 else w + (1.0 - w) * mask

    def g_step(self, g_run, lr_img, gt, mask, it: int, log) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """The generator's update; returns the loss terms and the (detached) output."""
        self.net_d.requires_grad_(False)  # frozen; its plain module: no DDP gradient sync
        self.opt_g.zero_grad(set_to_none=True)
        with amp.autocast(self.precision, self.dev):
            sr = g_run(lr_img)
        sr = sr.float()
        content_w = self._content_weight_map(mask)
        terms = {"l_pix": self.pix(sr, gt, content_w)}
        if self.percep is not None:
            with amp.autocast(self.precision, self.dev):
                terms["l_percep"] = self.percep(sr, gt, content_w)
        if self.use_d:
            with amp.autocast(self.precision, self.dev):
                logits = self.net_d(sr)
            terms["l_gan"] = self.gan(logits, True, is_disc=False, pixel_weight=self._gan_weight_map(mask))
        total = sum(terms.values())
        if not torch.isfinite(total.detach()):
            raise FloatingPointError(
                f"iteration {it + 1}: non-finite generator loss ("
                + ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in terms.items())
                + "); nothing was written past the last checkpoint: lower --learning-rate and resume")
        if it == self.warmup and log is not None and not self.ctx.enabled:
            self._log_grad_shares(it, terms, total, log)
        total.backward()
        self.opt_g.step()
        return terms, sr.detach()

    def _log_grad_shares(self, it: int, terms, total, log) -> None:
        """Each term's value, gradient norm and share of the generator's gradient (its projection
        on the total gradient over the total's squared norm; the shares sum to 1), once."""
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        grads = {k: torch.autograd.grad(v, params, retain_graph=True, allow_unused=True) for k, v in terms.items()}
        flat = {k: torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1).double()
                              for x, p in zip(g, params)]) for k, g in grads.items()}
        tot = sum(flat.values())
        tot2 = float(tot @ tot) or 1.0
        rec = {"iter": it, "first_generator_step": True,
               "terms": {k: float(v.detach()) for k, v in terms.items()},
               "grad_norm": {k: float(v.norm()) for k, v in flat.items()},
               "grad_share": {k: float(v @ tot) / tot2 for k, v in flat.items()}}
        log.write(json.dumps(rec) + "\n")
        print("desra-fast finetune: first generator step: " + "  ".join(
            f"{k} {rec['terms'][k]:.4g} (grad norm {rec['grad_norm'][k]:.3g}, share {rec['grad_share'][k]:.1%})"
            for k in terms), file=sys.stderr)

    def d_step(self, d_run, gt, sr) -> Dict[str, torch.Tensor]:
        self.net_d.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with amp.autocast(self.precision, self.dev):
            real = d_run(gt)
        l_real = self.gan(real, True, is_disc=True)
        l_real.backward()
        with amp.autocast(self.precision, self.dev):
            fake = d_run(sr.clone())
        l_fake = self.gan(fake, False, is_disc=True)
        l_fake.backward()
        self.opt_d.step()
        return {"l_d_real": l_real, "l_d_fake": l_fake}

    # ---------------------------------------------------------------- loop
    def run(self, resume: bool, progress: bool, hooks: Optional[Hook]) -> FinetuneResult:
        cfg, ctx, out = self.cfg, self.ctx, self.out
        final = out / FINAL_NAME
        self.restore(resume)
        if self.start >= cfg.iters:
            if ctx.is_main and not final.is_file():  # killed between the last checkpoint and the final file
                _write_final(final, self.net_g, self.ema)
            ctx.barrier()
            return FinetuneResult(final, self.start, self.start, time.perf_counter() - self.t0,
                                  precision=self.precision)
        self.setup_perceptual()
        g_run, d_run = distributed.wrap(self.net_g, ctx), distributed.wrap(self.net_d, ctx)
        log = open(out / LOG_NAME, "a", encoding="utf-8") if ctx.is_main else None
        bar = None
        if progress and ctx.is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iters, initial=self.start, desc="finetune", unit="it", dynamic_ncols=True)
        if log is not None:
            log.write(json.dumps({"iter": self.start, "start": True, "precision": self.precision,
                                  "netd_warmup": self.warmup, "ema_decay": self.decay,
                                  "perceptual_norm": self.norm, "threads": torch.get_num_threads()}) + "\n")
            print(f"desra-fast finetune: precision {self.precision}, discriminator warm-up {self.warmup} "
                  f"iteration(s), EMA decay {self.decay:.6g}", file=sys.stderr)
        losses: Dict[str, float] = {}
        t_loop = time.perf_counter()
        try:
            for it in range(self.start, cfg.iters):
                t_it = time.perf_counter()
                lr_img, gt, mask = (t.to(self.dev, non_blocking=True) for t in self.data.batch(
                    it, cfg.batch, ctx.rank, ctx.world, with_mask=True))
                own = None
                if self.g0 is not None:  # the target outside the masks: the start's own output
                    own = self.forward_no_grad(self.g0, lr_img)
                    gt = torch.where(mask > 0, gt, own)
                if it < self.warmup:  # discriminator only; the generator is still the start
                    sr = own if own is not None else self.forward_no_grad(self.net_g, lr_img)
                    terms = {}
                else:
                    terms, sr = self.g_step(g_run, lr_img, gt, mask, it, log)
                    if hooks:
                        hooks("g_step", it + 1)
                if self.use_d:
                    terms.update(self.d_step(d_run, gt, sr))
                if it >= self.warmup:
                    ema_update(self.ema, self.net_g, self.decay)
                done = it + 1
                losses = {k: float(v.detach()) for k, v in terms.items()}
                if log is not None:
                    log.write(json.dumps({"iter": done, **{k: round(v, 6) for k, v in losses.items()},
                                          "sec": round(time.perf_counter() - t_it, 4)}) + "\n")
                if bar is not None:
                    bar.set_postfix({k[2:]: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
                    bar.update(1)
                if hooks:
                    hooks("iteration", done)
                if done % cfg.ckpt_every == 0 or done == cfg.iters:
                    if ctx.is_main:
                        log.flush()
                        self.save(done)
                    ctx.barrier()
                    if hooks:
                        hooks("checkpoint", done)
            if ctx.is_main:
                _write_final(final, self.net_g, self.ema)
            ctx.barrier()
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        per_it = (time.perf_counter() - t_loop) / (cfg.iters - self.start)
        return FinetuneResult(final, cfg.iters, self.start, time.perf_counter() - self.t0, losses,
                              self.precision, per_it)


def _cpu(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A CPU copy of a state dict in the contiguous layout (whatever the training layout)."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in sd.items()}


__all__ = ["finetune", "FinetuneConfig", "FinetuneResult", "FINAL_NAME", "CKPT_DIR", "state_fingerprint",
           "NETD_WARMUP_SHARE", "NETD_WARMUP_MAX"]
