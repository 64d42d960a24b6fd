"""The losses of Real-ESRGAN's training recipe: L1 pixel, VGG19 perceptual, vanilla GAN; and the
generator's exponential moving average.

Defaults are those of Real-ESRGAN's ``finetune_realesrgan_x4plus.yml`` (BasicSR losses):

- pixel: ``weight * mean |out - gt|`` (weight 1);
- perceptual: ``weight * sum_l w_l * mean |phi_l(out) - phi_l(gt)|`` over VGG19 conv1_2, conv2_2,
  conv3_4, conv4_4, conv5_4 (before ReLU) with ``w = 0.1, 0.1, 1, 1, 1`` (weight 1);
- GAN, vanilla: binary cross-entropy on logits; the generator's term is weighted (0.1), the
  discriminator's real and fake terms are not.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import VGG19Features

DEFAULT_LAYER_WEIGHTS: Dict[str, float] = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0,
                                           "conv4_4": 1.0, "conv5_4": 1.0}


class L1Loss(nn.Module):
    """``weight * mean |x - y|``. x, y: same shape, float."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.weight * F.l1_loss(x, y)


class PerceptualLoss(nn.Module):
    """VGG19 feature distance (L1 criterion), Real-ESRGAN's ``PerceptualLoss`` without style term.

    Args:
        vgg: a :class:`~desra_fast.train.vgg.VGG19Features` with real weights.
        layer_weights: {layer name: weight}; default conv1_2..conv5_4 = 0.1, 0.1, 1, 1, 1.
        weight: the term's weight.
        allow_random: accept a VGG with random weights (its features mean nothing; only for
            tests and experiments). Otherwise a ValueError says how to get real weights.

    Shape:
        x, gt: (N, 3, H, W) RGB in [0, 1]; returns a scalar. ``gt`` features carry no gradient.
    """

    def __init__(self, vgg: VGG19Features, layer_weights: Optional[Mapping[str, float]] = None,
                 weight: float = 1.0, allow_random: bool = False):
        super().__init__()
        if not getattr(vgg, "pretrained", False) and not allow_random:
            raise ValueError("the perceptual loss got a VGG19 with random weights: give real ones "
                             "(--vgg PATH, see docs/finetune.md) or turn the loss off with "
                             "--perceptual-weight 0")
        self.vgg = vgg
        self.layer_weights = dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        self.weight = float(weight)

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        fx = self.vgg(x, self.layer_weights)
        with torch.no_grad():
            fg = self.vgg(gt.detach(), self.layer_weights)
        total = x.new_zeros(())
        for name, w in self.layer_weights.items():
            total = total + F.l1_loss(fx[name], fg[name]) * w
        return total * self.weight


class GANLoss(nn.Module):
    """Vanilla GAN loss on logits: BCE against 1 (real) or 0 (fake).

    ``loss(pred, target_is_real, is_disc)``: for the discriminator (``is_disc``) the plain BCE;
    for the generator the BCE times ``weight``.
    """

    def __init__(self, weight: float = 0.1, real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        self.weight = float(weight)
        self.real_label, self.fake_label = float(real_label), float(fake_label)

    def forward(self, pred: torch.Tensor, target_is_real: bool, is_disc: bool = False) -> torch.Tensor:
        target = torch.full_like(pred, self.real_label if target_is_real else self.fake_label)
        loss = F.binary_cross_entropy_with_logits(pred, target)
        return loss if is_disc else loss * self.weight


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float = 0.999) -> None:
    """``ema_p <- decay * ema_p + (1 - decay) * p`` for every parameter (BasicSR's model_ema);
    buffers are copied."""
    src = dict(model.named_parameters())
    for name, p in ema.named_parameters():
        p.mul_(decay).add_(src[name], alpha=1.0 - decay)
    src_b = dict(model.named_buffers())
    for name, b in ema.named_buffers():
        b.copy_(src_b[name])


__all__ = ["L1Loss", "PerceptualLoss", "GANLoss", "ema_update", "DEFAULT_LAYER_WEIGHTS"]
