"""SRMD (Zhang et al., CVPR 2018): a plain conv/ReLU network with PixelShuffle, pixel-loss trained.

:class:`SRMD` is the bare network with KAIR's key names (``model.{2i}.weight`` for the i-th
convolution), taking the 18/19-channel stack RGB + blur-kernel PCA code (+ noise level).
:class:`SRMDRGB` wraps it so it takes plain RGB, as ``srmd-ncnn-vulkan`` does: it appends the 15
constant channels of the degradation code and (for the noise-aware models) the constant
``noise_level / 255`` channel inside ``forward``. Registered as the ``"sr"`` architecture ``SRMD``
(:mod:`.registry`; :func:`infer_srmd` reads the hyper-parameters from the shapes).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from .checkpoint import CheckpointError, load_strict
from .registry import Architecture, register

__all__ = ["SRMD", "SRMDRGB", "SRMD_DEGRADATION_VECTOR", "infer_srmd"]

# PCA code of the blur kernel srmd-ncnn-vulkan feeds every model (src/srmd_preproc.comp).
SRMD_DEGRADATION_VECTOR = (
    -1.12360956e-08, -1.36899159e-08, 1.85637958e-02, 2.86066886e-08, 3.35292965e-02,
    8.37272935e-08, -2.54424009e-07, -3.16234976e-02, -1.35169253e-02, -1.10466090e-08,
    3.84753793e-02, 3.79465739e-08, -2.44916752e-01, -8.02213490e-01, -5.40549755e-01,
)


class SRMD(nn.Module):
    """SRMD network: ``num_conv`` 3x3 convolutions (ReLU after all but the last), PixelShuffle.

    Args:
        in_nc: input channels (19 = RGB + 15 PCA + noise, 18 for the noise-free models).
        out_nc: image channels out.
        nc: features of the hidden convolutions (128).
        num_conv: convolutions in all (12).
        scale: upscaling factor (PixelShuffle), 1..4.

    Shape:
        - Input: :math:`(N, in\\_nc, H, W)` float.
        - Output: :math:`(N, out\\_nc, sH, sW)` float, unclamped.
    """

    def __init__(self, in_nc: int = 19, out_nc: int = 3, nc: int = 128, num_conv: int = 12, scale: int = 4):
        super().__init__()
        if num_conv < 2:
            raise ValueError(f"SRMD: num_conv must be >= 2, got {num_conv}")
        self.in_nc, self.out_nc, self.nc, self.num_conv, self.scale = in_nc, out_nc, nc, num_conv, scale
        layers: list[nn.Module] = []
        for i in range(num_conv - 1):
            layers += [nn.Conv2d(in_nc if i == 0 else nc, nc, 3, 1, 1), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(nc if num_conv > 1 else in_nc, out_nc * scale * scale, 3, 1, 1), nn.PixelShuffle(scale)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SRMDRGB(nn.Module):
    """An :class:`SRMD` network that takes RGB and builds its degradation / noise channels itself.

    Args:
        net: the SRMD network (``net.in_nc`` is ``out_nc + 15`` or ``out_nc + 16``).
        noise_level: the noise level map value, -1..75 in 0..255 units (``srmd-ncnn-vulkan``'s
            ``-n``; 10 gives the smooth pixel-loss output DeSRA needs on JPEG inputs). Must be
            -1 or None for the noise-free models (18 channels).

    Shape:
        - Input: :math:`(N, 3, H, W)` float32 RGB in [0, 1].
        - Output: :math:`(N, 3, sH, sW)` float32, unclamped.
    """

    def __init__(self, net: SRMD, noise_level: int | float | None = 10):
        super().__init__()
        self.net = net
        extra = net.in_nc - net.out_nc
        if extra == 16:
            if noise_level is None or noise_level < 0:
                raise ValueError(f"SRMDRGB: this SRMD model takes a noise level channel; noise_level "
                                 f"must be >= 0, got {noise_level!r}")
            if not (0 <= float(noise_level) <= 255):
                raise ValueError(f"SRMDRGB: noise_level must be in 0..255, got {noise_level!r}")
        elif extra == 15:
            if noise_level is not None and noise_level != -1:
                raise ValueError(f"SRMDRGB: this SRMD model is noise-free ({net.in_nc} input channels): "
                                 f"noise_level must be -1 or None, got {noise_level!r}")
            noise_level = None
        else:
            raise ValueError(f"SRMDRGB: an SRMD network with {net.in_nc} input channels and {net.out_nc} "
                             f"outputs is not RGB + 15 degradation channels (+ noise)")
        self.noise_level = noise_level
        code = list(SRMD_DEGRADATION_VECTOR) + ([float(noise_level) / 255.0] if noise_level is not None else [])
        self.register_buffer("code", torch.tensor(code, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.scale = net.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c != self.net.out_nc:
            raise ValueError(f"SRMDRGB: expected {self.net.out_nc}-channel input, got shape {tuple(x.shape)}")
        code = self.code.to(dtype=x.dtype, device=x.device).expand(n, -1, h, w)
        return self.net(torch.cat((x, code), 1))


def infer_srmd(sd: dict[str, torch.Tensor]) -> dict | None:
    """SRMD (KAIR layout ``model.{2i}.weight``) hyper-parameters from shapes, or None."""
    idx = sorted(int(m.group(1)) for k in sd for m in [re.fullmatch(r"model\.(\d+)\.weight", k)] if m)
    if len(idx) < 2 or idx != list(range(0, 2 * len(idx), 2)) or len(sd) != 2 * len(idx):
        return None
    ws = [sd[f"model.{i}.weight"] for i in idx]
    if any(w.ndim != 4 or tuple(w.shape[2:]) != (3, 3) for w in ws):
        return None
    in_nc, nc, last = int(ws[0].shape[1]), int(ws[0].shape[0]), int(ws[-1].shape[0])
    for s in (4, 3, 2, 1):
        if last % (s * s) == 0 and in_nc - last // (s * s) in (15, 16):
            return dict(in_nc=in_nc, out_nc=last // (s * s), nc=nc, num_conv=len(ws), scale=s)
    return None


def _load(sd, what: str, *, scale: int | None = None, noise_level=None):
    """:class:`SRMDRGB` around the SRMD network of ``sd`` (strict); noise-aware models get
    ``noise_level`` 10 unless given."""
    hp = infer_srmd(sd)
    if hp is None:  # pragma: no cover - _detect accepted it
        raise CheckpointError(f"{what}: not an SRMD state dict")
    if scale is not None and scale != hp["scale"]:
        raise CheckpointError(f"{what}: scale={scale} given, the SRMD weights are x{hp['scale']}")
    net = SRMD(**hp)
    load_strict(net, sd, f"{what} (SRMD {hp})")
    if noise_level is None:
        noise_level = None if hp["in_nc"] - hp["out_nc"] == 15 else 10
    module = SRMDRGB(net, noise_level=noise_level)
    return module, dict(arch="SRMD", noise_level=module.noise_level, **hp)


register(Architecture("SRMD", "sr", lambda sd: infer_srmd(sd) is not None, _load, priority=5))
