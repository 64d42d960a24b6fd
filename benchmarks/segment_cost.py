"""Segmentation cost per image on CPU: desra_fast's Segmenter vs mmsegmentation's inference_model.

Same random-weight SegFormer (mmseg layout, B0 and B5, mmseg head width 256), same real image
resized to a 640-pixel short side (the authors' test Resize), rounds interleaved; prints the
median seconds of each and the median per-round ratio, and checks the labels agree away from ties.

    python benchmarks/segment_cost.py [--variants b0 b5] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import segformer_refs as refs  # noqa: E402
from images import real_pair  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["b0", "b5"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import cv2

    refs.import_mmseg()  # mmcv-lite + stub mmcv.ops, before anything imports mmseg
    from mmseg.apis import inference_model

    from desra_fast.models import load_segmenter

    gan = real_pair("rocket")[0]  # 424x640
    img = cv2.resize(gan, (853, 640), interpolation=cv2.INTER_CUBIC)  # 640-short-side input (no resize)
    print(f"input {img.shape[1]}x{img.shape[0]}, torch threads {torch.get_num_threads()}")
    print("| model | mmseg inference_model | desra_fast segment | ratio (median per round) | labels != (away from ties) |")
    print("|---|---|---|---|---|")
    for v in args.variants:
        model, cfg = refs.mmseg_model(v, seed=0)
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "m.pth")
            refs.save_mmseg_checkpoint(model, cfg, p)
            seg = load_segmenter(p)
        t_mm, t_us, ratios = [], [], []
        for r in range(args.rounds + 1):  # round 0 warms up
            t0 = time.perf_counter()
            res = inference_model(model, np.ascontiguousarray(img[:, :, ::-1]))
            t1 = time.perf_counter()
            ours = seg.segment(img)
            t2 = time.perf_counter()
            if r:
                t_mm.append(t1 - t0)
                t_us.append(t2 - t1)
                ratios.append((t1 - t0) / (t2 - t1))
        top = res.seg_logits.data.topk(2, 0).values
        away = (top[0] - top[1]).numpy() > 1e-4
        diff = int(((res.pred_sem_seg.data[0].numpy() != ours) & away).sum())
        print(f"| MiT-{v.upper()} (head 256) | {statistics.median(t_mm):.2f} s | {statistics.median(t_us):.2f} s | "
              f"{statistics.median(ratios):.2f}x | {diff} |")


if __name__ == "__main__":
    main()
