"""The losses of Real-ESRGAN's training recipe: L1 pixel, VGG19 perceptual, vanilla GAN; and the
generator's exponential moving average.

Defaults are those of Real-ESRGAN's ``finetune_realesrgan_x4plus.yml`` (BasicSR losses):

- pixel: ``weight * mean |out - gt|`` (weight 1);
- perceptual: ``weight * sum_l w_l * mean |phi_l(out) - phi_l(gt)|`` over VGG19 conv1_2, conv2_2,
  conv3_4, conv4_4, conv5_4 (before ReLU) with ``w = 0.1, 0.1, 1, 1, 1`` (weight 1);
- GAN, vanilla: binary cross-entropy on logits; the generator's term is weighted (0.1), the
  discriminator's real and fake terms are not.

The perceptual term's scale. Real-ESRGAN's weights were set for torchvision's VGG19, whose
features have a size nothing else shares (the Keras/Caffe network's are ~57.6x larger, and even
torchvision's conv3_4 and conv4_4 dominate the sum). ``PerceptualLoss(norm=...)`` divides each
layer's distance by that layer's mean |feature| on the training targets (:func:`feature_norms`,
measured once before the first step and stored in the checkpoint), so every layer's term is a
*relative* feature error - dimensionless like the L1 term on [0, 1] images, the same for either
weight file, and the layer weights say what share each layer gets. ``norm=None`` keeps the raw
distances (the recipe as Real-ESRGAN runs it with torchvision's file).
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
    """``weight * mean |x - y|``. x, y: same shape, float.

    ``pixel_weight``: None, or weights >= 0 of shape (N, 1, H, W) (broadcast over channels):
    the loss is then ``weight * mean(pixel_weight * |x - y|)`` (normalised by the pixel count,
    so weights of 1 give the plain mean)."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                pixel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pixel_weight is None:
            return self.weight * F.l1_loss(x, y)
        return self.weight * ((x - y).abs() * pixel_weight).mean()


class PerceptualLoss(nn.Module):
    """VGG19 feature distance (L1 criterion), Real-ESRGAN's ``PerceptualLoss`` without style term.

    Args:
        vgg: a :class:`~desra_fast.train.vgg.VGG19Features` with real weights.
        layer_weights: {layer name: weight}; default conv1_2..conv5_4 = 0.1, 0.1, 1, 1, 1.
        weight: the term's weight.
        norm: {layer name: divisor > 0} applied to each layer's distance (from
            :func:`feature_norms`); None: raw distances.
        allow_random: accept a VGG with random weights (its features mean nothing; only for
            tests and experiments). Otherwise a ValueError says how to get real weights.

    Shape:
        x, gt: (N, 3, H, W) RGB in [0, 1]; returns a scalar. ``gt`` features carry no gradient.
        pixel_weight: None, or (N, 1, H, W) weights >= 0: each layer's distance is then the mean
        of ``|phi(x) - phi(gt)|`` times the weights averaged over each feature cell's footprint
        (area pooling to the layer's size), so a region's share of every layer's term follows its
        weight; weights of 1 give the plain distance.
    """

    def __init__(self, vgg: VGG19Features, layer_weights: Optional[Mapping[str, float]] = None,
                 weight: float = 1.0, allow_random: bool = False,
                 norm: Optional[Mapping[str, float]] = None):
        super().__init__()
        if not getattr(vgg, "pretrained", False) and not allow_random:
            raise ValueError("the perceptual loss got a VGG19 with random weights: give real ones "
                             "(--vgg PATH, see docs/finetune.md) or turn the loss off with "
                             "--perceptual-weight 0")
        self.vgg = vgg
        self.layer_weights = dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        self.weight = float(weight)
        self.norm = None
        if norm is not None:
            missing = set(self.layer_weights) - set(norm)
            bad = [k for k, v in norm.items() if not (float(v) > 0 and float(v) < float("inf"))]
            if missing or bad:
                raise ValueError(f"perceptual norm: missing layers {sorted(missing)}, "
                                 f"non-positive or non-finite {sorted(bad)}")
            self.norm = {k: float(v) for k, v in norm.items()}

    def forward(self, x: torch.Tensor, gt: torch.Tensor,
                pixel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        fx = self.vgg(x, self.layer_weights)
        with torch.no_grad():
            fg = self.vgg(gt.detach(), self.layer_weights)
        total = x.new_zeros((), dtype=torch.float32)
        for name, w in self.layer_weights.items():
            if pixel_weight is None:
                d = F.l1_loss(fx[name].float(), fg[name].float())
            else:
                cell = F.adaptive_avg_pool2d(pixel_weight.float(), fx[name].shape[-2:])
                d = ((fx[name].float() - fg[name].float()).abs() * cell).mean()
            total = total + d * (w / self.norm[name] if self.norm is not None else w)
        return total * self.weight


@torch.no_grad()
def feature_norms(vgg: VGG19Features, targets: torch.Tensor, layers=None) -> Dict[str, float]:
    """Per-layer mean |feature| of ``targets``: the perceptual loss's divisors.

    Args:
        vgg: the perceptual loss's network (features as the loss sees them).
        targets: (N, 3, H, W) float32 RGB in [0, 1] (training targets; run in fp32).
        layers: layer names; default the recipe's five.

    Returns:
        {layer: mean |phi_layer(targets)|} as Python floats (> 0; a dead layer raises).
    """
    layers = list(DEFAULT_LAYER_WEIGHTS if layers is None else layers)
    feats = vgg(targets.float(), layers)
    out = {name: float(feats[name].abs().double().mean()) for name in layers}
    dead = [k for k, v in out.items() if not v > 0]
    if dead:
        raise ValueError(f"VGG19 layers {dead} are all zero on the training targets")
    return out


class GANLoss(nn.Module):
    """Vanilla GAN loss on logits: BCE against 1 (real) or 0 (fake).

    ``loss(pred, target_is_real, is_disc)``: for the discriminator (``is_disc``) the plain BCE;
    for the generator the BCE times ``weight``.
    """

    def __init__(self, weight: float = 0.1, real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        self.weight = float(weight)
        self.real_label, self.fake_label = float(real_label), float(fake_label)

    def forward(self, pred: torch.Tensor, target_is_real: bool, is_disc: bool = False,
                pixel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``pred``: logits (N, 1, H, W) (any shape); ``pixel_weight``: None, or weights in
        [0, 1] broadcastable to ``pred``: the BCE is then ``mean(pixel_weight * bce)`` (a pixel
        with weight 0 gives no gradient, the normalisation stays the pixel count)."""
        pred = pred.float()
        target = torch.full_like(pred, self.real_label if target_is_real else self.fake_label)
        if pixel_weight is None:
            loss = F.binary_cross_entropy_with_logits(pred, target)
        else:
            bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
            loss = (bce * pixel_weight).mean()
        return loss if is_disc else loss * self.weight


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float = 0.999) -> None:
    """``ema_p <- decay * ema_p + (1 - decay) * p`` for every parameter (BasicSR's model_ema);
    buffers are copied.

    Computed as ``ema_p + (1 - decay) * (p - ema_p)`` (``lerp_``): the same average, but a
    parameter that has not moved (``p == ema_p``) stays bit-identical, where BasicSR's
    ``decay * x + (1 - decay) * x`` rounds it by a unit in the last place every step."""
    src = dict(model.named_parameters())
    for name, p in ema.named_parameters():
        p.lerp_(src[name], 1.0 - decay)
    src_b = dict(model.named_buffers())
    for name, b in ema.named_buffers():
        b.copy_(src_b[name])


__all__ = ["L1Loss", "PerceptualLoss", "GANLoss", "ema_update", "feature_norms", "DEFAULT_LAYER_WEIGHTS"]
