"""``desra-fast sr``: upscale a file or a folder with one SR model (Real-ESRGAN's flags; resumable)."""
from __future__ import annotations

from ._args import finite_float, memory_size, non_negative_int, tile_size
from ._jobs import add_job_arguments, run_and_report, run_options

NAME = "sr"
HELP = "upscale an image or a folder with an SR model (Real-ESRGAN's inference flags; resumable)"
DESCRIPTION = ("Upscale INPUT (a file, or a folder searched recursively, nested folders kept) with MODEL "
               "(.pth/.safetensors/ncnn .param/packaged name) into OUTPUT/<path>_<suffix>.<ext>, with the "
               "flags of Real-ESRGAN's inference_realesrgan.py. Grayscale stays grayscale, RGBA keeps an "
               "upscaled alpha (saved as PNG), 16-bit stays 16-bit. One JSON line per image in "
               "OUTPUT/manifest.jsonl; rerun the same command to resume.")


def _outscale(text: str) -> float:
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def add_arguments(parser) -> None:
    parser.add_argument("-i", "--input", required=True, help="input image or folder")
    parser.add_argument("-o", "--output", default="results", help="output folder (default results)")
    parser.add_argument("--model", "--model_path", "--model-path", dest="model", required=True, metavar="PATH",
                        help="model file (.pth, .safetensors, ncnn .param) or packaged name (realesrgan-x4plus)")
    parser.add_argument("-s", "--outscale", type=_outscale, default=None,
                        help="final upsampling scale (default: the model's; others resize its output, Lanczos)")
    parser.add_argument("--suffix", default="out", help="suffix of the output names (default out; '' for none)")
    parser.add_argument("-t", "--tile", type=tile_size, default=0,
                        help="tile size in LR px, 0 for no tiling, 'auto' for the largest that fits --max-memory "
                        "(default 0)")
    parser.add_argument("--tile-pad", "--tile_pad", dest="tile_pad", type=non_negative_int, default=None,
                        help="context around each tile (default: the model's measured seam-free context and "
                        "blended overlap, 48 + 16 px for RRDBNet; a value given here is Real-ESRGAN's "
                        "crop-only tiling)")
    parser.add_argument("--max-memory", type=memory_size, default=None, metavar="SIZE",
                        help="memory budget of --tile auto, e.g. 512M, 4G (default 2G on CPU, 80%% of the free "
                        "GPU memory on CUDA)")
    rep_ = parser.add_argument_group("artifact repair (DeSRA)")
    rep_.add_argument("--repair", action="store_true",
                      help="also run --mse-model, detect the GAN artifacts and write GAN-SR with them replaced "
                      "by MSE-SR")
    rep_.add_argument("--mse-model", default=None, metavar="PATH",
                      help="the pixel-loss model of --model (file or packaged name such as srmd-x4)")
    rep_.add_argument("--feather", type=non_negative_int, default=0,
                      help="soft edge in output px grown around the replaced regions (default 0)")
    rep_.add_argument("--seg-model", default=None, metavar="PATH",
                      help="ADE20K segmentation model weighting the detection per class (default none)")
    rep_.add_argument("--threshold", type=finite_float, default=0.7, help="D' below this is suspicious (default 0.7)")
    rep_.add_argument("--area-threshold", type=non_negative_int, default=4000,
                      help="keep regions of more output pixels than this (default 4000)")
    parser.add_argument("--pre-pad", "--pre_pad", dest="pre_pad", type=non_negative_int, default=None,
                        help="pre-padding of the image (default: the model's, 10 for RRDBNet as the ncnn "
                        "tools; Real-ESRGAN's script defaults to 0)")
    prec = parser.add_mutually_exclusive_group()
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32",
                      help="float32 (default on CPU)")
    prec.add_argument("--half", dest="precision", action="store_const", const="fp16",
                      help="float16 (default on CUDA, as Real-ESRGAN)")
    prec.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="bfloat16")
    parser.add_argument("--alpha_upsampler", "--alpha-upsampler", dest="alpha_upsampler",
                        choices=("realesrgan", "bicubic"), default="realesrgan",
                        help="alpha channel: by the model (realesrgan, default) or resized (bicubic: "
                        "bilinear, as Real-ESRGAN's code does)")
    parser.add_argument("--ext", choices=("auto", "jpg", "png"), default="auto",
                        help="output format; auto = the input's (RGBA always png)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("-g", "--gpu-id", type=non_negative_int, default=None, help="GPU index (same as --device cuda:N)")
    parser.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "tensorrt", "openvino"), default="auto",
                        help="auto (default): OpenVINO fp32 on CPU when installed, TensorRT on CUDA when "
                        "installed, else torch")
    add_job_arguments(parser)


def run(args, parser) -> int:
    from ..jobs.sr import SRJob

    device = args.device
    if args.gpu_id is not None:
        if device not in (None, "cuda", f"cuda:{args.gpu_id}"):
            parser.error(f"--gpu-id {args.gpu_id} contradicts --device {device}")
        device = f"cuda:{args.gpu_id}"
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = args.precision or ("fp16" if device.startswith("cuda") else "fp32")
    job = SRJob(args.input, args.output, args.model, outscale=args.outscale, tile=args.tile, tile_pad=args.tile_pad,
                pre_pad=args.pre_pad, precision=precision,
                alpha_upsampler="model" if args.alpha_upsampler == "realesrgan" else "bilinear",
                ext=args.ext, suffix=args.suffix, device=device, runtime=args.runtime, max_memory=args.max_memory,
                mse_model=args.mse_model, repair=args.repair, feather=args.feather, seg_model=args.seg_model,
                threshold=args.threshold, area_threshold=args.area_threshold)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    from ..jobs import run_job

    return run_and_report(job, lambda: run_job(job, args.output, run_options(args)),
                          f"no images (.png/.jpg/.jpeg/.webp) found in {args.input}")
