"""``desra-fast run``: LR folder -> MSE-SR, GAN-SR, (segmentation), masks, manifest (resumable)."""
from __future__ import annotations

from ._args import BACKENDS, finite_float, non_negative_int, positive_int
from ._jobs import add_job_arguments, run_and_report, run_options

NAME = "run"
HELP = "the whole data step: LR images -> SR pair -> mask + manifest (resumable; local or Ray)"
DESCRIPTION = ("For every LR image under LR_DIR (flat or nested, e.g. ImageNet val): upscale it with "
               "the MSE and the GAN model, segment GAN-SR (--seg-model), detect the GAN artifacts and "
               "write OUT/masks/<path>.png and one line of OUT/manifest.jsonl (artifact fraction, "
               "regions and areas, D statistics, timings). Rank the result with `desra-fast select`. "
               "Rerun the same command to resume an interrupted job.")


def add_arguments(parser) -> None:
    parser.add_argument("--lr", required=True, metavar="LR_DIR", help="LR images (PNG/JPEG/WebP; grey, CMYK, 16-bit ok)")
    parser.add_argument("--gan-model", required=True, metavar="G", help="GAN-SR model (.pth, .safetensors, ncnn .param...)")
    parser.add_argument("--mse-model", required=True, metavar="M", help="MSE-SR model of the same scale")
    parser.add_argument("--seg-model", metavar="S", default=None, help="ADE20K segmenter of GAN-SR (semantic adjustment)")
    parser.add_argument("--out", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: threads in this process (default); ray: Ray Data actors")
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (default: a local instance)")
    parser.add_argument("--ray-actors", type=positive_int, default=None,
                        help="model actors (default: one per GPU, or 1 on CPU)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "tensorrt", "openvino"), default="auto",
                        help="auto (default): OpenVINO fp32 on CPU when installed, TensorRT on CUDA when "
                        "installed, else torch")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="SR precision (default auto: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--tile", type=non_negative_int, default=0,
                        help="SR tile size in LR pixels (default 0: untiled up to 1 MP of LR, tiles of 512 above)")
    parser.add_argument("--tile-pad", type=non_negative_int, default=None,
                        help="context around each tile (default: the model's measured seam-free context and "
                        "blended overlap, 48 + 16 px for RRDBNet; a value given here is Real-ESRGAN's "
                        "crop-only tiling)")
    parser.add_argument("--batch", type=positive_int, default=1, help="same-size images per model call (default 1)")
    parser.add_argument("--save-sr", choices=("none", "png", "jpg", "webp"), default="none",
                        help="keep the SR pair in OUT/gan/ and OUT/mse/ (default none: ~20 MB per image as PNG)")
    parser.add_argument("--overlay", action="store_true", help="also write OUT/overlays/<path>.jpg")
    parser.add_argument("--save-repaired", choices=("none", "png", "jpg", "webp"), default="none",
                        help="write OUT/repaired/<path>: GAN-SR with the detected regions replaced by MSE-SR "
                        "(default none)")
    parser.add_argument("--feather", type=non_negative_int, default=0,
                        help="soft edge of --save-repaired in output px (fades out within 2x this; default 0)")
    parser.add_argument("--only", metavar="LIST", default=None,
                        help="process only the images of this list (one relative path per line, e.g. "
                        "train.txt of desra-fast select)")
    parser.add_argument("--limit", type=non_negative_int, default=None, help="process the first N images (sorted)")
    parser.add_argument("--threshold", type=finite_float, default=0.7, help="D' below this is suspicious (default 0.7)")
    parser.add_argument("--area-threshold", type=non_negative_int, default=4000,
                        help="keep regions of more than this many pixels (default 4000)")
    parser.add_argument("--window", choices=("gaussian", "box"), default="gaussian")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="detection backend (default auto)")
    add_job_arguments(parser)


def run(args, parser) -> int:
    from ..utils import read_list
    from ..pipeline import PipelineConfig, PipelineJob
    from ..pipeline import run as run_pipeline

    job = PipelineJob(PipelineConfig(args.lr, args.gan_model, args.mse_model, args.out, seg_model=args.seg_model,
                                     save_sr=args.save_sr, overlay=args.overlay,
                                     save_repaired=args.save_repaired))  # names the summary's outputs

    def start():
        only = read_list(args.only) if args.only else None
        return run_pipeline(args.lr, args.gan_model, args.mse_model, args.out, seg_model=args.seg_model,
                            engine=args.engine, device=args.device, runtime=args.runtime, precision=args.precision,
                            tile=args.tile, tile_pad=args.tile_pad, batch=args.batch, save_sr=args.save_sr,
                            overlay=args.overlay, save_repaired=args.save_repaired, feather=args.feather,
                            only=only, limit=args.limit, threshold=args.threshold,
                            area_threshold=args.area_threshold, window=args.window, backend=args.backend,
                            ray_address=args.ray_address, ray_actors=args.ray_actors, **vars(run_options(args)))

    return run_and_report(job, start, f"no images (.png/.jpg/.jpeg/.webp) to process in {args.lr}"
                          + (f" (with --only {args.only})" if args.only else ""))
