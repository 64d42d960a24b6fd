"""bf16 vs fp32 fine-tune step time, interleaved in one process (median of per-round ratios).

One training iteration as the loop runs it (generator step with L1 + perceptual + GAN, the
discriminator step, the EMA) on the real Real-ESRGAN x4plus generator, a random U-Net
discriminator and the installed VGG19, on random LR/target crops:

    python examples/finetune_precision_bench.py --batch 4 --patch 128 --rounds 3

Prints the CPU's bf16-related flags, the thread count and each round's times.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="realesrgan-x4plus")
    a = p.parse_args(argv)
    from desra_fast.cli.finetune import load_generator
    from desra_fast.train import FinetuneConfig, UNetDiscriminatorSN, load_vgg19, precision
    from desra_fast.train.loop import _Trainer

    flags = precision.cpu_flags()
    print(f"CPU bf16 flags: {sorted(flags & {'avx512_bf16', 'amx_bf16', 'amx_tile', 'avx512f', 'avx2'})}; "
          f"threads {torch.get_num_threads()}; auto -> {precision.resolve('auto', torch.device('cpu'))}")
    net_g, scale = load_generator(a.model)
    vgg = load_vgg19()
    torch.manual_seed(0)
    net_d = UNetDiscriminatorSN(3, 64)
    lr = torch.rand(a.batch, 3, a.patch // scale, a.patch // scale)
    gt = torch.rand(a.batch, 3, a.patch, a.patch)
    mask = (torch.rand(a.batch, 1, a.patch, a.patch) < 0.1).float()
    data = SimpleNamespace(patch=a.patch, gt_usm=False, focus=0.0, scale=scale, seed=0, samples=[],
                           sample=lambda k: (None, gt[k % a.batch].numpy()))
    trainers = {}
    for prec in ("fp32", "bf16"):
        cfg = FinetuneConfig(iters=10, batch=a.batch, patch=a.patch, precision=prec, netd_warmup=0)
        ctx = SimpleNamespace(world=1, rank=0, is_main=False, enabled=False, device=torch.device("cpu"))
        t = _Trainer(copy.deepcopy(net_g), data, Path("."), cfg, ctx, vgg, copy.deepcopy(net_d), False)
        t.setup_perceptual()
        trainers[prec] = t

    def one(t):
        s = time.perf_counter()
        terms, sr = t.g_step(t.net_g, lr, gt, mask, 1, None)
        t.d_step(t.net_d, gt, sr)
        return time.perf_counter() - s

    for t in trainers.values():  # warm-up iteration each
        one(t)
    ratios = []
    for r in range(a.rounds):
        times = {prec: one(t) for prec, t in trainers.items()}
        ratios.append(times["fp32"] / times["bf16"])
        print(f"round {r + 1}: fp32 {times['fp32']:.2f} s, bf16 {times['bf16']:.2f} s, speed-up {ratios[-1]:.3f}x",
              flush=True)
    print(f"bf16 speed-up over fp32 (median of per-round ratios): {statistics.median(ratios):.3f}x "
          f"(batch {a.batch}, HR patch {a.patch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
