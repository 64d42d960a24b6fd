"""ncnn model files (``.param`` text graph + ``.bin`` weights) -> torch modules with the same weights.

The parser reads the graph and every weight in ``.param`` order, consumes every byte of the
``.bin`` (a short or long file is an error), and knows fp32 and fp16 weight storage. Three
conversions, tried in this order:

- an RRDBNet graph (Real-ESRGAN x4plus / anime / RealSR DF2K) becomes
  :class:`~desra_fast.models.rrdbnet.RRDBNet` with BasicSR's official key names, so it can be
  saved as an official checkpoint;
- an SRMD graph (a chain of 3x3 convolution + ReLU ending with PixelShuffle, 18/19 input
  channels) becomes :class:`~desra_fast.models.srmd.SRMDRGB`, which takes RGB;
- any other graph made of the supported layer types runs as :class:`NcnnGraphModule`, a torch
  interpreter of the graph.

Supported layer types: ``Input, Convolution, ConvolutionDepthWise, Split, Concat, Eltwise,
BinaryOp, Interp, PixelShuffle, ReLU, PReLU, Sigmoid, TanH``; any other type is named in the error.

>>> from desra_fast.models.ncnn import read_ncnn, ncnn_to_torch
>>> graph = read_ncnn("realesrgan-x4plus.param")         # .bin beside it
>>> module, info = ncnn_to_torch(graph)                   # RRDBNet, {'arch': 'RRDBNet', ...}
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, register_reader

__all__ = ["NcnnLayer", "NcnnModel", "NcnnFormatError", "read_ncnn", "read_param", "ncnn_to_torch",
           "NcnnGraphModule", "SUPPORTED_LAYERS"]

MAGIC = 7767517
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_FP32_RAW = 0x0002C056

SUPPORTED_LAYERS = frozenset({
    "Input", "Convolution", "ConvolutionDepthWise", "Split", "Concat", "Eltwise", "BinaryOp",
    "Interp", "PixelShuffle", "ReLU", "PReLU", "Sigmoid", "TanH",
})


class NcnnFormatError(CheckpointError):
    """A malformed, truncated or unsupported ncnn ``.param`` / ``.bin`` file (a
    :class:`~desra_fast.models.checkpoint.CheckpointError`, so a ValueError)."""


@dataclass
class NcnnLayer:
    """One line of a ``.param``: ``Type Name n_in n_out inputs... outputs... key=value...``."""
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, object]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, key: int, default=None):
        return self.params.get(key, default)


@dataclass
class NcnnModel:
    """A parsed ncnn model: layers in file order with their float32 weights."""
    layers: list[NcnnLayer]
    param_path: Path
    bin_path: Path
    weight_storage: set[str]   # {"fp16"}, {"fp32"} or both

    def convs(self) -> list[NcnnLayer]:
        return [l for l in self.layers if l.type in ("Convolution", "ConvolutionDepthWise")]


def _num(text: str, where: str):
    try:
        return float(text) if re.search(r"[.eE]", text) else int(text)
    except ValueError:
        raise NcnnFormatError(f"{where}: bad number {text!r}") from None


def read_param(path: str | Path) -> list[NcnnLayer]:
    """Parse an ncnn ``.param`` text file (weights not read).

    Raises:
        NcnnFormatError: wrong magic, bad counts or fields, or layer types this module cannot run
            (all of them named, with their counts).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NcnnFormatError(f"{path}: not an ncnn .param text file (binary .param.bin files are not supported)") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise NcnnFormatError(f"{path}: not an ncnn .param file (first line must be the magic {MAGIC})")
    if len(lines) < 2 or len(lines[1].split()) != 2:
        raise NcnnFormatError(f"{path}: second line must hold the layer and blob counts")
    n_layers = _num(lines[1].split()[0], f"{path}:2")
    body = lines[2:]
    if n_layers != len(body):
        raise NcnnFormatError(f"{path}: header announces {n_layers} layers, file has {len(body)} (truncated?)")
    layers = []
    for lineno, ln in enumerate(body, start=3):
        where = f"{path}:{lineno}"
        tok = ln.split()
        if len(tok) < 4:
            raise NcnnFormatError(f"{where}: a layer line needs type, name, input and output counts")
        typ, name = tok[0], tok[1]
        n_in, n_out = _num(tok[2], where), _num(tok[3], where)
        if not (isinstance(n_in, int) and isinstance(n_out, int)) or n_in < 0 or n_out < 0 \
                or len(tok) < 4 + n_in + n_out:
            raise NcnnFormatError(f"{where}: bad input/output counts in {ln.strip()!r}")
        inputs, outputs = tok[4:4 + n_in], tok[4 + n_in:4 + n_in + n_out]
        if n_out < 1:
            raise NcnnFormatError(f"{where}: layer {name} has no output blob")
        params: dict[int, object] = {}
        for kv in tok[4 + n_in + n_out:]:
            if "=" not in kv:
                raise NcnnFormatError(f"{where}: bad parameter {kv!r} (expected key=value)")
            k, v = kv.split("=", 1)
            key = _num(k, where)
            if not isinstance(key, int):
                raise NcnnFormatError(f"{where}: bad parameter key {k!r}")
            if key <= -23300:               # array parameter: -23300-id=count,v1,v2,...
                vals = v.split(",")
                count = _num(vals[0], where)
                if count != len(vals) - 1:
                    raise NcnnFormatError(f"{where}: array parameter {kv!r} announces {count} values")
                params[-key - 23300] = [_num(x, where) for x in vals[1:]]
            else:
                params[key] = _num(v, where)
        layers.append(NcnnLayer(typ, name, inputs, outputs, params))
    unknown: dict[str, int] = {}
    for l in layers:
        if l.type not in SUPPORTED_LAYERS:
            unknown[l.type] = unknown.get(l.type, 0) + 1
    if unknown:
        listed = ", ".join(f"{t} (x{c})" for t, c in sorted(unknown.items()))
        raise NcnnFormatError(f"{path}: unsupported ncnn layer type(s): {listed}; supported: "
                              f"{', '.join(sorted(SUPPORTED_LAYERS))}")
    return layers


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise NcnnFormatError(f"{self.path}: truncated .bin: {what} needs {n} bytes at offset {self.pos}, "
                                  f"the file has {len(self.data)} bytes")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def raw_f32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str, storage: set[str]) -> np.ndarray:
        head = self.take(4, what + " (storage tag)")
        tag = int.from_bytes(head, "little")
        if tag == _TAG_FP16:
            nbytes = (2 * count + 3) // 4 * 4
            storage.add("fp16")
            return np.frombuffer(self.take(nbytes, what), dtype="<f2")[:count].astype(np.float32)
        if tag == _TAG_INT8:
            raise NcnnFormatError(f"{self.path}: {what}: int8 weight storage is not supported")
        if tag == _TAG_FP32_RAW or tag == 0:
            storage.add("fp32")
            return self.raw_f32(count, what)
        if sum(head) != 0:
            raise NcnnFormatError(f"{self.path}: {what}: unknown weight storage tag 0x{tag:08X} at offset "
                                  f"{self.pos - 4} (quantized tables are not supported)")
        raise AssertionError("unreachable")


def _conv_geometry(l: NcnnLayer, path: Path) -> dict:
    out = l.get(0, 0)
    kw = l.get(1, 0)
    kh = l.get(11, kw)
    dw = l.get(2, 1)
    dh = l.get(12, dw)
    sw = l.get(3, 1)
    sh = l.get(13, sw)
    pl = l.get(4, 0)
    pr = l.get(15, pl)
    pt = l.get(14, pl)
    pb = l.get(16, pt)
    groups = l.get(7, 1) if l.type == "ConvolutionDepthWise" else 1
    size = l.get(6, 0)
    where = f"{path}: layer {l.name} ({l.type})"
    if not all(isinstance(v, int) for v in (out, kw, kh, dw, dh, sw, sh, pl, pr, pt, pb, groups, size)):
        raise NcnnFormatError(f"{where}: convolution geometry parameters must be integers")
    if l.get(8, 0):
        raise NcnnFormatError(f"{where}: int8 quantized convolutions are not supported")
    if min(pl, pr, pt, pb) < 0:
        raise NcnnFormatError(f"{where}: automatic ('SAME') padding {pl} is not supported")
    if (pl, pt) != (pr, pb):
        raise NcnnFormatError(f"{where}: asymmetric padding {(pl, pr, pt, pb)} is not supported")
    if l.get(18, 0.0) != 0:
        raise NcnnFormatError(f"{where}: non-zero pad_value is not supported")
    if out <= 0 or kw <= 0 or kh <= 0 or groups <= 0 or out % groups or size <= 0 or size % (out * kh * kw):
        raise NcnnFormatError(f"{where}: inconsistent num_output={out}, kernel={kh}x{kw}, groups={groups}, "
                              f"weight_data_size={size} (must be num_output x in/groups x kh x kw)")
    cin_per_group = size // (out * kh * kw)
    return dict(out=out, cin=cin_per_group * groups, kernel=(kh, kw), dilation=(dh, dw), stride=(sh, sw),
                padding=(pt, pl), groups=groups, bias=bool(l.get(5, 0)), size=size,
                act=l.get(9, 0), act_params=l.get(10, []))


def read_ncnn(param: str | Path, bin: str | Path | None = None) -> NcnnModel:
    """Parse an ncnn ``.param`` and read every weight of its ``.bin`` (fp32 or fp16 storage).

    Args:
        param: the ``.param`` text file.
        bin: its ``.bin``; default: beside it with the ``.bin`` suffix.

    Returns:
        :class:`NcnnModel`; weights float32 numpy, convolution weights shaped (out, in/groups, kh, kw).

    Raises:
        FileNotFoundError: a file is missing.
        NcnnFormatError: malformed or unsupported graph, truncated ``.bin`` or bytes left unread.
    """
    param = Path(param)
    bin_path = Path(bin) if bin is not None else param.with_suffix(".bin")
    if not param.is_file():
        raise FileNotFoundError(f"ncnn .param not found: {param}")
    if not bin_path.is_file():
        raise FileNotFoundError(f"ncnn .bin not found: {bin_path} (pass bin= to give its path)")
    layers = read_param(param)
    r = _Reader(bin_path.read_bytes(), bin_path)
    storage: set[str] = set()
    for l in layers:
        what = f"layer {l.name} ({l.type})"
        if l.type in ("Convolution", "ConvolutionDepthWise"):
            g = _conv_geometry(l, param)
            w = r.tagged(g["size"], what + " weights", storage)
            l.weights["weight"] = w.reshape(g["out"], g["cin"] // g["groups"], *g["kernel"])
            if g["bias"]:
                l.weights["bias"] = r.raw_f32(g["out"], what + " bias")
        elif l.type == "PReLU":
            n = l.get(0, 0)
            if n <= 0:
                raise NcnnFormatError(f"{param}: {what}: num_slope must be positive, got {n}")
            l.weights["slope"] = r.raw_f32(n, what + " slopes")
    if r.pos != len(r.data):
        raise NcnnFormatError(f"{bin_path}: {len(r.data) - r.pos} bytes left unread after the last layer "
                              f"(the .bin does not belong to this .param, or the file is corrupt)")
    return NcnnModel(layers, param, bin_path, storage)


# --------------------------------------------------------------------------- generic interpreter
def _activation(act: int, params: list, where: str):
    if act == 0:
        return None
    if act == 1:
        return F.relu
    if act == 2:
        slope = float(params[0]) if params else 0.0
        return lambda t: F.leaky_relu(t, slope)
    if act == 3:
        lo, hi = float(params[0]), float(params[1])
        return lambda t: t.clamp(lo, hi)
    if act == 4:
        return torch.sigmoid
    raise NcnnFormatError(f"{where}: fused activation type {act} is not supported")


class NcnnGraphModule(nn.Module):
    """A torch interpreter of an ncnn graph (any graph of :data:`SUPPORTED_LAYERS`).

    Convolutions are ``nn.Conv2d`` modules registered under ``layers.<sanitised layer name>``;
    the batch dimension is added in front of ncnn's CHW blobs.

    Shape:
        - Input: :math:`(N, C, H, W)` float, fed to the ``Input`` layer's blob.
        - Output: the blob ``output`` (or the last layer's first output).
    """

    def __init__(self, model: NcnnModel):
        super().__init__()
        self.steps = []
        self.layers = nn.ModuleDict()
        inputs = [l for l in model.layers if l.type == "Input"]
        if len(inputs) != 1:
            raise NcnnFormatError(f"{model.param_path}: expected exactly one Input layer, found {len(inputs)}")
        self.input_blob = inputs[0].outputs[0]
        produced = {b for l in model.layers for b in l.outputs}
        self.output_blob = "output" if "output" in produced else model.layers[-1].outputs[0]
        known: set[str] = set()
        for l in model.layers:
            where = f"{model.param_path}: layer {l.name} ({l.type})"
            missing = [b for b in l.inputs if b not in known]
            if missing:
                raise NcnnFormatError(f"{where}: input blob(s) {missing} are not produced by an earlier layer")
            known.update(l.outputs)
            key = re.sub(r"[^0-9A-Za-z_]", "_", l.name) or "layer"
            while key in self.layers:
                key += "_"
            fn = None
            if l.type in ("Convolution", "ConvolutionDepthWise"):
                g = _conv_geometry(l, model.param_path)
                conv = nn.Conv2d(g["cin"], g["out"], g["kernel"], g["stride"], g["padding"], g["dilation"],
                                 g["groups"], bias=g["bias"])
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(l.weights["weight"]))
                    if g["bias"]:
                        conv.bias.copy_(torch.from_numpy(l.weights["bias"]))
                self.layers[key] = conv
                fn = ("conv", key, _activation(g["act"], g["act_params"], where))
            elif l.type == "PReLU":
                self.layers[key] = nn.PReLU(len(l.weights["slope"]))
                with torch.no_grad():
                    self.layers[key].weight.copy_(torch.from_numpy(l.weights["slope"]))
                fn = ("module", key, None)
            elif l.type in ("Input", "Split"):
                fn = ("split", None, None)
            elif l.type == "Concat":
                if l.get(0, 0) != 0:
                    raise NcnnFormatError(f"{where}: only channel concatenation (axis 0) is supported")
                fn = ("concat", None, None)
            elif l.type == "Eltwise":
                op = l.get(0, 0)
                if op not in (0, 1, 2):
                    raise NcnnFormatError(f"{where}: Eltwise op {op} is not supported")
                coeffs = [float(c) for c in l.get(1, [])]
                fn = ("eltwise", op, coeffs)
            elif l.type == "BinaryOp":
                op = l.get(0, 0)
                if op not in (0, 1, 2, 3, 4, 5, 7, 8):
                    raise NcnnFormatError(f"{where}: BinaryOp op {op} is not supported")
                fn = ("binary", op, float(l.get(2, 0.0)) if l.get(1, 0) else None)
            elif l.type == "Interp":
                mode = {1: "nearest", 2: "bilinear", 3: "bicubic"}.get(l.get(0, 0))
                if mode is None:
                    raise NcnnFormatError(f"{where}: Interp resize_type {l.get(0, 0)} is not supported")
                if l.get(3, 0) or l.get(4, 0) or len(l.inputs) != 1:
                    raise NcnnFormatError(f"{where}: Interp to a fixed output size is not supported")
                fn = ("interp", mode, (float(l.get(1, 1.0)), float(l.get(2, 1.0)), bool(l.get(6, 0))))
            elif l.type == "PixelShuffle":
                if l.get(1, 0) != 0:
                    raise NcnnFormatError(f"{where}: PixelShuffle mode {l.get(1)} is not supported")
                fn = ("shuffle", int(l.get(0, 1)), None)
            elif l.type == "ReLU":
                fn = ("act", _activation(2 if l.get(0, 0.0) else 1, [l.get(0, 0.0)], where), None)
            elif l.type == "Sigmoid":
                fn = ("act", torch.sigmoid, None)
            elif l.type == "TanH":
                fn = ("act", torch.tanh, None)
            else:  # read_param already refused it
                raise NcnnFormatError(f"{where}: unsupported layer type {l.type}")
            self.steps.append((fn, l.inputs, l.outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs = {self.input_blob: x}
        for (kind, a, b), ins, outs in self.steps:
            xs = [blobs[i] for i in ins]
            if kind == "split":
                y = xs[0] if xs else x
            elif kind == "conv":
                y = self.layers[a](xs[0])
                y = b(y) if b is not None else y
            elif kind == "module":
                y = self.layers[a](xs[0])
            elif kind == "concat":
                y = torch.cat(xs, 1)
            elif kind == "eltwise":
                if a == 0:
                    y = xs[0]
                    for t in xs[1:]:
                        y = y * t
                elif a == 1:
                    cs = b if b else [1.0] * len(xs)
                    y = xs[0] * cs[0]
                    for c, t in zip(cs[1:], xs[1:]):
                        y = y + t * c
                else:
                    y = xs[0]
                    for t in xs[1:]:
                        y = torch.maximum(y, t)
            elif kind == "binary":
                u = xs[0]
                v = b if b is not None else xs[1]
                y = {0: lambda: u + v, 1: lambda: u - v, 2: lambda: u * v, 3: lambda: u / v,
                     4: lambda: torch.maximum(u, torch.as_tensor(v, dtype=u.dtype, device=u.device)),
                     5: lambda: torch.minimum(u, torch.as_tensor(v, dtype=u.dtype, device=u.device)),
                     7: lambda: v - u, 8: lambda: v / u}[a]()
            elif kind == "interp":
                hs, ws, align = b
                kw = {} if a == "nearest" else {"align_corners": align}
                y = F.interpolate(xs[0], scale_factor=(hs, ws), mode=a, **kw)
            elif kind == "shuffle":
                y = F.pixel_shuffle(xs[0], a)
            else:  # "act"
                y = a(xs[0])
            for o in outs:
                blobs[o] = y
        return blobs[self.output_blob]


# --------------------------------------------------------------------------- typed conversions
def _as_rrdbnet(model: NcnnModel):
    from .rrdbnet import RRDBNet

    types = {l.type for l in model.layers}
    if not types <= {"Input", "Convolution", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"}:
        return None
    convs = model.convs()
    if (len(convs) - 6) % 15 or len(convs) < 21:
        return None
    nb = (len(convs) - 6) // 15
    interps = [l for l in model.layers if l.type == "Interp"]
    if len(interps) != 2 or any(l.get(0) != 1 or float(l.get(1, 0)) != 2.0 or float(l.get(2, 0)) != 2.0 for l in interps):
        return None
    elt = [l for l in model.layers if l.type == "Eltwise"]
    if len(elt) != 4 * nb or any(l.get(0) != 1 or [float(c) for c in l.get(1, [])] != [0.2, 1.0] for l in elt):
        return None
    w0, w1, wl = convs[0].weights["weight"], convs[1].weights["weight"], convs[-1].weights["weight"]
    net = RRDBNet(num_in_ch=w0.shape[1], num_out_ch=wl.shape[0], scale=4, num_feat=w0.shape[0],
                  num_block=nb, num_grow_ch=w1.shape[0])
    names = [k[:-len(".weight")] for k in net.state_dict() if k.endswith(".weight")]
    if len(names) != len(convs):
        return None
    sd = {}
    for name, l in zip(names, convs):
        leaky = name.split(".")[-1] in ("conv1", "conv2", "conv3", "conv4") or name in ("conv_up1", "conv_up2", "conv_hr")
        act, ap = l.get(9, 0), l.get(10, [])
        if (act == 2 and [float(p) for p in ap] == [0.2]) != leaky or (not leaky and act != 0):
            return None
        if "bias" not in l.weights or tuple(net.get_parameter(name + ".weight").shape) != l.weights["weight"].shape \
                or tuple(l.get(k, d) for k, d in ((2, 1), (3, 1), (4, 1))) != (1, 1, 1):
            return None
        sd[name + ".weight"] = torch.from_numpy(l.weights["weight"].copy())
        sd[name + ".bias"] = torch.from_numpy(l.weights["bias"].copy())
    net.load_state_dict(sd, strict=True)
    info = dict(arch="RRDBNet", scale=4, num_in_ch=net.num_in_ch, num_out_ch=net.num_out_ch,
                num_feat=net.num_feat, num_block=nb, num_grow_ch=net.num_grow_ch)
    return net, info


def _as_srmd(model: NcnnModel, noise_level):
    from .srmd import SRMD, SRMDRGB

    ls = model.layers
    if [l.type for l in ls[:1]] != ["Input"] or ls[-1].type != "PixelShuffle" or len(ls) < 4:
        return None
    convs = ls[1:-1]
    if any(l.type != "Convolution" for l in convs):
        return None
    prev = ls[0].outputs[0]
    for l in ls[1:]:
        if l.inputs != [prev]:
            return None
        prev = l.outputs[0]
    for i, l in enumerate(convs):
        w = l.weights["weight"]
        want_act = 1 if i < len(convs) - 1 else 0
        if w.shape[2:] != (3, 3) or l.get(9, 0) != want_act or "bias" not in l.weights \
                or tuple(l.get(k, d) for k, d in ((2, 1), (3, 1), (4, 1))) != (1, 1, 1):
            return None
    s = int(ls[-1].get(0, 1))
    in_nc, nc = convs[0].weights["weight"].shape[1], convs[0].weights["weight"].shape[0]
    out_total = convs[-1].weights["weight"].shape[0]
    if out_total % (s * s) or in_nc - out_total // (s * s) not in (15, 16):
        return None
    net = SRMD(in_nc=in_nc, out_nc=out_total // (s * s), nc=nc, num_conv=len(convs), scale=s)
    sd = {}
    for i, l in enumerate(convs):
        sd[f"model.{2 * i}.weight"] = torch.from_numpy(l.weights["weight"].copy())
        sd[f"model.{2 * i}.bias"] = torch.from_numpy(l.weights["bias"].copy())
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError:
        return None
    if noise_level is None:
        noise_level = None if in_nc - net.out_nc == 15 else 10
    module = SRMDRGB(net, noise_level=noise_level)
    info = dict(arch="SRMD", scale=s, in_nc=in_nc, out_nc=net.out_nc, nc=nc, num_conv=len(convs),
                noise_level=module.noise_level)
    return module, info


def ncnn_to_torch(model: NcnnModel, *, noise_level: int | float | None = None) -> tuple[nn.Module, dict]:
    """Convert a parsed ncnn model to a float32 torch module taking RGB in [0, 1].

    Args:
        model: from :func:`read_ncnn`.
        noise_level: SRMD models only: the noise level channel (default 10; -1/None for the
            noise-free ``srmdnf`` models, which have none).

    Returns:
        ``(module, info)``: ``info['arch']`` is ``"RRDBNet"``, ``"SRMD"`` or ``"ncnn-graph"``, with the
        architecture hyper-parameters and ``weight_storage`` (``"fp16"``, ``"fp32"`` or ``"fp16+fp32"``).
    """
    got = _as_rrdbnet(model)
    if got is None:
        got = _as_srmd(model, noise_level)
        if got is None and noise_level is not None:
            raise ValueError(f"{model.param_path}: noise_level is an SRMD option; this graph is not SRMD")
    if got is None:
        module = NcnnGraphModule(model)
        with torch.no_grad():
            cin = next((l.weights["weight"].shape[1] for l in model.convs()), 3)
            y = module(torch.zeros(1, cin, 16, 16))
        if y.shape[-1] % 16 or y.shape[-2] != y.shape[-1]:
            raise NcnnFormatError(f"{model.param_path}: graph output {tuple(y.shape)} for a 16x16 input is not an "
                                  f"integer upscale")
        got = module, dict(arch="ncnn-graph", scale=y.shape[-1] // 16, num_in_ch=cin, num_out_ch=y.shape[1])
    module, info = got
    info["weight_storage"] = "+".join(sorted(model.weight_storage)) or "none"
    return module.eval(), info


def _read_for_registry(param: Path, bin=None):
    """:func:`read_ncnn` as a :func:`~desra_fast.models.checkpoint.read_weights` reader."""
    bin_path = Path(bin) if bin is not None else param.with_suffix(".bin")
    return read_ncnn(param, bin_path), (param, bin_path)


register_reader((".param",), "ncnn", _read_for_registry)
