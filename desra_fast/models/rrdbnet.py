"""RRDBNet, the generator of ESRGAN / Real-ESRGAN / RealESRNet / LDL, with BasicSR's parameter names.

The module layout (and therefore every ``state_dict`` key) is the one of BasicSR's
``basicsr.archs.rrdbnet_arch.RRDBNet``: ``conv_first``, ``body.{i}.rdb{1,2,3}.conv{1..5}``,
``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``, so official checkpoints
(``{'params_ema': ...}``) load strictly. Registered as the ``"sr"`` architecture ``RRDBNet``
(:mod:`.registry`): recognised by those key names, hyper-parameters from the tensor shapes
(:func:`infer_rrdbnet`).
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_strict
from .registry import Architecture, register

__all__ = ["RRDBNet", "ResidualDenseBlock", "RRDB", "infer_rrdbnet"]


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions, LeakyReLU(0.2) after the first four, residual x0.2.

    Args:
        num_feat: channels in and out.
        num_grow_ch: channels added by each of the first four convolutions.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three :class:`ResidualDenseBlock`, residual x0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's RRDB generator (x4 output of a x4/x2/x1 model), BasicSR layout.

    For ``scale`` 2 and 1 the input is first pixel-unshuffled by 2 or 4 (as Real-ESRGAN x2plus
    does), so ``conv_first`` takes ``num_in_ch * 4`` or ``num_in_ch * 16`` channels and the two
    nearest x2 upsamplings bring the result to ``scale`` times the input.

    Args:
        num_in_ch: image channels in (3 for RGB).
        num_out_ch: image channels out.
        scale: 4, 2 or 1.
        num_feat: trunk features (64 for x4plus).
        num_block: RRDB blocks (23 for x4plus, 6 for the anime model).
        num_grow_ch: growth channels of the dense blocks (32).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)` float, RGB in [0, 1]. For ``scale=2`` H and W must be
          even, for ``scale=1`` multiples of 4.
        - Output: :math:`(N, C_{out}, sH, sW)` float, unclamped.
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet: scale must be 1, 2 or 4, got {scale!r}")
        self.scale = scale
        self.num_in_ch, self.num_out_ch = num_in_ch, num_out_ch
        self.num_feat, self.num_block, self.num_grow_ch = num_feat, num_block, num_grow_ch
        first_in = num_in_ch * {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(first_in, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 2:
            feat = F.pixel_unshuffle(x, 2)
        elif self.scale == 1:
            feat = F.pixel_unshuffle(x, 4)
        else:
            feat = x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def infer_rrdbnet(sd: dict[str, torch.Tensor], scale: int | None = None) -> dict | None:
    """RRDBNet hyper-parameters from the tensor shapes of a BasicSR-layout state dict, or None.

    ``num_feat`` = ``conv_first`` outputs, ``num_grow_ch`` = ``rdb1.conv1`` outputs, ``num_block``
    = distinct ``body.N``, ``num_out_ch`` = ``conv_last`` outputs; the scale follows from
    ``conv_first``'s input channels (``num_in_ch`` x1 / x4 / x16 for scale 4 / 2 / 1, taking
    ``num_in_ch == num_out_ch`` as Real-ESRGAN does) unless ``scale`` is given.
    """
    need = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_last.weight")
    if not all(k in sd for k in need) or any(sd[k].ndim != 4 for k in need):
        return None
    first = sd["conv_first.weight"]
    num_out = int(sd["conv_last.weight"].shape[0])
    cin = int(first.shape[1])
    blocks = {int(m.group(1)) for k in sd for m in [re.match(r"body\.(\d+)\.", k)] if m}
    if scale is None:
        ratio = {num_out: 4, 4 * num_out: 2, 16 * num_out: 1}
        if cin not in ratio:
            raise CheckpointError(f"RRDBNet checkpoint: conv_first takes {cin} channels, not {num_out} (x4), "
                                  f"{4 * num_out} (x2) or {16 * num_out} (x1) for {num_out} output channels; "
                                  f"pass scale=")
        scale = ratio[cin]
    div = {4: 1, 2: 4, 1: 16}.get(scale)
    if div is None or cin % div:
        raise CheckpointError(f"RRDBNet checkpoint: scale={scale} does not fit conv_first's {cin} input channels")
    return dict(num_in_ch=cin // div, num_out_ch=num_out, scale=scale, num_feat=int(first.shape[0]),
                num_block=max(blocks) + 1 if blocks else 0, num_grow_ch=int(sd["body.0.rdb1.conv1.weight"].shape[0]))


_KEYS = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_last.weight")


def _detect(sd) -> bool:
    return all(k in sd for k in _KEYS)


def _load(sd, what: str, *, scale: int | None = None, noise_level=None):
    """RRDBNet with the weights of ``sd`` (strict); info: ``arch`` and the hyper-parameters."""
    if noise_level is not None:
        raise ValueError(f"{what}: noise_level is an SRMD option; this checkpoint is an RRDBNet")
    hp = infer_rrdbnet(sd, scale)
    if hp is None:
        raise CheckpointError(f"{what}: RRDBNet keys {', '.join(_KEYS)} must be 4-D convolution weights")
    net = RRDBNet(**hp)
    load_strict(net, sd, f"{what} (RRDBNet {hp})")
    return net, dict(arch="RRDBNet", **hp)


register(Architecture("RRDBNet", "sr", _detect, _load, priority=10))
