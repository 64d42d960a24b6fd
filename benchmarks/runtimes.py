"""CPU runtimes for the SR network and the segmenter: seconds per output megapixel.

Real-ESRGAN x4plus (real weights from the pip package) on one real LR crop (pre-padded 10 px
reflect-101 as upscale() does): torch eager, torch "best" (channels-last + inference_mode),
ONNX Runtime (the file written by desra_fast.export.to_onnx) and the ncnn runtime (the tool
users run today: the ``ncnn`` pip package on CPU, plain fp32, as realesrgan-ncnn-vulkan's model
files). SegFormer (random weights, MiT-B0 with the mmseg head; no ADE20K weights exist offline):
torch eager vs best vs ONNX Runtime, per input megapixel. Rounds are interleaved (every runtime
once per round, order rotated) and the table gives the median seconds and the median per-round
ratio to torch eager; outputs are checked to agree first.

    python benchmarks/runtimes.py [--size 64] [--rounds 3] [--threads 2] [--seg-size 512] [--no-seg]
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
from sr_fixtures import lr_crop, ncnn_net, ncnn_run  # noqa: E402


def _interleaved(fns: dict, rounds: int) -> dict:
    """{name: [seconds per round]}; the order of the runtimes rotates every round."""
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t)
    return times


def _table(title: str, times: dict, mpx: float, unit: str) -> str:
    base = times["torch eager"]
    lines = [f"### {title}", "", f"| runtime | s per {unit} Mpx (median) | speed-up vs torch eager (median per round) |",
             "|---|---|---|"]
    for n, ts in times.items():
        ratio = statistics.median(b / t for b, t in zip(base, ts))
        lines.append(f"| {n} | {statistics.median(ts) / mpx:.2f} | {ratio:.2f}x |")
    return "\n".join(lines)


def _cpu_load() -> str:
    try:
        return "load average " + " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "load average unknown"


def _torch_fns(module, x) -> dict:
    """torch eager (as loaded) and torch best (a channels-last copy under inference_mode)."""
    import copy

    best = copy.deepcopy(module).to(memory_format=torch.channels_last).eval()
    xl = x.contiguous(memory_format=torch.channels_last)

    def run_eager():
        with torch.no_grad():
            return module(x)

    def run_best():
        with torch.inference_mode():
            return best(xl)

    return {"torch eager": run_eager, "torch best (channels-last, inference_mode)": run_best}


def bench_sr(args, tmp: str) -> str:
    import torch.nn.functional as F

    from desra_fast.export import to_onnx
    from desra_fast.models import load_sr
    from desra_fast.models.zoo import packaged_model
    from desra_fast.runtime.onnxruntime import OnnxRuntimeRunner

    param = packaged_model("realesrgan-x4plus")
    model = load_sr(param, runtime="torch")
    t = time.perf_counter()
    onnx_path = to_onnx(model, os.path.join(tmp, "x4plus.onnx"))
    export_s = time.perf_counter() - t
    ort = OnnxRuntimeRunner(onnx_path, threads=args.threads)
    net = ncnn_net(param, threads=args.threads)
    img = lr_crop("motorcycle", size=args.size, y=0, x=0)
    x = F.pad(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0, (10,) * 4, mode="reflect")
    chw = x[0].numpy().copy()
    fns = {**_torch_fns(model.module, x),
           "ONNX Runtime (CPU EP)": lambda: ort(x), "ncnn (CPU, fp32)": lambda: ncnn_run(net, chw, "data")}
    ref = fns["torch eager"]()
    for n, f in fns.items():
        y = f()
        y = torch.as_tensor(np.asarray(y)).reshape(ref.shape)
        diff = float((y - ref).abs().max())
        if diff > 1e-4:
            raise SystemExit(f"{n} differs from torch eager by {diff:.2e}")
    times = _interleaved(fns, args.rounds)
    mpx = ref.shape[2] * ref.shape[3] / 1e6
    head = (f"Real-ESRGAN x4plus, LR {args.size}x{args.size} (+10 px pre-pad) -> {ref.shape[3]}x{ref.shape[2]}, "
            f"{args.threads} threads, {args.rounds} rounds; ONNX export took {export_s:.0f} s")
    return _table(head, times, mpx, "output")


def bench_seg(args, tmp: str) -> str:
    from desra_fast.export import to_onnx
    from desra_fast.models.segformer import SegFormer, SegFormerConfig
    from desra_fast.models.segmenter import Segmenter
    from desra_fast.runtime.onnxruntime import OnnxRuntimeRunner

    torch.manual_seed(0)
    net = SegFormer(SegFormerConfig.variant("b0", head="mmseg", width=256)).eval()
    seg = Segmenter(net, info=dict(variant="b0", head="mmseg", width=256, num_classes=150), scale=None)
    onnx_path = to_onnx(seg, os.path.join(tmp, "segformer_b0.onnx"))
    ort = OnnxRuntimeRunner(onnx_path, threads=args.threads)
    x = torch.randn(1, 3, args.seg_size, args.seg_size)
    fns = {**_torch_fns(net, x),
           "ONNX Runtime (CPU EP)": lambda: ort(x)}
    ref = fns["torch eager"]()
    for n, f in fns.items():
        diff = float((f() - ref).abs().max())
        if diff > 1e-3:
            raise SystemExit(f"{n} differs from torch eager by {diff:.2e}")
    times = _interleaved(fns, args.rounds)
    head = (f"SegFormer MiT-B0 + mmseg head (random weights), input {args.seg_size}x{args.seg_size}, "
            f"{args.threads} threads, {args.rounds} rounds")
    return _table(head, times, args.seg_size ** 2 / 1e6, "input")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="LR side of the SR input (default 64)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seg-size", type=int, default=512)
    ap.add_argument("--no-seg", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}; {_cpu_load()} at start")
    with tempfile.TemporaryDirectory() as tmp:
        print(bench_sr(args, tmp), flush=True)
        if not args.no_seg:
            print()
            print(bench_seg(args, tmp))
    print(f"\n{_cpu_load()} at the end (other processes share these cores)")


if __name__ == "__main__":
    main()
