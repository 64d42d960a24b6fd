"""``desra-fast evaluate-finetune``: detections before and after fine-tuning on validation images."""
from __future__ import annotations

import json
import math
import os
import sys

from ._args import non_negative_int, finite_float

NAME = "evaluate-finetune"
HELP = "compare the GAN-SR model before and after fine-tuning: artifact area, removal / addition rate, pictures"
DESCRIPTION = (
    "Runs GAN-SR with the model before (--before) and after (--after) fine-tuning and the MSE-SR "
    "model on the LR validation images, detects artifacts in both GAN-SR outputs, and reports the "
    "detected area, removal rate (share of 'before' regions with no detection after) and addition "
    "rate (share of images whose 'after' detection covers area outside 'before'); with --gt, IoU "
    "against the human masks before and after and removal/addition against them (SPEC.md §4). Also "
    "the PSNR of each GAN-SR output against the MSE-SR outside the detected regions (a fine-tune "
    "that collapsed toward the MSE model would push it up everywhere). Writes OUT/before/ and "
    "OUT/after/ masks, OUT/compare/<image>.jpg (before | after | MSE-SR, regions outlined) and "
    "OUT/report.json.")


def add_arguments(parser) -> None:
    parser.add_argument("--before", required=True, metavar="G", help="GAN-SR model before fine-tuning")
    parser.add_argument("--after", required=True, metavar="G", help="fine-tuned model (OUT/net_g_final.pth)")
    parser.add_argument("--lr", required=True, metavar="VAL_LR", help="validation LR images")
    parser.add_argument("--mse-model", required=True, metavar="M", help="MSE-SR model (e.g. srmd-x4)")
    parser.add_argument("--gt", metavar="GT_MASKS", help="human-labelled masks (SR size, 0/255)")
    parser.add_argument("--list", metavar="TXT", help="only the images of this list (val.txt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="masks, pictures and report.json")
    parser.add_argument("--threshold", type=finite_float, default=0.7)
    parser.add_argument("--area-threshold", type=non_negative_int, default=4000)
    parser.add_argument("--window", choices=("gaussian", "box"), default="gaussian")
    parser.add_argument("--tile", type=non_negative_int, default=0, help="SR tile size in LR px (0: whole image)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def psnr_outside(a, b, outside) -> float:
    """PSNR (dB, 8-bit peak) of two uint8 images over the pixels where ``outside`` is True."""
    import numpy as np

    if not outside.any():
        return math.nan
    d = a.astype(np.float64)[outside] - b.astype(np.float64)[outside]
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def titled(panels, titles):
    """Panels side by side under a white title row each, 8-px white gaps."""
    import cv2
    import numpy as np

    h = max(p.shape[0] for p in panels)
    bar = max(18, min(40, h // 12))
    cols = []
    for p, t in zip(panels, titles):
        head = np.full((bar, p.shape[1], 3), 255, np.uint8)
        scale = bar / 36
        cv2.putText(head, t, (6, int(bar * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    max(1, round(2 * scale)), cv2.LINE_AA)
        cols.append(np.concatenate([head, p], axis=0))
    gap = np.full((h + bar, 8, 3), 255, np.uint8)
    out = [cols[0]]
    for c in cols[1:]:
        out += [gap, c]
    return np.concatenate(out, axis=1)


def _fmt(x, spec=".4f"):
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def run(args, parser) -> int:
    import numpy as np
    from tqdm import tqdm

    from .. import metrics
    from ..api import detect
    from ..imageio import list_images, read_mask, read_rgb, rgb_to_jpeg_bytes, write_bytes_atomic, write_mask_png
    from ..models import load_sr
    from ..overlay import GAP, make_overlay
    from ..train.data import read_list

    if not os.path.isdir(args.lr):
        parser.error(f"evaluate-finetune: --lr {args.lr}: not a directory")
    if args.gt and not os.path.isdir(args.gt):
        parser.error(f"evaluate-finetune: --gt {args.gt}: not a directory")
    try:
        found = list_images(args.lr, exclude=[args.out])
        keys = sorted(found)
        if args.list:
            wanted = set(read_list(args.list))
            keys = [k for k in keys if k in wanted]
        models = {name: load_sr(src, device=args.device)
                  for name, src in (("before", args.before), ("after", args.after), ("mse", args.mse_model))}
    except (ValueError, FileNotFoundError) as exc:
        print(f"desra-fast evaluate-finetune: {exc}", file=sys.stderr)
        return 1
    if not keys:
        print(f"desra-fast evaluate-finetune: no images in {args.lr}", file=sys.stderr)
        return 1
    if len({m.scale for m in models.values()}) != 1:
        print("desra-fast evaluate-finetune: the models have different scales: "
              + ", ".join(f"{k} x{m.scale}" for k, m in models.items()), file=sys.stderr)
        return 1
    dopts = dict(threshold=args.threshold, area_threshold=args.area_threshold, window=args.window)
    per_image, errors, befores, afters = {}, {}, [], []
    for key in tqdm(keys, desc="evaluate-finetune", unit="img"):
        rel = found[key][0]
        try:
            lr = read_rgb(os.path.join(args.lr, rel))
            sr = {k: m.upscale(lr, tile=args.tile) for k, m in models.items()}
            mb = detect(sr["before"], sr["mse"], **dopts)
            ma = detect(sr["after"], sr["mse"], **dopts)
        except (ValueError, RuntimeError) as exc:
            errors[key] = str(exc)
            continue
        write_mask_png(os.path.join(args.out, "before", key + ".png"), mb)
        write_mask_png(os.path.join(args.out, "after", key + ".png"), ma)
        w = mb.shape[1]
        left = make_overlay(sr["before"], sr["mse"], mb)
        mid = make_overlay(sr["after"], sr["mse"], ma)
        pic = titled([left[:, :w], mid[:, :w], left[:, w + GAP:]],
                     ["before fine-tune", "after fine-tune", "MSE-SR (before's regions)"])
        write_bytes_atomic(os.path.join(args.out, "compare", key + ".jpg"), rgb_to_jpeg_bytes(pic, 90))
        outside = ~(mb | ma)
        per_image[key] = {
            "area_before": float(mb.mean()), "area_after": float(ma.mean()),
            "psnr_gan_vs_mse_outside_before": psnr_outside(sr["before"], sr["mse"], outside),
            "psnr_gan_vs_mse_outside_after": psnr_outside(sr["after"], sr["mse"], outside),
            "psnr_after_vs_before_outside": psnr_outside(sr["after"], sr["before"], outside),
        }
        befores.append(mb)
        afters.append(ma)
    done = list(per_image)
    change = metrics.change_scores(befores, afters, names=done) if done else None

    def mean(field):
        vals = [v[field] for v in per_image.values() if math.isfinite(v[field])]
        return float(np.mean(vals)) if vals else math.nan

    report = {
        "images": len(done),
        "area_before": mean("area_before"), "area_after": mean("area_after"),
        "removal_rate": change.removal_rate if change else math.nan,
        "regions_before": change.regions_before if change else 0,
        "removed_regions": change.removed_regions if change else 0,
        "addition_rate": change.addition_rate if change else math.nan,
        "psnr_gan_vs_mse_outside_before": mean("psnr_gan_vs_mse_outside_before"),
        "psnr_gan_vs_mse_outside_after": mean("psnr_gan_vs_mse_outside_after"),
        "psnr_after_vs_before_outside": mean("psnr_after_vs_before_outside"),
        "per_image": per_image, "errors": errors,
    }
    if args.gt and done:
        s_b = metrics.evaluate_folders(os.path.join(args.out, "before"), args.gt)
        s_a = metrics.evaluate_folders(os.path.join(args.out, "after"), args.gt)
        c_gt = metrics.evaluate_change_folders(args.gt, os.path.join(args.out, "after"), reference_is_gt=True)
        report.update(iou_before=s_b.iou, iou_after=s_a.iou, removal_rate_vs_gt=c_gt.removal_rate,
                      addition_rate_vs_gt=c_gt.addition_rate, gt_images=s_a.images)
    clean = json.loads(json.dumps(report, default=str).replace("NaN", "null").replace("Infinity", "null"))
    write_bytes_atomic(os.path.join(args.out, "report.json"), (json.dumps(clean, indent=1) + "\n").encode())
    if args.json:
        print(json.dumps(clean))
    else:
        print(f"images {len(done)}  detected area {100 * report['area_before']:.2f}% -> "
              f"{100 * report['area_after']:.2f}%  removal rate {_fmt(report['removal_rate'])} "
              f"({report['removed_regions']} of {report['regions_before']} regions)  addition rate "
              f"{_fmt(report['addition_rate'])}")
        print(f"PSNR GAN-SR vs MSE-SR outside the regions: before {_fmt(report['psnr_gan_vs_mse_outside_before'], '.2f')} dB, "
              f"after {_fmt(report['psnr_gan_vs_mse_outside_after'], '.2f')} dB; after vs before outside: "
              f"{_fmt(report['psnr_after_vs_before_outside'], '.2f')} dB")
        if args.gt and done:
            print(f"against GT: IoU {_fmt(report['iou_before'])} -> {_fmt(report['iou_after'])}  removal rate "
                  f"{_fmt(report['removal_rate_vs_gt'])}  addition rate {_fmt(report['addition_rate_vs_gt'])}")
        print(f"pictures: {os.path.join(args.out, 'compare')}/")
    for key, err in sorted(errors.items()):
        print(f"desra-fast evaluate-finetune: {key}: {err}", file=sys.stderr)
    return 1 if errors or not done else 0
