"""Command line: ``desra-fast detect`` (resumable folder job) and ``desra-fast eval`` (metrics).

Exit codes: 0 everything succeeded; 1 some pairs/files failed (listed in the summary and, for
detect, in OUT_DIR/manifest.jsonl) or the job could not run; 2 usage errors; 130 interrupted.
See docs/cli.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional

BACKENDS = ("auto", "cpu", "triton", "cuda")


def _threshold(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive_int(text: str) -> int:
    v = _non_negative_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _ratio(text: str) -> float:
    v = _threshold(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desra-fast",
        description="Fast, exact DeSRA artifact detection for GAN super-resolution outputs.")
    sub = parser.add_subparsers(dest="command", metavar="{detect,eval}")
    sub.required = True

    d = sub.add_parser(
        "detect", help="detect artifacts for every GAN-SR/MSE-SR pair of two folders (resumable)",
        description="Pair GAN_DIR and MSE_DIR images by relative path (extension ignored; nested "
                    "folders allowed), write one full-size 0/255 mask PNG per pair at the same "
                    "relative path under OUT_DIR and one JSON line per pair to "
                    "OUT_DIR/manifest.jsonl. Rerun the same command to resume an interrupted job.")
    d.add_argument("--gan", required=True, metavar="GAN_DIR", help="GAN-SR images (PNG/JPEG/WebP, 8/16-bit)")
    d.add_argument("--mse", required=True, metavar="MSE_DIR", help="MSE-SR images at the same relative paths")
    d.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder for masks, overlays, manifest")
    d.add_argument("--seg", metavar="SEG_DIR", default=None,
                   help="ADE20K label maps (8-bit PNG, values 0..149) of the GAN-SR images at the same "
                        "relative paths; enables the semantic adjustment")
    d.add_argument("--threshold", type=_threshold, default=0.7, help="D' below this is suspicious (default 0.7)")
    d.add_argument("--area-threshold", type=_non_negative_int, default=4000,
                   help="keep regions of more than this many pixels (default 4000)")
    d.add_argument("--window", choices=("gaussian", "box"), default="gaussian",
                   help="11x11 window of the local statistics (default gaussian, as the released scripts)")
    d.add_argument("--workers", type=_positive_int, default=2,
                   help="threads decoding, and threads writing, images while detection runs (default 2)")
    d.add_argument("--overlay", action="store_true",
                   help="also write OUT_DIR/overlays/<path>.jpg: GAN-SR with regions tinted and "
                        "outlined, beside MSE-SR")
    d.add_argument("--backend", choices=BACKENDS, default="auto", help="detection backend (default auto)")
    d.add_argument("--retry-failed", action="store_true",
                   help="retry pairs an earlier run recorded as failed (default: keep their error)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar (default: bar on a terminal)")
    d.add_argument("--no-fsync", action="store_true",
                   help="do not fsync each file before renaming it into place (faster on slow disks; "
                        "still safe against killed jobs, but not against power loss)")

    e = sub.add_parser(
        "eval", help="IoU / precision / recall against GT masks, or removal / addition rate",
        description="Either --pred PRED_DIR --gt GT_DIR: IoU (mean per image, GT cropped by 5 px), "
                    "region precision and recall at overlap ratio p, as the DeSRA authors' scripts; "
                    "or --before PRED_DIR --after PRED_DIR: removal rate (share of 'before' regions "
                    "with no detection after) and addition rate (share of images whose 'after' "
                    "mask covers area outside 'before'). Masks are paired by relative path.")
    e.add_argument("--pred", metavar="PRED_DIR", help="predicted masks (full size or (H-10)x(W-10))")
    e.add_argument("--gt", metavar="GT_DIR", help="human-labelled masks (full size, 255 = artifact)")
    e.add_argument("--p", type=_ratio, default=0.5, help="overlap ratio for precision/recall (default 0.5)")
    e.add_argument("--before", metavar="PRED_DIR", help="detections on the original GAN-SR model's outputs "
                   "(the reference regions of --after; or give --gt for human-labelled ones)")
    e.add_argument("--after", metavar="PRED_DIR", help="detections on the fine-tuned model's outputs")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "detect":
            return _detect(args)
        return _eval(args, parser)
    except KeyboardInterrupt:
        print("desra-fast: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _detect(args) -> int:
    from .batch import JobConfig, JobError, format_summary, run_job

    cfg = JobConfig(gan_dir=args.gan, mse_dir=args.mse, out_dir=args.out, seg_dir=args.seg,
                    threshold=args.threshold, area_threshold=args.area_threshold, window=args.window,
                    backend=args.backend, workers=args.workers, overlay=args.overlay,
                    retry_failed=args.retry_failed, progress=False if args.no_progress else None,
                    fsync=not args.no_fsync)
    try:
        res = run_job(cfg)
    except JobError as exc:
        print(f"desra-fast detect: error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(cfg, res), file=sys.stderr)
    if res.pairs == 0:
        print(f"desra-fast detect: error: no images (.png/.jpg/.jpeg/.webp) found in {args.gan} or {args.mse}",
              file=sys.stderr)
        return 1
    return res.exit_code


def _fmt(x) -> str:
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _eval(args, parser: argparse.ArgumentParser) -> int:
    from . import metrics

    change = args.before is not None or args.after is not None
    if change == (args.pred is not None) or (not change and args.gt is None and args.pred is None):
        parser.error("eval needs either --pred PRED_DIR --gt GT_DIR or --before PRED_DIR --after PRED_DIR")
    if change and args.before is not None and args.gt is not None:
        parser.error("eval: give --before or --gt as the reference of --after, not both")
    # Removal/addition rate: the reference regions are the human-labelled GT when --gt is given
    # (SPEC.md §4: B = GT, cropped to the valid region), else the detections before fine-tuning.
    ref_flag, reference = ("--gt", args.gt) if args.gt is not None else ("--before", args.before)
    needed = [(ref_flag, reference), ("--after", args.after)] if change else [("--pred", args.pred), ("--gt", args.gt)]
    for name, d in needed:
        if d is None:
            parser.error(f"eval: {name} is missing")
    for name, d in needed:
        if not os.path.isdir(d):
            parser.error(f"eval: {name} {d}: not a directory")
    if change:
        s = metrics.evaluate_change_folders(reference, args.after, reference_is_gt=args.gt is not None)
        unmatched = [(ref_flag, s.unmatched_before), ("--after", s.unmatched_after)]
        head = s.summary()
        text = (f"removal rate {_fmt(s.removal_rate)} ({s.removed_regions} of {s.regions_before} regions)  "
                f"addition rate {_fmt(s.addition_rate)} ({s.images_with_addition} of {s.images} images)")
    else:
        s = metrics.evaluate_folders(args.pred, args.gt, p=args.p)
        unmatched = [("--pred", s.unmatched_pred), ("--gt", s.unmatched_gt)]
        head = s.summary()
        undefined = sum(1 for v in s.per_image_iou.values() if math.isnan(v))
        text = (f"IoU {_fmt(s.iou)}  precision {_fmt(s.precision)} ({s.correct_detected_regions} of "
                f"{s.detected_regions} regions)  recall {_fmt(s.recall)} ({s.found_gt_regions} of "
                f"{s.gt_regions} regions)  images {s.images}")
        if undefined:
            text += (f"\n{undefined} image(s) have empty prediction and empty GT (IoU 0/0), which makes "
                     f"the mean IoU undefined, as in the authors' script")
    print(json.dumps(head) if args.json else text)
    for flag, keys in unmatched:
        if keys:
            print(f"desra-fast eval: {len(keys)} file(s) of {flag} have no partner and were skipped "
                  f"(first: {keys[0]})", file=sys.stderr)
    for key, err in sorted(s.errors.items()):
        print(f"desra-fast eval: {key}: {err}", file=sys.stderr)
    if s.images == 0:
        print("desra-fast eval: no mask pairs found", file=sys.stderr)
        return 1
    return 1 if s.errors else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
