"""``desra-fast segment``: a resumable ADE20K segmentation job over a folder of images."""
from __future__ import annotations

import sys

from ._args import positive_int
from ._jobs import add_job_arguments

NAME = "segment"
HELP = "ADE20K label maps (palette PNGs) of every image of a folder with a SegFormer (resumable)"
DESCRIPTION = ("Segment every image under IN_DIR (nested folders allowed) with a SegFormer checkpoint "
               "(mmsegmentation .pth or Hugging Face folder/file) and write OUT_DIR/<relative path>.png: "
               "a palette PNG whose pixel values are the ADE20K labels 0..149 (coloured with the ADE20K "
               "palette), readable by `desra-fast detect --seg OUT_DIR`. Preprocessing is "
               "mmsegmentation's test pipeline of the authors' config by default. One JSON line per image "
               "goes to OUT_DIR/manifest.jsonl; rerun the same command to resume.")


def add_arguments(parser) -> None:
    parser.add_argument("-i", "--input", required=True, metavar="IN_DIR", help="images (PNG/JPEG/WebP, 8/16-bit)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder for the label maps")
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="SegFormer ADE20K checkpoint: mmseg .pth, or a Hugging Face folder / model file")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--scale", type=positive_int, nargs=2, default=(2048, 640), metavar=("LONG", "SHORT"),
                        help="mmseg keep-ratio Resize scale (default 2048 640, the authors' config)")
    parser.add_argument("--preprocess", choices=("mmseg", "hf"), default="mmseg",
                        help="mmseg's test pipeline (default) or transformers' SegformerImageProcessor")
    parser.add_argument("--trust", action="store_true",
                        help="allow a checkpoint whose metadata holds pickled objects (runs unpickling code: "
                        "only for files you trust)")
    parser.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "tensorrt", "openvino"), default="auto",
                        help="auto (default): OpenVINO for an exported .xml/.onnx on CPU, TensorRT on CUDA when "
                        "installed, else torch (see docs/runtimes.md)")
    parser.add_argument("--batch-size", type=positive_int, default=1,
                        help="same-size images per network call (default 1)")
    add_job_arguments(parser)


def run(args, parser) -> int:
    from ..jobs import run_job
    from ..jobs.segment import SegmentJob
    from ..models import CheckpointError, load_segmenter
    from ._jobs import run_and_report, run_options

    try:
        seg = load_segmenter(args.model, device=args.device, scale=tuple(args.scale), preprocess=args.preprocess,
                             trust=args.trust, batch_size=args.batch_size, runtime=args.runtime)
    except (CheckpointError, ValueError, RuntimeError) as exc:
        print(f"desra-fast segment: error: {exc}", file=sys.stderr)
        return 1
    job = SegmentJob(args.input, args.output, seg, args.batch_size)
    return run_and_report(job, lambda: run_job(job, args.output, run_options(args)),
                          f"no images (.png/.jpg/.jpeg/.webp) found in {args.input}")
