"""Seam-free tiling: the error-versus-context curve, the seam measure and the time cost.

For each real LR image (the bundled samples/lr photos, or crops given with --crop) the untiled
output of the model is the reference; each (context, overlap) configuration upscales it in tiles
of ``--tile`` LR px (``SRModel.upscale(tile=T, tile_pad=C, overlap=O)``) and reports, in uint8
levels over all values of all images:

- ``within2``: the share of values within 2 levels of the untiled output; ``max``: the largest
  difference; ``mean``: the mean absolute difference;
- ``seam``: the mean |difference| between neighbouring output columns/rows that straddle a tile
  border, divided by the same mean over every other neighbouring pair (1.0 = borders do not
  stand out; the untiled output's own ratio at the same places is printed as ``seam_ref``);
- ``time``: seconds of the tiled call / seconds of the untiled call (median of per-round ratios,
  rounds interleaved, same process).

    python benchmarks/tiling.py curve --model realesrgan-x4plus --tile 64 \\
        --configs 10:0,16:0,16:16,24:16,32:16,48:16
    python benchmarks/tiling.py curve --model srmd-x4 --tile 64 --configs 4:0,8:0,12:0
    python benchmarks/tiling.py context --model realesrgan-x4plus --image rocket --contexts 4,8,16,24,32,40
    python benchmarks/tiling.py time --model realesrgan-x4plus --tile 64 --size 96 --rounds 3
    python benchmarks/tiling.py memory --model realesrgan-x4plus --size 96   # estimate vs peak RSS
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def real_lr(names=("rocket", "motorcycle")) -> dict:
    out = {}
    for n in names:
        img = cv2.imread(str(ROOT / "samples" / "lr" / f"{n}.png"), cv2.IMREAD_COLOR)
        out[n] = np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out


def tile_borders(n_lr: int, tile: int, pre_pad: int, scale: int) -> list[int]:
    """Output indices b such that the pair (b-1, b) straddles a tile border (padded LR grid)."""
    return [(k * tile - pre_pad) * scale for k in range(1, (n_lr + 2 * pre_pad) // tile + 1)
            if 0 < (k * tile - pre_pad) < n_lr]


def seam_ratio(out: np.ndarray, tile: int, pre_pad: int, scale: int) -> tuple[float, float]:
    """(sum over border pairs, count) and the same elsewhere -> ratio of the means, columns and rows."""
    o = out.astype(np.float64)
    num = den = 0.0
    nb = ne = 0
    for axis in (0, 1):
        d = np.abs(np.diff(o, axis=axis)).mean(axis=tuple(i for i in range(o.ndim) if i != axis))  # per pair
        b = [i - 1 for i in tile_borders(o.shape[axis] // scale, tile, pre_pad, scale)]
        mask = np.zeros(d.shape[0], bool)
        mask[b] = True
        num += d[mask].sum()
        nb += mask.sum()
        den += d[~mask].sum()
        ne += (~mask).sum()
    return (num / max(nb, 1)) / (den / max(ne, 1))


def stats(tiled: np.ndarray, whole: np.ndarray) -> dict:
    d = np.abs(tiled.astype(np.int32) - whole.astype(np.int32))
    return {"within2": float((d <= 2).mean()), "max": int(d.max()), "mean": float(d.mean())}


def machine() -> str:
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("Model name")), "?")
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    except OSError:
        model, isa = platform.processor(), []
    return f"{model}, {os.cpu_count()} CPUs, {'/'.join(isa)}, load avg {os.getloadavg()[0]:.2f}"


def curve(args) -> None:
    import torch

    from desra_fast.models import load_sr

    torch.set_num_threads(args.threads)
    model = load_sr(args.model, runtime="torch")   # tiling is the same whatever the runtime
    pre_pad, s = model.info["pre_pad"], model.scale
    imgs = real_lr(args.images.split(","))
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    print(f"# {args.model} tile {args.tile}, images {list(imgs)} {[i.shape[:2] for i in imgs.values()]}; "
          f"{machine()}")
    whole, t_whole = {}, {}
    for n, img in imgs.items():
        t0 = time.perf_counter()
        whole[n] = model.upscale(img)
        t_whole[n] = time.perf_counter() - t0
    rows = []
    for ctx, ov in configs:
        acc, seams, refs, ratios = [], [], [], []
        if args.rounds == 0:   # one tiled call per image, timed against the untiled call above
            for n, img in imgs.items():
                t0 = time.perf_counter()
                tiled = model.upscale(img, tile=args.tile, tile_pad=ctx, overlap=ov)
                ratios.append((time.perf_counter() - t0) / t_whole[n])
                acc.append((tiled, whole[n]))
                seams.append(seam_ratio(tiled, args.tile, pre_pad, s))
                refs.append(seam_ratio(whole[n], args.tile, pre_pad, s))
        for r in range(args.rounds):
            for n, img in imgs.items():
                order = [0, 1] if r % 2 == 0 else [1, 0]
                times = {}
                for k in order:
                    t0 = time.perf_counter()
                    o = model.upscale(img) if k == 0 else model.upscale(img, tile=args.tile, tile_pad=ctx, overlap=ov)
                    times[k] = time.perf_counter() - t0
                    if k == 1:
                        tiled = o
                ratios.append(times[1] / times[0])
                if r == 0:
                    acc.append((tiled, whole[n]))
                    seams.append(seam_ratio(tiled, args.tile, pre_pad, s))
                    refs.append(seam_ratio(whole[n], args.tile, pre_pad, s))
        d = np.concatenate([np.abs(a.astype(np.int32) - b).ravel() for a, b in acc])
        row = {"context": ctx, "overlap": ov, "within2": round(float((d <= 2).mean()), 5), "max": int(d.max()),
               "mean": round(float(d.mean()), 4), "seam": [round(x, 3) for x in seams],
               "seam_ref": [round(x, 3) for x in refs], "time_vs_untiled": round(statistics.median(ratios), 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)


def context(args) -> None:
    """Error versus context of one cut: a ``--core`` px square in the middle of the image run with
    c px of context on every side (what a tile with context c gives its corner pixels), its output
    compared with the untiled output. Cheap: one window per context."""
    import torch

    from desra_fast.models import load_sr

    torch.set_num_threads(args.threads)
    model = load_sr(args.model, runtime="torch")
    s, pre = model.scale, model.info["pre_pad"]
    img = real_lr([args.image])[args.image]
    whole = model.upscale(img)
    h, w = img.shape[:2]
    cy, cx = (h - args.core) // 2, (w - args.core) // 2
    ref = whole[cy * s:(cy + args.core) * s, cx * s:(cx + args.core) * s].astype(np.int32)
    print(f"# {args.model}, {args.image} {h}x{w}, core {args.core} px at ({cy}, {cx}); {machine()}")
    for c in (int(v) for v in args.contexts.split(",")):
        if cy - c < 0 or cx - c < 0 or cy + args.core + c > h or cx + args.core + c > w:
            print(json.dumps({"context": c, "skipped": "the window would leave the image"}))
            continue
        win = img[cy - c:cy + args.core + c, cx - c:cx + args.core + c]
        out = model.upscale(win, pre_pad=0)[c * s:(c + args.core) * s, c * s:(c + args.core) * s]
        d = np.abs(out.astype(np.int32) - ref)
        print(json.dumps({"context": c, "within2": round(float((d <= 2).mean()), 5),
                          "within1": round(float((d <= 1).mean()), 5), "max": int(d.max()),
                          "mean": round(float(d.mean()), 4)}), flush=True)


def timing(args) -> None:
    """Time cost of the default context: untiled vs tiled with the defaults vs Real-ESRGAN's
    tiling (10 px, no blend), same process, rounds interleaved (order rotating), median of the
    per-round ratios to the untiled call."""
    import torch

    from desra_fast.models import load_sr

    torch.set_num_threads(args.threads)
    model = load_sr(args.model, runtime="torch")
    img = real_lr([args.image])[args.image][:args.size, :args.size]
    paths = {"untiled": {}, "default": {"tile": args.tile}, "tile_pad=10": {"tile": args.tile, "tile_pad": 10}}
    model.upscale(img[:16, :16])
    times = {k: [] for k in paths}
    for r in range(args.rounds):
        names = list(paths)
        names = names[r % len(names):] + names[:r % len(names)]
        for k in names:
            t0 = time.perf_counter()
            model.upscale(img, **paths[k])
            times[k].append(time.perf_counter() - t0)
    print(f"# {args.model}, LR {img.shape[0]}x{img.shape[1]} ({args.image}), tile {args.tile}, {args.rounds} rounds, "
          f"{args.threads} threads; {machine()}")
    for k in paths:
        ratios = [t / u for t, u in zip(times[k], times["untiled"])]
        print(json.dumps({"path": k, "median_s": round(statistics.median(times[k]), 3),
                          "vs_untiled": round(statistics.median(ratios), 3)}))


def memory(args) -> None:
    """Peak RSS of one untiled call in a fresh process vs the estimate auto_tile uses."""
    code = (
        "import resource, sys, numpy as np, torch\n"
        f"torch.set_num_threads({args.threads})\n"
        "from desra_fast.models import load_sr\n"
        "from desra_fast.models import tiling\n"
        f"m = load_sr({args.model!r}, runtime=\"torch\"); img = np.zeros(({args.size}, {args.size}, 3), np.uint8)\n"
        "m.upscale(np.zeros((8, 8, 3), np.uint8))\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "m.upscale(img)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "bpp = tiling.model_bytes_per_pixel(m.module, m.info, 'cpu')\n"
        "px = (img.shape[0] + 2 * m.info['pre_pad']) ** 2\n"
        "print(f'peak RSS growth {(peak - base) / 2**20:.0f} MiB, estimate {bpp * px / 2**20:.0f} MiB '\n"
        "      f'({bpp:.0f} B per LR px, {px} padded LR px)')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curve")
    c.add_argument("--model", default="realesrgan-x4plus")
    c.add_argument("--tile", type=int, default=64)
    c.add_argument("--configs", default="10:0,16:0,16:16,24:16,32:16,48:16", help="context:overlap,...")
    c.add_argument("--rounds", type=int, default=1,
                   help="timing rounds (untiled and tiled interleaved); 0: one tiled call per configuration, "
                   "timed against one untiled call (for a loaded machine: the error figures are the same)")
    c.add_argument("--images", default="rocket,motorcycle", help="samples/lr names")
    c.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("memory")
    m.add_argument("--model", default="realesrgan-x4plus")
    m.add_argument("--size", type=int, default=96)
    m.add_argument("--threads", type=int, default=2)
    x = sub.add_parser("context")
    x.add_argument("--model", default="realesrgan-x4plus")
    x.add_argument("--image", default="rocket")
    x.add_argument("--core", type=int, default=16)
    x.add_argument("--contexts", default="4,8,16,24,32,40")
    x.add_argument("--threads", type=int, default=1)
    t = sub.add_parser("time")
    t.add_argument("--model", default="realesrgan-x4plus")
    t.add_argument("--image", default="rocket")
    t.add_argument("--size", type=int, default=96)
    t.add_argument("--tile", type=int, default=64)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    {"curve": curve, "memory": memory, "time": timing, "context": context}[args.cmd](args)


if __name__ == "__main__":
    main()
