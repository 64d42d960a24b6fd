"""``desra-fast select``: rank the images of a ``desra-fast run`` and write train/val lists."""
from __future__ import annotations

import os
import sys

from ..jobs.select import SCORES, rank, split_lists
from ._args import non_negative_int, positive_int

NAME = "select"
HELP = "rank the images of a `desra-fast run` by artifacts and write train.txt / val.txt"
DESCRIPTION = ("Rank the images of OUT/manifest.jsonl that have at least one detected region, keep the "
               "TOP worst, and split them into LISTS/train.txt (TRAIN images spread evenly over the "
               "ranking, so train and val see the same range of severity) and LISTS/val.txt (the rest). "
               "Lines are LR relative paths, as `desra-fast run --only` reads them; LISTS/ranking.tsv "
               "holds rank, score, regions, fraction and path of the kept images.")


def add_arguments(parser) -> None:
    parser.add_argument("--run", required=True, metavar="OUT", help="output folder of desra-fast run")
    parser.add_argument("--top", type=positive_int, default=200, help="images to keep (default 200)")
    parser.add_argument("--train", type=non_negative_int, default=50, help="of which for fine-tuning (default 50)")
    parser.add_argument("--by", choices=sorted(SCORES), default="fraction",
                        help="fraction: share of the image marked (default); area: pixels of the largest "
                        "region; regions: number of regions")
    parser.add_argument("-o", "--output", required=True, metavar="LISTS", help="folder for train.txt and val.txt")


def run(args, parser) -> int:
    from ..jobs import MANIFEST, read_manifest
    from ..utils import write_bytes_atomic, write_list

    path = os.path.join(args.run, MANIFEST)
    if not os.path.isfile(path):
        print(f"desra-fast select: error: {path}: no manifest (is --run the OUT folder of desra-fast run?)",
              file=sys.stderr)
        return 1
    if args.train > args.top:
        parser.error(f"--train {args.train} is more than --top {args.top}")
    records = list(read_manifest(path).values())
    ranked = rank(records, args.by)
    top = ranked[:args.top]
    train, val = split_lists([r["lr"] for r in top], args.train, args.top)
    score = SCORES[args.by]
    table = "rank\tscore\tregions\tartifact_fraction\tlr\n" + "".join(
        f"{i + 1}\t{score(r)}\t{r.get('regions')}\t{r.get('artifact_fraction')}\t{r['lr']}\n" for i, r in enumerate(top))
    write_list(os.path.join(args.output, "train.txt"), train)
    write_list(os.path.join(args.output, "val.txt"), val)
    write_bytes_atomic(os.path.join(args.output, "ranking.tsv"), table.encode("utf-8"))
    ok = sum(1 for r in records if r.get("error") is None)
    print(f"desra-fast select: {ok} image(s) in the run, {len(ranked)} with detected regions; kept the "
          f"{len(top)} worst by {args.by}: {len(train)} in {os.path.join(args.output, 'train.txt')}, "
          f"{len(val)} in {os.path.join(args.output, 'val.txt')}", file=sys.stderr)
    if len(top) < args.top:
        print(f"desra-fast select: warning: only {len(top)} image(s) have detected regions (asked for {args.top})",
              file=sys.stderr)
    return 0
