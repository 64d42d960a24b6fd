"""``desra-fast export``: an SR model or a segmenter -> ONNX (dynamic sizes) or a TensorRT engine."""
from __future__ import annotations

import argparse
import sys

from ._args import positive_int

NAME = "export"
HELP = "export an SR model or a segmenter to ONNX (dynamic batch/height/width), an OpenVINO IR or a TensorRT engine"
DESCRIPTION = (
    "Loads MODEL with desra_fast.load_sr (any SR checkpoint form: .pth, .safetensors, ncnn .param, a "
    "packaged name such as realesrgan-x4plus) or, failing that, desra_fast.load_segmenter (mmseg / "
    "Hugging Face SegFormer), and writes one self-contained .onnx with dynamic batch, height and "
    "width whose metadata holds everything load_sr / load_segmenter need to pre-process inputs "
    "exactly as the source model (pre-pad, scale, value range, normalisation). --format tensorrt "
    "builds an engine from it on this machine's NVIDIA GPU (with a OUT.json description beside it); "
    "--min/--opt/--max-shape set its optimisation profile. --format openvino writes an OpenVINO IR "
    "(OUT.xml + OUT.bin, float32 weights, dynamic sizes) holding the same model description, which "
    "load_sr / load_segmenter and --runtime openvino read. The written ONNX is checked with "
    "onnx.checker and, when onnxruntime is installed, run against the torch model; the IR is run "
    "against the torch model with OpenVINO.")


def shape(text: str) -> tuple:
    """``NxCxHxW`` (or ``N,C,H,W``) -> a 4-tuple of positive ints."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape NxCxHxW: {text!r}") from None
    if len(vals) != 4 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"a shape is four positive sizes NxCxHxW, got {text!r}")
    return vals


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH", help="model file / folder or packaged name")
    parser.add_argument("--format", choices=("onnx", "tensorrt", "openvino"), default="onnx",
                        help="output format (default onnx)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="the .onnx, .engine or (openvino) .xml file to write")
    parser.add_argument("--kind", choices=("auto", "sr", "segmenter"), default="auto",
                        help="what MODEL is (default: try an SR model, then a segmenter)")
    prec = parser.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_const", const="fp16", dest="precision",
                      help="fp16 weights and compute (float32 input/output); TensorRT: fp16 engine")
    prec.add_argument("--bf16", action="store_const", const="bf16", dest="precision", help="bfloat16 likewise")
    parser.set_defaults(precision="fp32")
    parser.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: the exporter's)")
    for which in ("min", "opt", "max"):
        parser.add_argument(f"--{which}-shape", type=shape, default=None, metavar="NxCxHxW",
                            help=f"TensorRT profile {which} input shape (LR tile incl. pre-pad for SR models)")
    parser.add_argument("--noise-level", type=int, default=None, metavar="N",
                        help="SRMD only: the noise level baked into the graph (default 10)")
    parser.add_argument("--no-verify", action="store_true", help="skip the runtime-vs-torch check")


def run(args, parser) -> int:
    import importlib.util
    from pathlib import Path

    from ..export import load_exportable, runtime_max_abs_diff, to_onnx
    from ..runtime import RuntimeUnavailableError, resolve_runtime

    out = Path(args.output)
    if args.format == "onnx" and any(getattr(args, f"{w}_shape") for w in ("min", "opt", "max")):
        parser.error("--min/--opt/--max-shape set a TensorRT profile: use them with --format tensorrt")
    try:
        if args.format == "tensorrt":
            resolve_runtime("tensorrt", "cuda", source="onnx")      # fail before the slow export
        if args.format == "openvino":
            if out.suffix.lower() != ".xml":
                parser.error(f"--format openvino writes OUT.xml (and OUT.bin beside it), got -o {out}")
            if args.precision != "fp32":
                parser.error("--format openvino stores float32 weights; the precision is chosen when the IR is "
                             "loaded (load_sr(..., precision='bf16'), --runtime openvino --precision bf16)")
            resolve_runtime("openvino", "cpu", source="ir")
        model = load_exportable(args.model, args.kind, noise_level=args.noise_level)
        if args.format == "openvino":
            from ..runtime.openvino import OpenVINORunner, save_ir

            save_ir(model, out)
            size = (out.stat().st_size + out.with_suffix(".bin").stat().st_size) / 2 ** 20
            print(f"desra-fast export: wrote {out} and {out.with_suffix('.bin').name} ({size:.1f} MiB, fp32 weights)")
            if not args.no_verify:
                diff = runtime_max_abs_diff(model, out, OpenVINORunner)
                print(f"desra-fast export: OpenVINO vs torch on an unseen size: max abs diff {diff:.2e}")
            return 0
        if args.format == "onnx":
            to_onnx(model, out, opset=args.opset, precision=args.precision)
            print(f"desra-fast export: wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB, {args.precision})")
            if not args.no_verify and importlib.util.find_spec("onnxruntime") is not None:
                diff = runtime_max_abs_diff(model, out)
                print(f"desra-fast export: onnxruntime vs torch on an unseen size: max abs diff {diff:.2e}")
            return 0
        from ..runtime.tensorrt import build_engine, weak_typing

        # The ONNX stays beside the engine: the engine's description points to it (fp32 recompute).
        graph = args.precision if not weak_typing() else "fp32"
        onnx_path = to_onnx(model, out.with_suffix(".onnx"), opset=args.opset, precision=graph)
        fallback = None
        if graph != "fp32":
            fallback = to_onnx(model, out.with_suffix(".fp32.onnx"), opset=args.opset)
        build_engine(onnx_path, out, precision=args.precision, min_shape=args.min_shape,
                     opt_shape=args.opt_shape, max_shape=args.max_shape, device="cuda",
                     timing_cache=out.with_suffix(".timing.cache"), fallback_onnx=fallback)
        print(f"desra-fast export: wrote {out} ({args.precision} TensorRT engine) and {out.name}.json; "
              f"ONNX source {onnx_path}")
        return 0
    except RuntimeUnavailableError as e:
        print(f"desra-fast export: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as e:
        print(f"desra-fast export: {e}", file=sys.stderr)
        return 1
