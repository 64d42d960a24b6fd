"""``desra-fast calibrate``: per-class semantic weights W_k = 1/A_k from a calibration set."""
from __future__ import annotations

import sys

from ._args import non_negative_int, positive_int

NAME = "calibrate"
HELP = "measure the per-class weights W_k = 1/A_k (paper Eq. 8) on GAN-SR/MSE-SR pairs -> weights TSV"
DESCRIPTION = ("A_k = the PERCENTILE-th percentile (85) of the D map over all pixels of ADE20K class k in "
               "the pairs of GAN_DIR/MSE_DIR (labels from --seg label maps or a --seg-model SegFormer "
               "applied to GAN-SR); W_k = 1/A_k, rounded to the authors' 20 bins by default. Classes with "
               "fewer than --min-pixels pixels keep the authors' weight. Writes a TSV in the shipped table's "
               "format (label, name, bin, weight) for `detect(weights=PATH)`.")


def add_arguments(parser) -> None:
    parser.add_argument("--gan", required=True, metavar="GAN_DIR", help="GAN-SR images")
    parser.add_argument("--mse", required=True, metavar="MSE_DIR", help="MSE-SR images at the same relative paths")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--seg", metavar="SEG_DIR", help="ADE20K label maps (PNG, values 0..149) at the same relative paths")
    src.add_argument("--seg-model", metavar="PATH", help="SegFormer checkpoint (mmseg .pth / Hugging Face) to segment with")
    parser.add_argument("-o", "--output", required=True, metavar="WEIGHTS_TSV", help="output weights table")
    parser.add_argument("--percentile", type=float, default=85.0, help="percentile of D per class (default 85)")
    parser.add_argument("--bins", type=non_negative_int, default=20,
                        help="round A_k to this many bins as the authors did (default 20; 0: no rounding)")
    parser.add_argument("--exact", action="store_true",
                        help="two passes over the data: numpy.percentile's exact value (default one pass, "
                        "within 1.53e-5)")
    parser.add_argument("--min-pixels", type=positive_int, default=1000,
                        help="classes with fewer pixels keep the authors' weight (default 1000)")
    parser.add_argument("--segment-source", choices=("gan", "mse"), default="gan",
                        help="image a --seg-model segments (default gan, as the released script)")
    parser.add_argument("--window", choices=("gaussian", "box"), default="gaussian", help="D-map window")
    parser.add_argument("--device", default="cpu", help="torch device of --seg-model (default cpu)")
    parser.add_argument("--scale", type=positive_int, nargs=2, default=(2048, 640), metavar=("LONG", "SHORT"),
                        help="--seg-model's mmseg keep-ratio Resize scale (default 2048 640)")
    parser.add_argument("--trust", action="store_true", help="allow pickled objects in the --seg-model checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args, parser) -> int:
    import os

    from tqdm import tqdm

    from ..calibrate import calibrate_weights
    from ..jobs.detect import find_pairs, read_pair
    from ..weights import class_names

    for flag, d in (("--gan", args.gan), ("--mse", args.mse), ("--seg", args.seg)):
        if d is not None and not os.path.isdir(d):
            print(f"desra-fast calibrate: error: {flag} {d}: not a directory", file=sys.stderr)
            return 1
    if not 0 <= args.percentile <= 100:
        parser.error("--percentile must be in [0, 100]")
    pairs = find_pairs(args.gan, args.mse, args.seg)
    bad = [p for p in pairs if p.error]
    for p in bad:
        print(f"desra-fast calibrate: skipped {p.key}: {p.error}", file=sys.stderr)
    good = [p for p in pairs if not p.error]
    if not good:
        print("desra-fast calibrate: error: no usable pairs", file=sys.stderr)
        return 1
    seg = None
    if args.seg_model:
        from ..models import CheckpointError, load_segmenter

        try:
            seg = load_segmenter(args.seg_model, device=args.device, scale=tuple(args.scale), trust=args.trust)
        except (CheckpointError, ValueError) as exc:
            print(f"desra-fast calibrate: error: {exc}", file=sys.stderr)
            return 1
    read = []  # (gan, mse, labels) per pass, one pair at a time

    def read_all():
        for p in good:
            g, m, s = read_pair(os.path.join(args.gan, p.gan), os.path.join(args.mse, p.mse),
                                os.path.join(args.seg, p.seg) if args.seg else None)
            read.append(s)
            yield g, m

    def labels():  # the label map read with the pair just yielded
        while read:
            yield read.pop(0)

    show = not args.no_progress and sys.stderr.isatty()
    bar = tqdm(total=len(good) * (2 if args.exact else 1), unit="img", disable=not show, file=sys.stderr)
    try:
        cal = calibrate_weights(read_all, seg if seg is not None else labels, percentile=args.percentile,
                                bins=args.bins or None, exact=args.exact, min_pixels=args.min_pixels,
                                segment_source=args.segment_source, window=args.window,
                                progress=lambda n: bar.update(1))
    except ValueError as exc:
        print(f"desra-fast calibrate: error: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    cal.to_tsv(args.output)
    names = class_names()
    done = [int(k) for k in cal.calibrated.nonzero()[0]]
    print(f"desra-fast calibrate: {cal.images} image(s), {len(done)} class(es) calibrated "
          f"({'exact' if cal.exact else 'histogram'} {cal.percentile:g}th percentile), others keep the "
          f"authors' weight -> {args.output}", file=sys.stderr)
    for k in sorted(done, key=lambda k: -cal.pixels[k])[:10]:
        print(f"  {k:3d} {names[k]:<20} pixels {cal.pixels[k]:>10d}  A {cal.a[k]:.4f}  W {cal.weights[k]:.4f}",
              file=sys.stderr)
    return 1 if bad else 0

