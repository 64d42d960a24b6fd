"""``desra-fast evaluate-finetune``: detections before and after fine-tuning on validation images
(resumable: :class:`desra_fast.jobs.evaluate_finetune.EvaluateFinetuneJob`)."""
from __future__ import annotations

import json
import os
import sys

from ._args import finite_float, non_negative_int
from ._jobs import add_job_arguments, run_and_report, run_options

NAME = "evaluate-finetune"
HELP = "compare the GAN-SR model before and after fine-tuning: artifacts removed and added, detail kept, pictures"
DESCRIPTION = (
    "Runs GAN-SR with the model before (--before) and after (--after; --after-key picks the "
    "checkpoint's params_ema or params) fine-tuning and the MSE-SR model on the LR validation "
    "images, in fp32, detects artifacts in both GAN-SR outputs and reports per image and pooled: "
    "detected area before -> after, regions removed (a before-region with no detected pixel after), "
    "images with new regions (an after-region touching no before-region), and outside the regions "
    "the PSNR of after vs before, the texture kept (mean 7x7 local standard deviation, after / "
    "before) and the PSNR of each GAN-SR vs MSE-SR (a fine-tune collapsing toward the MSE model "
    "raises it); with --gt, IoU against the human masks. Writes OUT/sr/{before,after,mse}/, "
    "OUT/before/ and OUT/after/ masks, OUT/compare/<image>.jpg (before | after | MSE-SR) and "
    "OUT/report.json; one manifest line per image. Rerun the same command to resume.")


def add_arguments(parser) -> None:
    parser.add_argument("--before", required=True, metavar="G", help="GAN-SR model before fine-tuning")
    parser.add_argument("--after", required=True, metavar="G", help="fine-tuned model (FT/net_g_final.pth)")
    parser.add_argument("--after-key", choices=("params_ema", "params"), default=None,
                        help="entry of the --after checkpoint to evaluate: the EMA (params_ema) or the raw "
                        "generator (params); default: params_ema if present, then params (as load_sr)")
    parser.add_argument("--lr", required=True, metavar="VAL_LR", help="validation LR images")
    parser.add_argument("--mse-model", required=True, metavar="M", help="MSE-SR model (e.g. srmd-x4)")
    parser.add_argument("--gt", metavar="GT_MASKS", help="human-labelled masks (SR size, 0/255)")
    parser.add_argument("--list", metavar="TXT", help="only the images of this list (val.txt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="SR images, masks, pictures and report.json")
    parser.add_argument("--threshold", type=finite_float, default=0.7)
    parser.add_argument("--area-threshold", type=non_negative_int, default=4000)
    parser.add_argument("--window", choices=("gaussian", "box"), default="gaussian")
    parser.add_argument("--tile", type=non_negative_int, default=0, help="SR tile size in LR px (0: whole image)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", choices=("torch", "auto", "openvino", "onnxruntime", "tensorrt"), default="torch",
                        help="what runs the three SR models, always in fp32 (default torch, the reference; "
                        "auto/openvino on CPU: within one 8-bit level of torch and faster)")
    parser.add_argument("--reuse-sr", metavar="EVAL", default=None,
                        help="another evaluation's --out made with the same --before and --mse-model: read its "
                        "sr/before and sr/mse images instead of computing them again")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="REPORT",
                        help="also write the report (report.json's content) to REPORT; '-' or no value: "
                        "print it to stdout as one JSON object instead of the summary")
    add_job_arguments(parser)


def _fmt(x, spec=".4f"):
    return "undefined" if x is None else format(x, spec)


def _print_summary(rep: dict, out: str) -> None:
    pct = (lambda x: "undefined" if x is None else f"{100 * x:.2f}%")
    print(f"images {rep['images']} ({rep['after_key'] or 'weights'} of the fine-tune)  detected area "
          f"{pct(rep['area_before'])} -> {pct(rep['area_after'])} (change {pct(rep['area_change'])})")
    print(f"regions removed {rep['removed_regions']} of {rep['regions_before']} (removal rate "
          f"{_fmt(rep['removal_rate'])}); images with new regions {rep['images_with_new_regions']} "
          f"(addition rate {_fmt(rep['addition_rate'])})")
    print(f"outside the regions: PSNR after vs before {_fmt(rep['psnr_after_vs_before_outside'], '.2f')} dB, "
          f"texture kept {_fmt(rep['texture_kept'], '.3f')}, PSNR GAN-SR vs MSE-SR "
          f"{_fmt(rep['psnr_gan_vs_mse_outside_before'], '.2f')} -> "
          f"{_fmt(rep['psnr_gan_vs_mse_outside_after'], '.2f')} dB")
    if "iou_before" in rep:
        print(f"against GT ({rep['gt_images']} images): IoU {_fmt(rep['iou_before'])} -> {_fmt(rep['iou_after'])}  "
              f"removal rate {_fmt(rep['removal_rate_vs_gt'])}  addition rate {_fmt(rep['addition_rate_vs_gt'])}")
    print(f"report: {os.path.join(out, 'report.json')}")


def run(args, parser) -> int:
    from ..jobs.evaluate_finetune import EvaluateFinetuneJob, evaluate_finetune, report_bytes
    from ..utils import ListFileError, read_list, write_bytes_atomic

    keys = None
    if args.list:
        try:
            keys = read_list(args.list)
        except ListFileError as exc:
            print(f"desra-fast evaluate-finetune: error: {exc}", file=sys.stderr)
            return 1
    job = EvaluateFinetuneJob(args.lr, args.out, args.before, args.after, args.mse_model,
                              after_key=args.after_key, keys=keys, gt_dir=args.gt, threshold=args.threshold,
                              area_threshold=args.area_threshold, window=args.window, tile=args.tile,
                              device=args.device, runtime=args.runtime, reuse_sr=args.reuse_sr)
    held = {}

    def start():
        res, held["report"] = evaluate_finetune(job, run_options(args))
        return res

    code = run_and_report(job, start, f"no images (.png/.jpg/.jpeg/.webp) found in {args.lr}")
    rep = held.get("report")
    if rep is None:
        return code
    if args.json == "-":
        print(json.dumps(rep, allow_nan=False))
    else:
        if args.json is not None:
            try:
                write_bytes_atomic(args.json, report_bytes(rep))
            except OSError as exc:
                print(f"desra-fast evaluate-finetune: error: cannot write --json {args.json}: "
                      f"{exc.strerror or exc}", file=sys.stderr)
                return 1
        _print_summary(rep, args.out)
    return code
