"""CPU runtimes for DeSRA's models, one process, rounds interleaved: ncnn, torch eager, torch best,
ONNX Runtime, OpenVINO fp32 (and OpenVINO bf16 where the CPU has bf16), then `desra-fast run`
images/s with each runtime on the same folder, and the load time of a second process.

SR (real weights from the pip packages): Real-ESRGAN x4plus and SRMD x4 on real LR crops
(pre-padded as ``upscale`` does): seconds per output Mpx (median), speed-up vs ncnn (median of
per-round ratios; ncnn is the reference runtime users run, plain fp32 on the CPU), max uint8
level difference vs ncnn and share of values within 1 level. SegFormer B0/B5 (random weights:
no ADE20K weights install offline): seconds per input Mpx, speed-up vs torch eager, share of
labels equal to torch's.

    python benchmarks/sr_runtimes.py                  # short default: x4plus 64^2, SRMD 64^2, B0/B5 at 64x96
    python benchmarks/sr_runtimes.py --sizes 128 256  # the README's sizes (minutes per round on 2 cores)

Writes markdown to stdout (and ``--out FILE``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from runtimes import _cpu_load, _interleaved, _torch_fns  # noqa: E402
from sr_fixtures import lr_crop, ncnn_net, ncnn_run  # noqa: E402


def cpu_description() -> str:
    """CPU model, cores and the ISA flags that matter for these runtimes."""
    name, flags = platform.processor() or "?", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags]
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(keep) or 'none of avx2/avx512/amx'}"


def ov_has_bf16() -> bool:
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _u8(y: torch.Tensor, crop: int) -> np.ndarray:
    y = y[..., crop:y.shape[-2] - crop, crop:y.shape[-1] - crop]
    return torch.floor(y.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def bench_sr(name: str, size: int, args) -> str:
    import torch.nn.functional as F

    from desra_fast.export import cached_onnx
    from desra_fast.models import load_sr
    from desra_fast.models.zoo import packaged_model
    from desra_fast.runtime.onnxruntime import OnnxRuntimeRunner
    from desra_fast.runtime.openvino import OpenVINORunner, translated

    param = packaged_model(name)
    model = load_sr(param, runtime="torch")
    pre, mode = model.info["pre_pad"], model.info["pad_mode"]
    img = lr_crop("motorcycle", size=min(size, 96), y=0, x=0)
    if size > img.shape[0]:
        img = np.tile(img, (size // img.shape[0] + 1, size // img.shape[1] + 1, 1))[:size, :size]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
    x = F.pad(x, (pre,) * 4, mode=mode)
    net = ncnn_net(param, threads=args.threads)
    in_blob = "data" if model.info["arch"] == "RRDBNet" else "input"
    chw = x[0].numpy().copy()
    if model.info["arch"] == "SRMD":       # ncnn's SRMD takes the 19-channel stack (RGB + degradation code)
        code = model.module.code[0, :, 0, 0].numpy()
        chw = np.concatenate([chw, np.broadcast_to(code[:, None, None], (len(code),) + chw.shape[1:])]).astype(np.float32)
    fns = {"ncnn (CPU, fp32)": lambda: torch.from_numpy(ncnn_run(net, chw, in_blob))[None]}
    fns.update(_torch_fns(model.module, x))
    if not args.no_ort:
        ort = OnnxRuntimeRunner(cached_onnx(model), threads=args.threads)
        fns["ONNX Runtime (CPU EP)"] = lambda: ort(x)
    ov = OpenVINORunner(translated(model), threads=args.threads, name=name)
    fns["OpenVINO fp32 (f32 hint)"] = lambda: ov(x)
    if ov_has_bf16():
        ovb = OpenVINORunner(translated(model), precision="bf16", threads=args.threads, name=name)
        fns["OpenVINO bf16 hint"] = lambda: ovb(x)
    crop = pre * model.scale
    ref = _u8(fns["ncnn (CPU, fp32)"](), crop)
    agree = {}
    for n, f in fns.items():
        d = np.abs(_u8(f(), crop).astype(np.int32) - ref.astype(np.int32))
        agree[n] = (int(d.max()), float((d <= 1).mean()))
    times = _interleaved(fns, args.rounds)
    mpx = ref.shape[-1] * ref.shape[-2] / 1e6
    base = times["ncnn (CPU, fp32)"]
    lines = [f"### {name}, LR {size}x{size} (+{pre} px pre-pad) -> {ref.shape[-1]}x{ref.shape[-2]}, "
             f"{args.threads} threads, {args.rounds} rounds", "",
             "| runtime | s per output Mpx (median) | speed-up vs ncnn (median per round) | max uint8 diff vs ncnn "
             "| values within 1 level |", "|---|---|---|---|---|"]
    for n, ts in times.items():
        ratio = statistics.median(b / t for b, t in zip(base, ts))
        lines.append(f"| {n} | {statistics.median(ts) / mpx:.1f} | {ratio:.2f}x | {agree[n][0]} | "
                     f"{100 * agree[n][1]:.3f} % |")
    if not ov_has_bf16():
        lines.append("| OpenVINO bf16 hint | not measurable: this CPU has no bf16 instructions (OpenVINO "
                     "compiles f32) | | | |")
    return "\n".join(lines)


def bench_seg(variant: str, args) -> str:
    from desra_fast.export import cached_onnx
    from desra_fast.models.segformer import SegFormer, SegFormerConfig
    from desra_fast.models.segmenter import Segmenter
    from desra_fast.runtime.onnxruntime import OnnxRuntimeRunner
    from desra_fast.runtime.openvino import OpenVINORunner, cached_ir

    cfg = SegFormerConfig.variant(variant, head="mmseg", width=256 if variant == "b0" else 768, num_classes=150)
    torch.manual_seed(0)
    net = SegFormer(cfg).eval()
    seg = Segmenter(net, info=dict(variant=variant, head="mmseg", width=cfg.width, num_classes=150,
                                   config=cfg.to_dict()), scale=(96, 64))
    t = time.perf_counter()
    ov = OpenVINORunner(cached_ir(seg), threads=args.threads, name=f"segformer-{variant}")
    conv_s = time.perf_counter() - t
    h, w = args.seg_size
    x = torch.randn(1, 3, h, w)
    fns = dict(_torch_fns(net, x))
    if not args.no_ort and variant == "b0":
        ort = OnnxRuntimeRunner(cached_onnx(seg), threads=args.threads)
        fns["ONNX Runtime (CPU EP)"] = lambda: ort(x)
    fns["OpenVINO fp32 (f32 hint)"] = lambda: ov(x)
    ref = fns["torch eager"]().argmax(1)
    same = {n: float((f().argmax(1) == ref).float().mean()) for n, f in fns.items()}
    times = _interleaved(fns, args.rounds)
    base = times["torch eager"]
    lines = [f"### SegFormer {variant.upper()} + mmseg head (random weights), input {w}x{h}, {args.threads} threads, "
             f"{args.rounds} rounds (OpenVINO load incl. conversion when not cached: {conv_s:.0f} s)", "",
             "| runtime | s per input Mpx (median) | speed-up vs torch eager | labels equal to torch's |",
             "|---|---|---|---|"]
    for n, ts in times.items():
        ratio = statistics.median(b / t for b, t in zip(base, ts))
        lines.append(f"| {n} | {statistics.median(ts) / (h * w / 1e6):.2f} | {ratio:.2f}x | {100 * same[n]:.2f} % |")
    return "\n".join(lines)


def bench_load(args) -> str:
    """Two fresh processes load x4plus with OpenVINO on an empty cache: compile, then the cached blob."""
    code = ("import json, time; t = time.perf_counter(); from desra_fast.models import load_sr; "
            "m = load_sr('realesrgan-x4plus', runtime='openvino'); "
            "print(json.dumps([time.perf_counter() - t, m.runner.load_seconds, m.runner.loaded_from_cache]))")
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DESRA_FAST_CACHE": cache, "DESRA_NUM_THREADS": str(args.threads)}
        for which in ("first process (compiles)", "second process (cached blob)"):
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            total, compile_s, cached = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(f"| {which} | {total:.1f} | {compile_s:.1f} | {cached} |")
    return "\n".join(["### OpenVINO load time of Real-ESRGAN x4plus (ncnn files -> torch -> OpenVINO)", "",
                      "| process | load_sr seconds | OpenVINO graph + compile seconds | loaded from cache |",
                      "|---|---|---|---|", *rows])


def bench_run(args) -> str:
    """`desra-fast run` (GAN x4plus + MSE SRMD x4) on the same folder, each runtime once per round."""
    import cv2

    from desra_fast.pipeline import run

    runtimes = ["torch", "auto"]
    with tempfile.TemporaryDirectory() as tmp:
        lr = os.path.join(tmp, "lr")
        os.makedirs(lr)
        for i in range(args.run_images):
            img = lr_crop(("rocket", "motorcycle")[i % 2], args.run_size, 10 + 9 * i, 15 + 5 * i)
            cv2.imwrite(os.path.join(lr, f"im{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        for rt in runtimes:     # warm: loads and compiles once (the blobs then come from the cache)
            run(lr, "realesrgan-x4plus", "srmd-x4", os.path.join(tmp, f"warm-{rt}"), runtime=rt, limit=1,
                progress=False, workers=1)
        fns = {}
        for rt in runtimes:
            def go(rt=rt):
                out = os.path.join(tmp, f"out-{rt}-{time.perf_counter_ns()}")
                res = run(lr, "realesrgan-x4plus", "srmd-x4", out, runtime=rt, progress=False, workers=1)
                assert not res.failed, res.failed
                masks[rt] = out
                with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as f:
                    work[rt].append(sum(json.loads(line)["seconds"] for line in f if line.strip()))
            fns[rt] = go
        masks: dict = {}
        work = {rt: [] for rt in runtimes}     # per round: the items' own seconds (read + models + detect)
        times = _interleaved(fns, args.rounds)
        same = []
        for i in range(args.run_images):
            a, b = (cv2.imread(os.path.join(masks[rt], "masks", f"im{i}.png"), 0) for rt in ("torch", "auto"))
            same.append(bool(np.array_equal(a, b)))
    base = times["torch"]
    lines = [f"### `desra-fast run` on {args.run_images} LR images of {args.run_size}x{args.run_size} "
             f"(GAN realesrgan-x4plus, MSE srmd-x4, CPU, {args.rounds} rounds)", "",
             "| --runtime | resolves to | images/s, processing (median) | speed-up vs torch (today's default) "
             "| images/s, wall incl. model loading | speed-up, wall |", "|---|---|---|---|---|---|"]
    for rt, ts in times.items():
        ratio = statistics.median(b / t for b, t in zip(base, ts))
        wratio = statistics.median(b / t for b, t in zip(work["torch"], work[rt]))
        resolved = "torch" if rt == "torch" else "openvino (fp32)"
        lines.append(f"| {rt} | {resolved} | {args.run_images / statistics.median(work[rt]):.3f} | {wratio:.2f}x | "
                     f"{args.run_images / statistics.median(ts):.3f} | {ratio:.2f}x |")
    lines.append(f"\nMasks of `--runtime auto` equal to `--runtime torch`: {sum(same)} of {len(same)} images.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64], help="x4plus LR sides (default 64; the README quotes 128 and 256)")
    ap.add_argument("--srmd-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seg-size", type=int, nargs=2, default=(64, 96), metavar=("H", "W"))
    ap.add_argument("--seg", nargs="*", default=["b0", "b5"], help="SegFormer variants (default b0 b5)")
    ap.add_argument("--run-images", type=int, default=4)
    ap.add_argument("--run-size", type=int, default=48)
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime (its export costs minutes)")
    ap.add_argument("--no-run", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DESRA_NUM_THREADS", str(args.threads))
    import openvino

    parts = [f"CPU: {cpu_description()}; OpenVINO {openvino.get_version().split('-')[0]}, torch {torch.__version__}; "
             f"{_cpu_load()} at start (other processes shared these cores)"]

    def emit(text):
        parts.append(text)
        print(text + "\n", flush=True)
    print(parts[0] + "\n", flush=True)
    for size in args.sizes:
        emit(bench_sr("realesrgan-x4plus", size, args))
    emit(bench_sr("srmd-x4", args.srmd_size, args))
    for v in args.seg:
        emit(bench_seg(v, args))
    emit(bench_load(args))
    if not args.no_run:
        emit(bench_run(args))
    parts.append(f"{_cpu_load()} at the end")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
