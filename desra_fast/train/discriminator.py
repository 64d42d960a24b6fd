"""Real-ESRGAN's U-Net discriminator with spectral normalisation, BasicSR parameter names.

Same layout (and so the same ``state_dict`` keys) as Real-ESRGAN's
``realesrgan.archs.discriminator_arch.UNetDiscriminatorSN``, so a user's
``RealESRGAN_x4plus_netD.pth`` (``{'params': ...}``) loads strictly: ``conv0`` (plain), then
``conv1``..``conv8`` wrapped by :func:`torch.nn.utils.spectral_norm` (keys ``weight_orig``,
``weight_u``, ``weight_v``; no bias), and ``conv9`` (plain, 1 output channel).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from ..models.registry import Architecture, load_architecture, register


class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator: three stride-2 downsamplings, three bilinear x2 upsamplings with skip
    connections, two extra convolutions, a per-pixel realness logit.

    Args:
        num_in_ch: image channels (3).
        num_feat: base features (64 in Real-ESRGAN).
        skip_connection: add the encoder features to the decoder's (True in Real-ESRGAN).

    Shape:
        input (N, C, H, W) float RGB in about [0, 1], H and W multiples of 8;
        output (N, 1, H, W) logits (positive = real).
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        f = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"UNetDiscriminatorSN expects (N, C, H, W) with H, W multiples of 8, "
                             f"got {tuple(x.shape)}")
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)


def load_discriminator(path: Optional[os.PathLike] = None, *, num_feat: int = 64,
                       seed: int = 0) -> UNetDiscriminatorSN:
    """A discriminator from a user's file (``{'params': sd}`` or a bare state dict, loaded
    strictly), or randomly initialised from ``seed`` when ``path`` is None."""
    if path is None:
        g = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            return UNetDiscriminatorSN(3, num_feat)
        finally:
            torch.random.set_rng_state(g)
    from .checkpoint import load_state_file

    return load_architecture(load_state_file(path), "discriminator", str(path))[0]


def _load(sd, what: str):
    """The registry's loader: the discriminator of ``sd`` (strict), channels from ``conv0``."""
    from .checkpoint import CheckpointError

    w = sd["conv0.weight"]
    if w.dim() != 4:
        raise CheckpointError(f"{what}: not a UNetDiscriminatorSN state dict (conv0.weight is not 4-D)")
    net = UNetDiscriminatorSN(int(w.shape[1]), int(w.shape[0]))
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{what}: does not fit UNetDiscriminatorSN "
                              f"({str(exc).splitlines()[0]}; {str(exc).splitlines()[1:2]})") from None
    return net, dict(arch="UNetDiscriminatorSN", num_in_ch=net.conv0.in_channels, num_feat=net.conv0.out_channels)


# Recognised by its first convolution's name (the ``--netd`` files of Real-ESRGAN's recipe).
register(Architecture("UNetDiscriminatorSN", "discriminator", lambda sd: "conv0.weight" in sd, _load))

__all__ = ["UNetDiscriminatorSN", "load_discriminator"]
