"""Direct translation of plain convolutional SR networks (RRDBNet, SRMD, ...) to an OpenVINO graph.

``openvino.convert_model`` traces a torch module with TorchScript and runs OpenVINO's frontend:
general, but tens of seconds even for a tiny network. The SR networks DeSRA runs are chains of
a handful of torch operations (3x3 convolutions, (leaky) ReLU, concatenation, sums, nearest x2
upsampling, pixel (un)shuffle), so :func:`translate` maps their ``torch.fx`` graph node by node
to OpenVINO operations, in float32, in milliseconds. Anything outside that set returns None and
the caller falls back to ``openvino.convert_model``. The translation is checked against the
torch module in ``tests/test_runtime_openvino.py`` (real x4plus and SRMD weights).
"""
from __future__ import annotations

import logging
import operator
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["translate"]

log = logging.getLogger(__name__)


class _Unsupported(Exception):
    pass


def _const(ops, value) -> Any:
    return ops.constant(np.ascontiguousarray(np.asarray(value, dtype=np.float32)))


def _conv(ops, x, conv) -> Any:
    import torch.nn.functional as F  # noqa: F401 - torch is loaded by the caller

    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise _Unsupported(f"Conv2d {conv}")
    w = conv.weight.detach().float().cpu().numpy()
    pad = [int(p) for p in conv.padding]
    y = ops.convolution(x, _const(ops, w), [int(s) for s in conv.stride], pad, pad,
                        [int(d) for d in conv.dilation])
    if conv.bias is not None:
        y = ops.add(y, _const(ops, conv.bias.detach().float().cpu().numpy().reshape(1, -1, 1, 1)))
    return y


def _nearest(ops, x, scale) -> Any:
    if isinstance(scale, (tuple, list)):
        if len(set(scale)) != 1:
            raise _Unsupported("anisotropic interpolation")
        scale = scale[0]
    if float(scale) != int(scale) or int(scale) < 1:
        raise _Unsupported(f"interpolation scale {scale}")
    # torch's "nearest" reads source pixel floor(dst / scale): asymmetric coordinates, floor.
    return ops.interpolate(x, _const(ops, [float(scale), float(scale)]), "nearest", "scales",
                           axes=np.array([2, 3], dtype=np.int64), coordinate_transformation_mode="asymmetric",
                           nearest_mode="floor")


def _module_op(ops, mod, args, kwargs):
    from torch import nn

    x = args[0]
    if kwargs:
        raise _Unsupported(f"{type(mod).__name__} with keyword arguments")
    if isinstance(mod, nn.Conv2d):
        return _conv(ops, x, mod)
    if isinstance(mod, nn.LeakyReLU):
        return ops.prelu(x, _const(ops, [mod.negative_slope]))
    if isinstance(mod, nn.ReLU):
        return ops.relu(x)
    if isinstance(mod, nn.PixelShuffle):
        return ops.depth_to_space(x, "depth_first", int(mod.upscale_factor))
    if isinstance(mod, nn.PixelUnshuffle):
        return ops.space_to_depth(x, "depth_first", int(mod.downscale_factor))
    if isinstance(mod, nn.Identity):
        return x
    if isinstance(mod, nn.Upsample) and mod.mode == "nearest" and mod.size is None:
        return _nearest(ops, x, mod.scale_factor)
    raise _Unsupported(type(mod).__name__)


def _is_node(v) -> bool:
    import openvino as ov

    return isinstance(v, (ov.Node, ov.Output))


def _binary(ops, fn, a, b):
    if not (_is_node(a) or _is_node(b)):
        raise _Unsupported("arithmetic on two Python values")
    # A Python scalar becomes a float32 constant, as torch casts it to the tensor's dtype.
    return fn(a if _is_node(a) else _const(ops, a), b if _is_node(b) else _const(ops, b))


def _function_op(ops, fn, args, kwargs):
    import torch
    import torch.nn.functional as F

    if fn in (operator.add, torch.add) and not kwargs:
        return _binary(ops, ops.add, *args)
    if fn in (operator.sub, torch.sub) and not kwargs:
        return _binary(ops, ops.subtract, *args)
    if fn in (operator.mul, torch.mul) and not kwargs:
        return _binary(ops, ops.multiply, *args)
    if fn is torch.cat:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if dim not in (1, -3):
            raise _Unsupported(f"torch.cat along dim {dim}")
        return ops.concat(list(args[0]), 1)
    if fn in (F.relu, torch.relu):
        return ops.relu(args[0])
    if fn is F.leaky_relu:
        slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
        return ops.prelu(args[0], _const(ops, [slope]))
    if fn is F.interpolate:
        mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
        scale = kwargs.get("scale_factor", args[2] if len(args) > 2 else None)
        size = kwargs.get("size", args[1] if len(args) > 1 else None)
        if mode != "nearest" or scale is None or size is not None or len(args) > 4:
            raise _Unsupported(f"interpolate mode={mode} size={kwargs.get('size')}")
        return _nearest(ops, args[0], scale)
    if fn is F.pixel_unshuffle:
        return ops.space_to_depth(args[0], "depth_first", int(kwargs.get("downscale_factor", args[-1])))
    if fn is F.pixel_shuffle:
        return ops.depth_to_space(args[0], "depth_first", int(kwargs.get("upscale_factor", args[-1])))
    raise _Unsupported(getattr(fn, "__name__", str(fn)))


def _graph(ops, module, x):
    """OpenVINO output of ``module`` applied to the OpenVINO node ``x`` (via ``torch.fx``)."""
    import torch
    import torch.fx

    from ..models.srmd import SRMDRGB

    if isinstance(module, SRMDRGB):
        # Its forward checks the channel count in Python (not traceable); the graph is "append
        # the constant degradation / noise channels, run the SRMD network".
        code = module.code.detach().float().cpu().numpy()                          # (1, k, 1, 1)
        shape = ops.shape_of(x)
        n_hw = [ops.gather(shape, _index(ops, [0]), _index(ops, 0)),
                ops.constant(np.array([code.shape[1]], dtype=np.int64)),
                ops.gather(shape, _index(ops, [2, 3]), _index(ops, 0))]
        planes = ops.broadcast(_const(ops, code), ops.concat(n_hw, 0))
        return _graph(ops, module.net, ops.concat([x, planes], 1))
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 - data-dependent Python control flow, etc.
        raise _Unsupported(f"torch.fx cannot trace {type(module).__name__}: {e}") from None
    env: Dict[Any, Any] = {}

    def val(a):
        if isinstance(a, torch.fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(val(v) for v in a)
        return a

    out = None
    for node in gm.graph.nodes:
        args, kwargs = val(node.args), {k: val(v) for k, v in node.kwargs.items()}
        if node.op == "placeholder":
            env[node] = x
        elif node.op == "call_module":
            env[node] = _module_op(ops, gm.get_submodule(node.target), args, kwargs)
        elif node.op == "call_function":
            env[node] = _function_op(ops, node.target, args, kwargs)
        elif node.op == "call_method" and node.target == "contiguous":
            env[node] = args[0]
        elif node.op == "output":
            out = args[0]
        else:
            raise _Unsupported(f"{node.op} {node.target}")
    if not _is_node(out):
        raise _Unsupported("the network returns something other than one tensor")
    return out


def _index(ops, v):
    return ops.constant(np.array(v, dtype=np.int64))


def translate(module, in_channels: int) -> Optional[Any]:
    """An ``openvino.Model`` computing ``module`` (float32 (N, in_channels, H, W) -> NCHW, dynamic
    N, H, W), or None when the module uses something outside the translated set.

    Args:
        module: a torch ``nn.Module`` in eval mode (its weights are copied as float32 constants).
        in_channels: the input's channel count.
    """
    import openvino as ov
    import openvino.opset13 as ops
    from torch import nn

    leaves = (nn.Conv2d, nn.LeakyReLU, nn.ReLU, nn.PixelShuffle, nn.PixelUnshuffle, nn.Identity, nn.Upsample)
    if any(not isinstance(m, leaves) for m in module.modules() if not any(True for _ in m.children())):
        return None     # a layer outside the set (LayerNorm, Linear, attention...): decided before tracing
    param = ops.parameter(ov.PartialShape([-1, int(in_channels), -1, -1]), ov.Type.f32, name="input")
    try:
        out = _graph(ops, module, param.output(0))
    except _Unsupported:
        return None
    except Exception as e:  # noqa: BLE001 - an optimisation with a fallback: never fail a load
        log.debug("no direct OpenVINO translation of %s: %s: %s", type(module).__name__, type(e).__name__, e)
        return None
    res = ops.result(out)
    return ov.Model([res], [param], type(module).__name__)
