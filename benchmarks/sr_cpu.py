"""Real-ESRGAN x4plus on CPU: the ncnn runtime (what users run today) vs our torch paths.

One process, same real LR input (skimage's astronaut photo, INTER_AREA-resized to SIZE x SIZE),
end-to-end calls (uint8 RGB in -> uint8 RGB out at x4, with the Real-ESRGAN conventions: 10-px
reflect-101 pre-pad, crop, floor(v*255+0.5)), interleaved round by round (the order rotates each
round), one untimed warm-up call per path (32 px LR). Paths:

- ncnn: the ``ncnn`` pip package, CPU, plain fp32 (Vulkan, fp16/bf16 storage and arithmetic off);
- eager: ``load_sr("realesrgan-x4plus").upscale(img)``, torch fp32 NCHW;
- channels_last: ``load_sr(..., channels_last=True).upscale(img)`` (oneDNN NHWC convolutions);
- bf16: ``load_sr(..., channels_last=True).upscale(img, precision="bf16")``, only when ``lscpu``
  shows avx512_bf16 or amx_bf16 (bf16 weights and activations; NaN/inf tiles would be redone in fp32);
- compile (``--compile``): ``torch.compile`` of the channels-last module (minutes of compilation).

Reported: seconds per output megapixel (median over rounds) and the median per-round ratio
ncnn time / path time (> 1: faster than ncnn), plus each path's max |uint8 diff| against ncnn.

    python benchmarks/sr_cpu.py                       # 128 and 256 px LR, 3 rounds, 2 threads
    python benchmarks/sr_cpu.py --sizes 128 --rounds 5 --threads 4
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def cpu_has_bf16() -> bool:
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def lr_image(size: int) -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def build_paths(threads: int, use_compile: bool):
    import torch

    from desra_fast.models import load_sr
    from desra_fast.models.zoo import packaged_model
    from sr_fixtures import ncnn_net, ncnn_realesrgan

    torch.set_num_threads(threads)
    param = packaged_model("realesrgan-x4plus")
    net = ncnn_net(param, threads=threads)
    eager = load_sr(param, runtime="torch")          # the torch paths (auto would pick OpenVINO)
    cl = load_sr(param, channels_last=True, runtime="torch")
    paths = {
        "ncnn": lambda img: ncnn_realesrgan(net, img)[1],
        "eager": lambda img: eager.upscale(img),
        "channels_last": lambda img: cl.upscale(img),
    }
    if cpu_has_bf16():
        paths["bf16"] = lambda img: cl.upscale(img, precision="bf16")
    if use_compile:
        from desra_fast.models import SRModel

        comp = SRModel(torch.compile(cl.module, dynamic=False), cl.info, channels_last=True)
        paths["compile"] = lambda img: comp.upscale(img)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = ap.parse_args(argv)
    paths = build_paths(args.threads, args.compile)
    names = list(paths)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# CPU: {os.cpu_count()} cores visible, {args.threads} threads, load average {load:.1f} at start, "
          f"bf16 {'yes' if 'bf16' in paths else 'no'}")
    warm = lr_image(32)
    for n in names:                                           # untimed warm-up of every path
        paths[n](warm)
    rows = []
    for size in args.sizes:
        img = lr_image(size)
        outs = {}
        times = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                t = time.perf_counter()
                outs[n] = paths[n](img)
                times[n].append(time.perf_counter() - t)
            print(f"  {size}px round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)
        mpx = (4 * size) ** 2 / 1e6
        for n in names:
            ratio = statistics.median(a / b for a, b in zip(times["ncnn"], times[n]))
            diff = int(np.abs(outs[n].astype(np.int32) - outs["ncnn"]).max())
            within1 = float((np.abs(outs[n].astype(np.int32) - outs["ncnn"]) <= 1).mean())
            rows.append((size, n, statistics.median(times[n]) / mpx, ratio, diff, within1))
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n| LR size | path | s / output Mpx (median) | speed vs ncnn (median per-round ratio) | max uint8 diff vs ncnn | within 1 level |")
    print("|---|---|---|---|---|---|")
    for size, n, spm, ratio, diff, w1 in rows:
        print(f"| {size}x{size} | {n} | {spm:.2f} | {ratio:.2f}x | {diff} | {100 * w1:.3f} % |")
    print(f"\n# load average {load_end:.1f} at the end; rounds: {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
