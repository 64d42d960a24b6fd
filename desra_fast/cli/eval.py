"""``desra-fast eval``: the paper's metrics over mask folders (IoU, precision, recall, removal and
addition rate)."""
from __future__ import annotations

import json
import math
import os
import sys

from ._args import ratio

NAME = "eval"
HELP = "IoU / precision / recall against GT masks, or removal / addition rate"
DESCRIPTION = ("Either --pred PRED_DIR --gt GT_DIR: IoU (mean per image, GT cropped by 5 px), "
               "region precision and recall at overlap ratio p, as the DeSRA authors' scripts; "
               "or --before PRED_DIR --after PRED_DIR: removal rate (share of 'before' regions "
               "with no detection after) and addition rate (share of images whose 'after' "
               "mask covers area outside 'before'). Masks are paired by relative path.")


def add_arguments(parser) -> None:
    parser.add_argument("--pred", metavar="PRED_DIR", help="predicted masks (full size or (H-10)x(W-10))")
    parser.add_argument("--gt", metavar="GT_DIR", help="human-labelled masks (full size, 255 = artifact)")
    parser.add_argument("--p", type=ratio, default=0.5, help="overlap ratio for precision/recall (default 0.5)")
    parser.add_argument("--before", metavar="PRED_DIR", help="detections on the original GAN-SR model's outputs "
                        "(the reference regions of --after; or give --gt for human-labelled ones)")
    parser.add_argument("--after", metavar="PRED_DIR", help="detections on the fine-tuned model's outputs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _fmt(x) -> str:
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def run(args, parser) -> int:
    from .. import metrics
    from ..jobs.detect import non_mask_dirs

    change = args.before is not None or args.after is not None
    if change == (args.pred is not None) or (not change and args.gt is None and args.pred is None):
        parser.error("eval needs either --pred PRED_DIR --gt GT_DIR or --before PRED_DIR --after PRED_DIR")
    if change and args.before is not None and args.gt is not None:
        parser.error("eval: give --before or --gt as the reference of --after, not both")
    # Removal/addition rate: the reference regions are the human-labelled GT when --gt is given
    # (docs/spec.md §4: B = GT, cropped to the valid region), else the detections before fine-tuning.
    ref_flag, reference = ("--gt", args.gt) if args.gt is not None else ("--before", args.before)
    needed = [(ref_flag, reference), ("--after", args.after)] if change else [("--pred", args.pred), ("--gt", args.gt)]
    for name, d in needed:
        if d is None:
            parser.error(f"eval: {name} is missing")
    for name, d in needed:
        if not os.path.isdir(d):
            parser.error(f"eval: {name} {d}: not a directory")
    if change:
        s = metrics.evaluate_change_folders(reference, args.after, reference_is_gt=args.gt is not None,
                                            exclude=non_mask_dirs(reference) + non_mask_dirs(args.after))
        unmatched = [(ref_flag, s.unmatched_before), ("--after", s.unmatched_after)]
        head = s.summary()
        text = (f"removal rate {_fmt(s.removal_rate)} ({s.removed_regions} of {s.regions_before} regions)  "
                f"addition rate {_fmt(s.addition_rate)} ({s.images_with_addition} of {s.images} images)")
    else:
        s = metrics.evaluate_folders(args.pred, args.gt, p=args.p,
                                     exclude=non_mask_dirs(args.pred) + non_mask_dirs(args.gt))
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
