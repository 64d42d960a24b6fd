"""``desra-fast report``: a static HTML review of a run (``--run``) or of a fine-tune evaluation (``--eval``)."""
from __future__ import annotations

import os
import sys

from ._args import non_negative_int, positive_int

NAME = "report"
HELP = "a static HTML review of a `desra-fast run` (ranked gallery, curation) or of `evaluate-finetune`"
DESCRIPTION = ("Write a self-contained site (index.html + pictures, opens from file://, no network). "
               "--run RUN: summary, the TOP worst images ranked as `desra-fast select` ranks them, "
               "region zooms, GAN-SR/MSE-SR sliders, accept/reject with train.txt/val.txt downloads, "
               "the full ranking table (default OUT: RUN/report). --eval EVAL: the output of "
               "`desra-fast evaluate-finetune`, before/after/MSE per image and the figures of "
               "EVAL/report.json (default OUT: EVAL/report). Rerunning replaces the site atomically. "
               "See docs/report.md.")


def add_arguments(parser) -> None:
    from ..jobs.select import SCORES

    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help="output folder of desra-fast run")
    src.add_argument("--eval", metavar="EVAL", help="output folder of desra-fast evaluate-finetune")
    parser.add_argument("-o", "--output", metavar="OUT", help="site folder (default RUN/report or EVAL/report)")
    parser.add_argument("--top", type=positive_int, default=200, help="--run: images in the gallery (default 200)")
    parser.add_argument("--by", choices=sorted(SCORES), default="fraction", help="--run: ranking, as select --by")
    parser.add_argument("--train", type=non_negative_int, default=50,
                        help="--run: default train count of the downloaded lists, as select --train (default 50)")


def run(args, parser) -> int:
    from ..report import ReportError, build_eval_report, build_run_report

    try:
        if args.run is not None:
            res = build_run_report(args.run, args.output, top=args.top, by=args.by, train=args.train, log=sys.stderr)
            print(f"desra-fast report: {res.images} image(s) in the run ({res.corrupt_lines} corrupt manifest "
                  f"line(s) skipped), {res.top} in the gallery ({res.missing} with missing files), "
                  f"{res.seconds:.1f} s", file=sys.stderr)
        else:
            res = build_eval_report(args.eval, args.output)
            print(f"desra-fast report: {res.images} evaluated image(s) ({res.errors} with errors, "
                  f"{res.missing} with missing files), {res.seconds:.1f} s", file=sys.stderr)
    except (ReportError, OSError) as exc:
        print(f"desra-fast report: error: {exc}", file=sys.stderr)
        return 1
    print(f"desra-fast report: open file://{os.path.abspath(res.index)}", file=sys.stderr)
    return 0
