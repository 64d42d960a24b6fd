"""``desra-fast detect``: a resumable detection job over a GAN-SR folder and an MSE-SR folder."""
from __future__ import annotations

from ._args import BACKENDS, finite_float, non_negative_int
from ._jobs import add_job_arguments, run_and_report

NAME = "detect"
HELP = "detect artifacts for every GAN-SR/MSE-SR pair of two folders (resumable)"
DESCRIPTION = ("Pair GAN_DIR and MSE_DIR images by relative path (extension ignored; nested "
               "folders allowed), write one full-size 0/255 mask PNG per pair at the same "
               "relative path under OUT_DIR and one JSON line per pair to "
               "OUT_DIR/manifest.jsonl. Rerun the same command to resume an interrupted job.")


def add_arguments(parser) -> None:
    parser.add_argument("--gan", required=True, metavar="GAN_DIR", help="GAN-SR images (PNG/JPEG/WebP, 8/16-bit)")
    parser.add_argument("--mse", required=True, metavar="MSE_DIR", help="MSE-SR images at the same relative paths")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder for masks, overlays, manifest")
    parser.add_argument("--seg", metavar="SEG_DIR", default=None,
                        help="ADE20K label maps (8-bit PNG, values 0..149) of the GAN-SR images at the same "
                        "relative paths; enables the semantic adjustment")
    parser.add_argument("--seg-model", metavar="PATH", default=None,
                        help="segment each GAN-SR image with this ADE20K SegFormer (mmseg .pth or Hugging Face "
                        "folder) for the semantic adjustment, instead of --seg label maps")
    parser.add_argument("--threshold", type=finite_float, default=0.7, help="D' below this is suspicious (default 0.7)")
    parser.add_argument("--area-threshold", type=non_negative_int, default=4000,
                        help="keep regions of more than this many pixels (default 4000)")
    parser.add_argument("--window", choices=("gaussian", "box"), default="gaussian",
                        help="11x11 window of the local statistics (default gaussian, as the released scripts)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write OUT_DIR/overlays/<path>.jpg: GAN-SR with regions tinted and "
                        "outlined, beside MSE-SR")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="detection backend (default auto)")
    add_job_arguments(parser, "pairs")


def run(args, parser) -> int:
    from ..jobs.detect import DetectJob, JobConfig, run_job

    cfg = JobConfig(gan_dir=args.gan, mse_dir=args.mse, out_dir=args.out, seg_dir=args.seg,
                    seg_model=args.seg_model, threshold=args.threshold, area_threshold=args.area_threshold,
                    window=args.window, backend=args.backend, workers=args.workers, overlay=args.overlay,
                    retry_failed=args.retry_failed, progress=False if args.no_progress else None,
                    fsync=not args.no_fsync)
    return run_and_report(DetectJob(cfg), lambda: run_job(cfg),
                          f"no images (.png/.jpg/.jpeg/.webp) found in {args.gan} or {args.mse}")
