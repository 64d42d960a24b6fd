"""How close load_sr's converted ncnn models are to the ncnn runtime, on real LR crops.

For Real-ESRGAN x4plus (reflect-101 pre-pad 10) and SRMD x4 (noise 10, replicate pre-pad 12),
on crops of both LR samples in ``samples/lr``: max |float diff| in [0, 1] and the share of uint8
values equal / within 1 level of the ncnn runtime's (CPU, plain fp32).

    python benchmarks/sr_accuracy.py              # 48 px crops
    python benchmarks/sr_accuracy.py --size 96
    python benchmarks/sr_accuracy.py --tiling     # x4plus tiled (64/10) vs untiled on a 64 px crop
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None) -> int:
    import torch

    from desra_fast.models import load_sr
    from sr_fixtures import lr_crop, ncnn_net, ncnn_realesrgan, ncnn_srmd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiling", action="store_true",
                    help="instead: Real-ESRGAN x4plus tiled (--tile/--tile-pad) vs untiled on a 64 px crop")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--tile-pad", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tiling:
        m = load_sr("realesrgan-x4plus")
        lr = lr_crop("motorcycle", 64, 30, 40)
        whole, tiled = m.upscale(lr), m.upscale(lr, tile=args.tile, tile_pad=args.tile_pad)
        again = m.upscale(lr, tile=args.tile, tile_pad=args.tile_pad)
        d = np.abs(whole.astype(np.int32) - tiled)
        f = np.abs(m.upscale(lr / 255.0) - m.upscale(lr / 255.0, tile=args.tile, tile_pad=args.tile_pad))
        print(f"tile={args.tile} tile_pad={args.tile_pad}: max uint8 diff {d.max()}, differing {100 * (d > 0).mean():.1f} %, "
              f"> 1 level {100 * (d > 1).mean():.1f} %, mean |diff| {f.mean():.4f} in [0,1]; "
              f"run to run identical: {np.array_equal(tiled, again)}")
        return 0
    print("| model | image | max abs diff in [0,1] | uint8 equal | within 1 level |")
    print("|---|---|---|---|---|")
    for name in ("realesrgan-x4plus", "srmd-x4"):
        m = load_sr(name)
        net = ncnn_net(m.info["source"], threads=args.threads)
        for img in ("motorcycle", "rocket"):
            lr = lr_crop(img, args.size, 20, 20)
            if m.info["arch"] == "SRMD":
                ref_f, ref8 = ncnn_srmd(net, lr, m.scale, noise_level=m.info["noise_level"])
            else:
                ref_f, ref8 = ncnn_realesrgan(net, lr)
            ours_f = m.upscale(lr.astype(np.float32) / 255.0)
            ours8 = m.upscale(lr)
            d = np.abs(ours8.astype(np.int32) - ref8)
            print(f"| {name} | {img} {args.size}x{args.size} | {np.abs(ours_f - np.clip(ref_f, 0, 1)).max():.2e} | "
                  f"{100 * (d == 0).mean():.3f} % | {100 * (d <= 1).mean():.3f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
