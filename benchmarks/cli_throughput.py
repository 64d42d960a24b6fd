"""Does ``desra-fast detect`` overlap decoding, detection and writing?

Makes N small GAN/MSE PNG pairs in nested class folders and prints three throughputs:

  (a) desra_fast.detect in a loop on pre-decoded arrays (one pair per call),
  (b) reading both images and writing one mask (atomic, fsync'ed, as the CLI does; --no-fsync
      for both (b) and (c) without fsync) in a loop,
  (c) the CLI: ``desra-fast detect --workers 2`` over the folders, wall clock of the whole
      command including interpreter start-up,

and the ratio (c) / min((a), (b)). The target is >= 0.8: the pipeline must run about as fast as
its slowest stage alone, which it can only do if the stages overlap.

    python benchmarks/cli_throughput.py                # 1000 pairs of 96x96
    python benchmarks/cli_throughput.py --pairs 200 --size 256
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def make_pairs(root: Path, n: int, size: int, seed: int = 0) -> list:
    """n (GAN, MSE) uint8 pairs: blurred noise for MSE, plus textured patches for GAN; written as
    PNG under root/{gan,mse}/cNN/xxxxx.png. Returns the keys."""
    rng = np.random.default_rng(seed)
    keys = []
    for i in range(n):
        base = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)), (0, 0), 3.0)
        mse = np.clip(base, 0, 255)
        gan = mse.copy()
        for _ in range(3):
            s = int(rng.integers(size // 8, size // 3))
            y, x = (int(v) for v in rng.integers(0, size - s, 2))
            gan[y:y + s, x:x + s] += rng.normal(0, 25, (s, s, 3))
        key = f"c{i % 10:02d}/{i:05d}"
        for kind, img in (("gan", gan), ("mse", mse)):
            p = root / kind / (key + ".png")
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), np.clip(np.round(img), 0, 255).astype(np.uint8)[:, :, ::-1])
        keys.append(key)
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--area-threshold", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-fsync", action="store_true", help="(b) and (c) without per-file fsync")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    import desra_fast
    from desra_fast import imageio

    tmp = Path(tempfile.mkdtemp(prefix="desra_cli_bench_"))
    try:
        keys = make_pairs(tmp, args.pairs, args.size)
        gan_dir, mse_dir = tmp / "gan", tmp / "mse"

        # (a) detect loop on pre-decoded arrays
        arrays = [(imageio.read_rgb(gan_dir / (k + ".png")), imageio.read_rgb(mse_dir / (k + ".png"))) for k in keys]
        desra_fast.detect(*arrays[0], area_threshold=args.area_threshold)  # warm-up
        t0 = time.perf_counter()
        masks = [desra_fast.detect(g, m, area_threshold=args.area_threshold) for g, m in arrays]
        a = len(keys) / (time.perf_counter() - t0)
        frac = float(np.mean([m.mean() for m in masks]))

        # (b) read both images + write one mask, in a loop
        out_b = tmp / "loop_out"
        t0 = time.perf_counter()
        for k, mask in zip(keys, masks):
            imageio.read_rgb(gan_dir / (k + ".png"))
            imageio.read_rgb(mse_dir / (k + ".png"))
            imageio.write_mask_png(out_b / (k + ".png"), mask, fsync=not args.no_fsync)
        b = len(keys) / (time.perf_counter() - t0)

        # (c) the CLI, whole command
        out_c = tmp / "cli_out"
        exe = shutil.which("desra-fast")
        cmd = ([exe] if exe else [sys.executable, "-m", "desra_fast"]) + [
            "detect", "--gan", str(gan_dir), "--mse", str(mse_dir), "--out", str(out_c),
            "--area-threshold", str(args.area_threshold), "--workers", str(args.workers), "--no-progress"]
        if args.no_fsync:
            cmd.append("--no-fsync")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        c = len(keys) / (time.perf_counter() - t0)
        if proc.returncode != 0:
            sys.exit(f"CLI failed ({proc.returncode}):\n{proc.stderr}")
        same = all(np.array_equal(cv2.imread(str(out_c / (k + ".png")), cv2.IMREAD_UNCHANGED) == 255, m)
                   for k, m in zip(keys, masks))

        print(f"{len(keys)} pairs of {args.size}x{args.size}, mean artifact fraction {frac:.3f}, "
              f"{os.cpu_count()} cores, --workers {args.workers}, fsync {'off' if args.no_fsync else 'on'}")
        print(f"(a) detect loop on decoded arrays   {a:8.1f} images/s")
        print(f"(b) read 2 + write 1 mask loop      {b:8.1f} images/s")
        print(f"(c) desra-fast detect (whole CLI)   {c:8.1f} images/s")
        print(f"(c) / min(a, b) = {c / min(a, b):.2f}   (target >= 0.80); CLI masks == loop masks: {same}")
        print(proc.stderr.strip().splitlines()[0])
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
