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


def run(args, parser) -> int:
    from ..models.convert import to_official_checkpoint
    from ..models.sr import load_sr

    opts = {}
    if args.bin:
        opts["bin"] = args.bin
    if args.noise_level is not None:
        opts["noise_level"] = args.noise_level
    try:
        model = load_sr(args.model, **opts)
        s = to_official_checkpoint(model, args.output, key=args.key, check_size=args.check_size)
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
