"""PyTorch / safetensors SR checkpoints: safe reading, key selection, architecture inference.

Reading never runs code: ``.pth``/``.pt`` go through ``torch.load(weights_only=True)``, whose
unpickler only builds tensors and plain containers; a file that needs anything else is refused
with :class:`UnsafeCheckpointError`. Official BasicSR / Real-ESRGAN checkpoints hold
``{'params_ema': state_dict}`` or ``{'params': state_dict}``; ``params_ema`` is preferred, then
``params``, then the file itself when it is a bare state dict.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

__all__ = ["UnsafeCheckpointError", "CheckpointError", "read_state_dict", "infer_rrdbnet", "infer_srmd",
           "build_from_state_dict", "load_strict"]

CHECKPOINT_KEYS = ("params_ema", "params")


class CheckpointError(ValueError):
    """A checkpoint that does not hold what the loader needs (keys, shapes, layout)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would construct arbitrary Python objects (and so could run code)."""


def read_state_dict(path: str | Path, key: str | None = None) -> tuple[dict[str, torch.Tensor], str | None]:
    """Read the weights of a ``.pth``/``.pt``/``.safetensors`` file without running any code.

    Args:
        path: the checkpoint file.
        key: the entry holding the weights (default: ``params_ema``, then ``params``, then the
            file itself if it is a bare state dict). ``module.`` prefixes (DataParallel) are removed.

    Returns:
        ``(state_dict, key_used)``; ``key_used`` is None for a bare state dict or safetensors.

    Raises:
        UnsafeCheckpointError: the pickle references globals that ``weights_only`` refuses.
        CheckpointError: not a checkpoint, or no state dict under the expected keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError("reading .safetensors needs the safetensors package: pip install safetensors") from None
        try:
            sd = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from e
        used = None
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            msg = str(e)
            if "GLOBAL" in msg or "Unsupported global" in msg:
                raise UnsafeCheckpointError(
                    f"{path}: refused to load: the pickle references Python objects beyond tensors and plain "
                    f"containers, and unpickling it could run arbitrary code. Only weights are accepted "
                    f"(torch.load(weights_only=True)). If you trust the file, re-save its state dict with "
                    f"torch.save({{'params_ema': state_dict}}, ...) or as .safetensors.{_unsafe_detail(msg)}"
                ) from None
            detail = [ln.strip() for ln in msg.splitlines() if ln.strip() and "Weights only load failed" not in ln
                      and "weights_only" not in ln]
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?)"
                                  + (f": {detail[0]}" if detail else "")) from None
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from None
        sd, used = _select(obj, key, path)
    if key is not None and used is None and path.suffix.lower() == ".safetensors":
        raise CheckpointError(f"{path}: key={key!r} given, but a .safetensors file holds one flat state dict")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: the state dict holds non-tensor entries: {bad[:5]}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, used


def _unsafe_detail(msg: str) -> str:
    hits = [ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported global" in ln]
    return f" ({hits[0].rstrip('.')})" if hits else ""


def _select(obj, key: str | None, path: Path):
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict (state dict or {{'params_ema': ...}}), got {type(obj).__name__}")
    if key is not None:
        if key not in obj or not isinstance(obj[key], dict):
            raise CheckpointError(f"{path}: no state dict under key {key!r}; top-level keys: {sorted(map(str, obj))[:10]}")
        return obj[key], key
    for k in CHECKPOINT_KEYS:
        if isinstance(obj.get(k), dict):
            return obj[k], k
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise CheckpointError(f"{path}: no weights found: expected 'params_ema', 'params' or a bare state dict; "
                          f"top-level keys: {sorted(map(str, obj))[:10]}")


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


def load_strict(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(sd, strict=True)`` with errors that list the offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        def show(ks):
            return ", ".join(ks[:8]) + (f" ... ({len(ks)} in all)" if len(ks) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise CheckpointError(f"{what}: the state dict does not match the architecture; " + "; ".join(parts))
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{what}: tensor shapes do not match the architecture: " + "; ".join(wrong[:8])
                              + (f" ... ({len(wrong)} in all)" if len(wrong) > 8 else ""))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{what}: non-finite (NaN/inf) weights in: {', '.join(bad[:8])}")
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)


def build_from_state_dict(sd: dict[str, torch.Tensor], what: str, *, scale: int | None = None,
                          noise_level=None) -> tuple[nn.Module, dict]:
    """Recognise the architecture of a state dict and build the module with its weights.

    RRDBNet (BasicSR keys) and SRMD (KAIR keys) are built here; anything else goes to spandrel
    when it is installed.

    Returns:
        ``(module, info)`` with ``info['arch']`` and the inferred hyper-parameters.
    """
    from .rrdbnet import RRDBNet
    from .srmd import SRMD, SRMDRGB

    hp = infer_rrdbnet(sd, scale)
    if hp is not None:
        if noise_level is not None:
            raise ValueError(f"{what}: noise_level is an SRMD option; this checkpoint is an RRDBNet")
        net = RRDBNet(**hp)
        load_strict(net, sd, f"{what} (RRDBNet {hp})")
        return net, dict(arch="RRDBNet", **hp)
    hp = infer_srmd(sd)
    if hp is not None:
        if scale is not None and scale != hp["scale"]:
            raise CheckpointError(f"{what}: scale={scale} given, the SRMD weights are x{hp['scale']}")
        net = SRMD(**hp)
        load_strict(net, sd, f"{what} (SRMD {hp})")
        if noise_level is None:
            noise_level = None if hp["in_nc"] - hp["out_nc"] == 15 else 10
        module = SRMDRGB(net, noise_level=noise_level)
        return module, dict(arch="SRMD", noise_level=module.noise_level, **hp)
    return _spandrel(sd, what, scale, noise_level)


def _spandrel(sd, what, scale, noise_level):
    try:
        import spandrel
    except ImportError:
        keys = ", ".join(list(sd)[:6])
        raise CheckpointError(
            f"{what}: not an RRDBNet (BasicSR keys conv_first/body.N.rdbK/conv_last) or SRMD (model.N) state "
            f"dict (first keys: {keys}). Other architectures (SwinIR, HAT, SPAN, ...) load through spandrel: "
            f"pip install 'desra_fast[spandrel]'") from None
    if noise_level is not None:
        raise ValueError(f"{what}: noise_level is an SRMD option")
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except Exception as e:
        raise CheckpointError(f"{what}: spandrel does not recognise this state dict: {e}") from e
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise CheckpointError(f"{what}: spandrel loaded a {type(desc).__name__}, not a single-image SR model")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise CheckpointError(f"{what}: {desc.architecture.name} takes {desc.input_channels} and gives "
                              f"{desc.output_channels} channels; only RGB models are supported")
    if scale is not None and scale != desc.scale:
        raise CheckpointError(f"{what}: scale={scale} given, spandrel finds x{desc.scale}")
    req = getattr(desc, "size_requirements", None)
    info = dict(arch=f"spandrel:{desc.architecture.name}", scale=int(desc.scale),
                mod=int(getattr(req, "multiple_of", 1) or 1))
    return desc.model.float().eval(), info
