"""``desra-fast convert``: any SR model file -> an official-layout PyTorch / safetensors checkpoint."""
from __future__ import annotations

import sys

from ._args import non_negative_int

NAME = "convert"
HELP = "convert an SR model (ncnn .param/.bin, .pth, .safetensors) to an official-layout checkpoint"
DESCRIPTION = (
    "Reads MODEL with desra_fast.load_sr (an ncnn .param with its .bin beside it or --bin, a .pth/.pt, "
    "a .safetensors, or a packaged model name such as realesrgan-x4plus) and writes its weights in the "
    "official layout: RRDBNet as BasicSR / Real-ESRGAN keys under 'params_ema' (conv_first, "
    "body.N.rdbK.convM, conv_body, conv_up1, conv_up2, conv_hr, conv_last), SRMD as KAIR keys (model.N). "
    "An output ending in .safetensors holds the flat state dict. The written file is reloaded strictly "
    "and checked to give the same output before the command succeeds.")


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model file (.param, .pth, .pt, .safetensors) or packaged name")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output file: .pth (torch.save of {KEY: state_dict}) or .safetensors")
    parser.add_argument("--key", choices=("params_ema", "params"), default="params_ema",
                        help="top-level key of the .pth (default params_ema, as Real-ESRGAN's GAN models; "
                             "params for MSE models)")
    parser.add_argument("--bin", metavar="PATH", help="the ncnn .bin, if not beside the .param")
    parser.add_argument("--noise-level", type=int, default=None, metavar="N",
                        help="SRMD only: noise level kept in the recorded metadata (weights do not depend on it)")
    parser.add_argument("--check-size", type=non_negative_int, default=16, metavar="PX",
                        help="side of the random LR used to check the written file (0: no check; default 16)")


def convert(model, output, *, key: str = "params_ema", check_size: int = 16) -> dict:
    """Write ``model``'s weights (an :class:`~desra_fast.models.SRModel`) in the official layout.

    Returns a summary dict (``arch``, ``tensors``, ``parameters``, ``output``, ``max_abs_diff``).
    """
    import io
    from pathlib import Path

    import torch

    from ..imageio import write_bytes_atomic
    from ..models.sr import load_sr

    arch = model.info["arch"]
    if arch == "RRDBNet":
        sd = model.module.state_dict()
    elif arch == "SRMD":
        sd = model.module.net.state_dict()
    else:
        raise ValueError(f"convert: no official checkpoint layout for a {arch} model "
                         f"(RRDBNet and SRMD graphs convert)")
    sd = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sd.items()}
    out = Path(output)
    if out.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        data = save(sd, metadata={"arch": arch, "scale": str(model.scale), "source_sha256": model.info.get("source_sha256", "")})
    elif out.suffix.lower() in (".pth", ".pt"):
        buf = io.BytesIO()
        torch.save({key: sd}, buf)
        data = buf.getvalue()
    else:
        raise ValueError(f"convert: output must end in .pth, .pt or .safetensors, got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, data)
    summary = dict(arch=arch, scale=model.scale, tensors=len(sd), parameters=sum(v.numel() for v in sd.values()),
                   output=str(out), key=None if out.suffix.lower() == ".safetensors" else key, max_abs_diff=None)
    if check_size:
        opts = {"noise_level": model.info["noise_level"]} if arch == "SRMD" else {}
        again = load_sr(out, **opts)
        x = torch.rand(1, 3, check_size, check_size, generator=torch.Generator().manual_seed(0))
        a = model.upscale(x.to(model.device), pre_pad=0).cpu()
        b = again.upscale(x, pre_pad=0)
        summary["max_abs_diff"] = float((a - b).abs().max())
        if summary["max_abs_diff"] != 0.0:
            raise RuntimeError(f"convert: {out} reloads but gives different outputs "
                               f"(max abs diff {summary['max_abs_diff']:.3g})")
    return summary


def run(args, parser) -> int:
    from ..models.sr import load_sr

    opts = {}
    if args.bin:
        opts["bin"] = args.bin
    if args.noise_level is not None:
        opts["noise_level"] = args.noise_level
    try:
        model = load_sr(args.model, **opts)
        s = convert(model, args.output, key=args.key, check_size=args.check_size)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        print(f"desra-fast convert: {e}", file=sys.stderr)
        return 1
    hp = {k: v for k, v in model.info.items() if k in ("num_in_ch", "num_out_ch", "num_feat", "num_block",
                                                         "num_grow_ch", "in_nc", "out_nc", "nc", "num_conv")}
    where = f"['{s['key']}']" if s["key"] else ""
    check = "" if s["max_abs_diff"] is None else ", reloaded strictly: identical output"
    print(f"{s['output']}{where}: {s['arch']} x{s['scale']} {hp}, {s['tensors']} tensors, "
          f"{s['parameters']:,} parameters{check}")
    return 0
