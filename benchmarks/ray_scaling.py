"""``desra-fast run --engine ray`` on a real local cluster (scripts/ray_local_cluster.py: head +
worker node, 1 CPU and a 100 MB object store each, token auth, 127.0.0.1): scaling from one to
two model actors (one per node), Ray's overhead per image against the local engine, the driver's
memory and CPU per image over thousands of tiny images, and a projection for 8 and 64 GPUs.

Scaling: random-weight RRDBNets (``--feat``, ``--blocks``) on ``--lr-size`` LR images, so that
the models dominate as they do at scale; torch on one thread in every mode (Ray gives an actor
that claims 1 CPU one thread; the local engine is run with ``OMP_NUM_THREADS=1``). Per-image
time = (T(N2) - T(N1)) / (N2 - N1) over the same folder (``--limit``), which cancels the fixed
start-up (Ray connection, actor start, model load). Modes interleaved in every round; figures
are medians of the per-round values.

Memory: ``--memory-images`` runs of 8x8 LR images (a few thousand) through the 100 MB object
stores on both nodes; the driver's peak RSS (polled from /proc) and CPU seconds per image.

    python -m benchmarks.ray_scaling [--rounds 2] [--scaling-images 24,72] [--memory-images 500,2000,4000]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from benchmarks.timing import OtherLoad, machine
from benchmarks.pipeline_throughput import rrdbnet_macs_per_lr_pixel

ROOT = Path(__file__).resolve().parents[1]


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location("ray_local_cluster", ROOT / "scripts" / "ray_local_cluster.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def save_random_models(d: Path, feat: int, blocks: int) -> Dict[str, str]:
    """Two random-weight x4 RRDBNets (different seeds) as official ``params_ema`` checkpoints."""
    import torch

    from desra_fast.models import RRDBNet

    paths = {}
    for seed, name in ((1, "gan"), (2, "mse")):
        torch.manual_seed(seed)
        net = RRDBNet(num_feat=feat, num_block=blocks, num_grow_ch=max(4, feat // 2))
        paths[name] = str(d / f"{name}.pth")
        torch.save({"params_ema": net.state_dict()}, paths[name])
    return paths


def make_folder(root: Path, n: int, size: int, seed: int) -> None:
    """``n`` smooth random RGB PNGs of ``size`` x ``size`` (content does not matter here)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (max(2, size // 4), max(2, size // 4), 3), dtype=np.uint8)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        rel = root / f"c{i % 10}" / f"img_{i:06d}.png"
        rel.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(rel), img)


def cpu_by_pid(pids: List[int]) -> Dict[int, float]:
    """utime + stime (seconds) of each of ``pids`` still running."""
    tck, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tck
        except (OSError, IndexError, ValueError):
            pass
    return out


class Driver:
    """One ``desra-fast run`` in a subprocess: wall time, peak RSS and CPU seconds (from /proc)."""

    def __init__(self, cmd: List[str], env: Dict[str, str], log: Path):
        self.cmd, self.env, self.log = cmd, env, log

    def run(self, timeout: float = 1800, watch=None) -> Tuple[int, float, int, float]:
        """(exit status, wall seconds, peak RSS bytes, CPU seconds) of the driver process, plus
        the CPU that the processes ``watch()`` lists (a cluster's) spent meanwhile: sampled every
        0.1 s, so a Ray worker that ends with the job is counted up to its last sample."""
        first = cpu_by_pid(watch()) if watch else {}
        last = dict(first)
        t0 = time.perf_counter()
        with open(self.log, "wb") as fh:
            proc = subprocess.Popen(self.cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True, cwd=ROOT)
        peak, cpu, tck = 0, 0.0, os.sysconf("SC_CLK_TCK")
        try:
            while proc.poll() is None:
                try:
                    with open(f"/proc/{proc.pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                peak = max(peak, int(line.split()[1]) * 1024)
                    with open(f"/proc/{proc.pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                        cpu = (int(fields[11]) + int(fields[12])) / tck
                except (OSError, IndexError, ValueError):
                    pass
                if watch:
                    last.update(cpu_by_pid(watch()))
                if time.perf_counter() - t0 > timeout:
                    break
                time.sleep(0.1)
        finally:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            rc = proc.wait()
        cpu += sum(v - first.get(pid, 0.0) for pid, v in last.items())
        return rc, time.perf_counter() - t0, peak, cpu


def run_cmd(lr: Path, out: Path, models: Dict[str, str], *extra: str) -> List[str]:
    return [sys.executable, "-m", "desra_fast", "run", "--lr", str(lr), "--gan-model", models["gan"],
            "--mse-model", models["mse"], "--out", str(out), "--runtime", "torch", "--no-progress",
            "--no-fsync", *extra]


def scaling(cluster, work: Path, models, lr: Path, sizes: Tuple[int, int], rounds: int, batch: int) -> dict:
    """Wall and CPU seconds per image of each mode (CPU = the driver's plus, for Ray, every
    process of the cluster: contention on a shared machine moves wall time much more)."""
    n1, n2 = sizes
    modes = {"local": ("--engine", "local", "--workers", "1"),
             "ray, 1 node": ("--engine", "ray", "--ray-address", cluster.address, "--ray-actors", "1"),
             "ray, 2 nodes": ("--engine", "ray", "--ray-address", cluster.address, "--ray-actors", "2")}
    env = cluster.driver_env()
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    per_image: Dict[str, List[float]] = {m: [] for m in modes}
    cpu_image: Dict[str, List[float]] = {m: [] for m in modes}
    speedup, overhead = [], []
    k = 0
    for r in range(rounds):
        this = {}
        for mode, extra in modes.items():
            t, c = {}, {}
            for n in (n1, n2):
                k += 1
                out = work / f"out{k}"
                rc, wall, _, cpu = Driver(run_cmd(lr, out, models, "--batch", str(batch), "--limit", str(n), *extra),
                                          env, work / f"log{k}.txt").run(watch=None if mode == "local" else cluster.pids)
                if rc != 0:
                    raise SystemExit(f"{mode} n={n} failed: " + (work / f"log{k}.txt").read_text()[-2000:])
                t[n] = wall
                c[n] = cpu
            this[mode] = (t[n2] - t[n1]) / (n2 - n1)
            per_image[mode].append(this[mode])
            cpu_image[mode].append((c[n2] - c[n1]) / (n2 - n1))
            print(f"  round {r + 1} {mode}: T({n1})={t[n1]:.1f} s T({n2})={t[n2]:.1f} s -> "
                  f"{this[mode] * 1e3:.0f} ms/image ({1 / this[mode]:.2f} images/s); CPU {c[n1]:.1f} / "
                  f"{c[n2]:.1f} s -> {cpu_image[mode][-1] * 1e3:.0f} ms CPU/image", flush=True)
        speedup.append(this["ray, 1 node"] / this["ray, 2 nodes"])
        overhead.append(this["ray, 1 node"] - this["local"])
    return {"per_image": {m: statistics.median(v) for m, v in per_image.items()},
            "cpu_image": {m: statistics.median(v) for m, v in cpu_image.items()},
            "speedup": statistics.median(speedup), "overhead": statistics.median(overhead),
            "speedups": speedup, "overheads": overhead}


def memory(cluster, work: Path, models, lr: Path, sizes: List[int], batch: int) -> List[dict]:
    rows = []
    for n in sizes:
        out = work / f"mem{n}"
        log = work / f"mem{n}.txt"
        cmd = run_cmd(lr, out, models, "--batch", str(batch), "--limit", str(n), "--engine", "ray",
                      "--ray-address", cluster.address)
        rc, wall, peak, cpu = Driver(cmd, cluster.driver_env(), log).run()
        text = log.read_text(errors="replace")
        lines = (out / "manifest.jsonl").read_text().count("\n") if (out / "manifest.jsonl").exists() else 0
        bad = [w for w in ("ObjectStoreFull", "OutOfMemory", "Spilled") if w in text]
        rows.append({"images": n, "rc": rc, "lines": lines, "wall": wall, "peak_rss": peak, "cpu": cpu,
                     "store_errors": bad})
        print(f"  {n} images: rc {rc}, {lines} manifest lines, {wall:.1f} s, driver peak RSS "
              f"{peak / 2**20:.0f} MiB, driver CPU {cpu:.1f} s, object-store messages: {bad or 'none'}", flush=True)
    return rows


def projection(overhead_s: float, driver_cpu_per_image: float, lines: List[str]) -> None:
    """GPU images/s for 8 and 64 GPUs from the per-image model cost (FLOP count, assumed rate)."""
    macs = rrdbnet_macs_per_lr_pixel()
    px = (375 + 20) * (500 + 20)  # the most common ImageNet val size, 10-px pre-pad
    flop = 2 * 2 * macs * px  # GAN + MSE RRDBNets (RealESRGAN / RealESRNet x4plus)
    lines += ["", "## Projection (not measured: no GPU here): 50,000 ImageNet-val images, 500x375 LR, "
              "RealESRGAN + RealESRNet x4plus", "",
              f"- model cost per image: {flop / 1e12:.1f} TFLOP (layer count, benchmarks.pipeline_throughput); "
              "at 40 % of the dense fp16 tensor-core peak: A100 "
              f"{flop / (0.4 * 312e12) * 1e3:.0f} ms, H100 {flop / (0.4 * 989e12) * 1e3:.0f} ms per image "
              "(segmentation and detection excluded: they add a few %).",
              f"- Ray's cost per image (measured above: CPU of the whole cluster and driver, minus the local "
              f"engine's): {overhead_s * 1e3:.1f} ms, counted as if it stalled the GPU (an upper bound: "
              f"it is spent on the actor's and the raylet's CPU); the driver's CPU per image: {driver_cpu_per_image * 1e3:.2f} ms "
              f"(one driver for the whole cluster: at most {1 / max(driver_cpu_per_image, 1e-9):,.0f} images/s).", "",
              "| GPUs | A100 images/s | A100 50,000 images | H100 images/s | H100 50,000 images |", "|---|---|---|---|---|"]
    for n in (1, 8, 64):
        row = [str(n)]
        for peak in (312e12, 989e12):
            per_gpu = 1.0 / (flop / (0.4 * peak) + overhead_s)
            rate = min(n * per_gpu, 1 / max(driver_cpu_per_image, 1e-9))
            row += [f"{rate:,.1f}", f"{50_000 / rate / 60:,.1f} min"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Rate = min(GPUs x 1 / (model time + Ray's per-image cost), the driver's ceiling). Assumes the "
              "decode/encode/write of an image (CPU) overlaps the next batch on the GPU (two calls per actor) "
              "and that the shared storage keeps up (ImageNet val LR is 6.4 GB; masks ~1 KB each)."]


def _shown_args(args: List[str]) -> str:
    """The command's arguments without ``--out PATH`` (a path of this machine)."""
    out, skip = [], False
    for a in args:
        if skip or a.startswith("--out="):
            skip = False
            continue
        if a == "--out":
            skip = True
            continue
        out.append(a)
    return " ".join(out)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--scaling-images", default="24,72")
    ap.add_argument("--lr-size", type=int, default=32)
    ap.add_argument("--feat", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--memory-images", default="500,2000,4000")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--out", default=None, help="also write the Markdown report here")
    a = ap.parse_args(argv)
    n1, n2 = (int(x) for x in a.scaling_images.split(","))
    mem_sizes = [int(x) for x in a.memory_images.split(",") if x]
    lines = ["# Ray engine on a local 2-node cluster", ""]
    for k, v in machine(None).items():
        lines.append(f"- {k}: {v}")
    load = OtherLoad()
    mod = _load_cluster_module()
    with tempfile.TemporaryDirectory(prefix="desra-ray-bench-") as tmp:
        work = Path(tmp)
        models = save_random_models(work, a.feat, a.blocks)
        with mod.LocalRayCluster(nodes=2, cpus_per_node=1, object_store_bytes=100 << 20) as cluster:
            res = None
            if not a.skip_scaling:
                make_folder(work / "lr", n2, a.lr_size, seed=0)
                print(f"scaling: {n1} and {n2} images of {a.lr_size}x{a.lr_size}, RRDBNet feat {a.feat} "
                      f"blocks {a.blocks}, batch {a.batch}", flush=True)
                res = scaling(cluster, work, models, work / "lr", (n1, n2), a.rounds, a.batch)
            mem = []
            if mem_sizes:
                make_folder(work / "lr_mem", max(mem_sizes), 8, seed=1)
                print(f"memory: {mem_sizes} images of 8x8 through 100 MB object stores", flush=True)
                mem = memory(cluster, work, models, work / "lr_mem", mem_sizes, a.batch)
    others = load.result()
    if others:
        lines.append(f"- load: other processes used {others[0] / others[1]:.2f} of the 2 cores on average "
                     f"during the {others[1] / 60:.0f} min of this benchmark")
    lines += ["", "Cluster: `scripts/ray_local_cluster.py` head + 1 worker node, `ray start --num-cpus 1 "
              "--object-store-memory 104857600`, 127.0.0.1, token auth; the driver is `desra-fast run` in its "
              f"own process. Command: `python -m benchmarks.ray_scaling {_shown_args(argv or sys.argv[1:])}`."]
    if res is not None:
        pi = res["per_image"]
        lines += ["", f"## Scaling: {n2 - n1} images of {a.lr_size}x{a.lr_size} (T({n2}) - T({n1})), "
                  f"random RRDBNet x4 feat {a.feat} blocks {a.blocks} (GAN + MSE), batch {a.batch}, torch 1 thread", "",
                  "| mode | wall ms per image | images/s | CPU ms per image (all processes) |", "|---|---|---|---|"]
        for m, v in pi.items():
            lines.append(f"| {m} | {v * 1e3:.0f} | {1 / v:.2f} | {res['cpu_image'][m] * 1e3:.0f} |")
        lines += ["", f"- 2 nodes vs 1 node: **{res['speedup']:.2f}x** images/s (per round: "
                  f"{', '.join(f'{x:.2f}' for x in res['speedups'])})",
                  f"- Ray's overhead per image vs the local engine (1 actor vs 1 thread): "
                  f"**{res['overhead'] * 1e3:.1f} ms** (per round: {', '.join(f'{x * 1e3:.1f}' for x in res['overheads'])}; "
                  f"{res['overhead'] / pi['local'] * 100:.0f} % of the local per-image time)",
                  f"- CPU per image, Ray (1 actor, every process of the cluster and the driver) minus local: "
                  f"**{(res['cpu_image']['ray, 1 node'] - res['cpu_image']['local']) * 1e3:.1f} ms**"]
    driver_cpu = 0.0
    if mem:
        lines += ["", "## Memory: 8x8 LR images through 100 MB object stores (head + worker, 2 actors)", "",
                  "| images | exit | manifest lines | wall s | driver peak RSS MiB | driver CPU s | object-store errors |",
                  "|---|---|---|---|---|---|---|"]
        for r in mem:
            lines.append(f"| {r['images']} | {r['rc']} | {r['lines']} | {r['wall']:.1f} | {r['peak_rss'] / 2**20:.0f} "
                         f"| {r['cpu']:.1f} | {', '.join(r['store_errors']) or 'none'} |")
        if len(mem) >= 2:
            a0, a1 = mem[0], mem[-1]
            slope = (a1["peak_rss"] - a0["peak_rss"]) / (a1["images"] - a0["images"])
            driver_cpu = (a1["cpu"] - a0["cpu"]) / (a1["images"] - a0["images"])
            lines += ["", f"- driver peak RSS grows {slope:.0f} bytes per image between {a0['images']} and "
                      f"{a1['images']} images (the planned item list and the manifest index; no image data); "
                      f"driver CPU {driver_cpu * 1e3:.2f} ms per image"]
    if res is not None:
        # the CPU difference, not the wall one: on a machine shared with other work the wall
        # times mostly measure each mode's share of the contended cores
        projection(max(0.0, res["cpu_image"]["ray, 1 node"] - res["cpu_image"]["local"]), driver_cpu, lines)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
