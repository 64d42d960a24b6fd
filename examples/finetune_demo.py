"""DeSRA's fine-tune on real models and real photographs, against an empty-mask control (CPU).

One command, resumable (rerun it after an interruption; every step skips what is done):

    python examples/finetune_demo.py --out demo_ft            # the full-scale run (hours on 2 cores)
    python examples/finetune_demo.py --out demo_ft --iters 60 --batch 2 --patch 96   # a CPU-sized one

1. Photographs bundled offline with the installed packages: scikit-image's data (colour photos and
   grey ones used as RGB), matplotlib's ``grace_hopper.jpg``, scikit-learn's ``china.jpg`` and
   ``flower.jpg``, and the repository's ``samples/lr`` images (already LR: used as they are).
2. A real-world-like degradation (a simplified first-order Real-ESRGAN degradation, fixed seeds):
   long side capped at 1024 px, Gaussian blur sigma 1.2, x1/4 with ``INTER_AREA``, Gaussian noise
   sigma 2 levels, JPEG quality 75. From each photo's LR, the ``--crops`` most textured
   ``--lr-size`` windows (mean 7x7 local standard deviation; half-overlapping grid) become candidate
   LR images.
3. ``desra-fast run --gan-model realesrgan-x4plus --mse-model srmd-x4 --save-sr png`` on every
   candidate (Real-ESRGAN x4plus and SRMD x4, real weights from pip packages); only the candidates
   with detected regions are kept (screening), then split **by photograph** (every crop of a photo on
   the same side) into training and held-out images, alternating photos until each side has
   ``--min-images``.
4. ``desra-fast finetune --model realesrgan-x4plus --run RUN --list train_all.txt`` with the project's
   defaults and ``--iters/--batch/--patch`` (the real run) on every candidate of the photographs
   not held out, with or without detections (as ``--run RUN`` without ``--list`` reads a whole run;
   ``--train-list train.txt``: only those with detections), and the same command on the same images
   with **empty masks** (pseudo-GT = GAN-SR itself: the control, which shows how much "removal"
   drift alone produces).
5. ``desra-fast evaluate-finetune`` of each fine-tuned ``net_g_final.pth`` (``--after-key``
   ``params_ema``, what ``load_sr`` loads; ``--keys`` adds ``params``) on the held-out and on the
   training images. Writes ``OUT/demo_table.md`` (the figures of both runs), ``OUT/demo_summary.json``
   (with the seconds of each step) and the pictures ``OUT/eval/<run>_<key>_<set>/compare/*.jpg``
   (before | after | MSE-SR).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "retina", "hubble_deep_field",
                  "camera", "brick", "grass", "gravel", "coins", "moon", "clock")
MODEL, MSE_MODEL = "realesrgan-x4plus", "srmd-x4"


def photographs():
    """{photo name: RGB uint8 (H, W, 3)} of the offline sources available here."""
    import skimage.data

    out = {}
    for name in SKIMAGE_PHOTOS:
        try:
            img = np.asarray(getattr(skimage.data, name)())
        except Exception as exc:  # noqa: BLE001 - a data file that needs a download is skipped
            print(f"skipping skimage {name}: {exc}", file=sys.stderr)
            continue
        out[f"sk_{name}"] = img
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            out["mpl_grace_hopper"] = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    except Exception as exc:  # noqa: BLE001
        print(f"skipping matplotlib's grace_hopper.jpg: {exc}", file=sys.stderr)
    try:
        from sklearn.datasets import load_sample_images

        for fname, img in zip(("china", "flower"), load_sample_images().images):
            out[f"skl_{fname}"] = np.asarray(img)
    except ImportError:
        print("skipping scikit-learn's photographs (pip install scikit-learn)", file=sys.stderr)
    for name, img in out.items():
        img = img[..., :3] if img.ndim == 3 else np.stack([img] * 3, -1)
        if img.dtype != np.uint8:
            img = np.clip(img * (255.0 if img.max() <= 1 else 1.0), 0, 255).astype(np.uint8)
        out[name] = np.ascontiguousarray(img)
    return out


def degrade(rgb: np.ndarray, seed: int) -> np.ndarray:
    """The demo's degradation (module docstring, step 2): RGB uint8 -> LR RGB uint8."""
    h, w = rgb.shape[:2]
    if max(h, w) > 1024:
        f = 1024 / max(h, w)
        rgb = cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        h, w = rgb.shape[:2]
    img = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), 1.2)
    img = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    img = img + np.random.default_rng(seed).normal(0, 2.0, img.shape).astype(np.float32)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 75])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def textured_windows(lr: np.ndarray, size: int, count: int):
    """Top-left corners of the ``count`` ``size`` windows on a ``size / 2`` grid (neighbours
    overlap by half: the photographs are small once degraded, and detections are rare) with the
    highest mean 7x7 local standard deviation (grey), best first."""
    g = cv2.cvtColor(lr, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.blur(g, (7, 7))
    std = np.sqrt(np.maximum(cv2.blur(g * g, (7, 7)) - mean * mean, 0))
    cands = [(float(std[t:t + size, l:l + size].mean()), t, l)
             for t in range(0, g.shape[0] - size + 1, size // 2) for l in range(0, g.shape[1] - size + 1, size // 2)]
    return [(t, l) for _, t, l in sorted(cands, reverse=True)[:count]]


def write_png(path: Path, rgb: np.ndarray) -> None:
    from desra_fast.utils import write_bytes_atomic

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]) if rgb.ndim == 3 else rgb)
    write_bytes_atomic(path, buf.tobytes())


def make_candidates(out: Path, lr_size: int, crops: int) -> dict:
    """Writes OUT/lr/<photo>__<i>.png; returns {key: photo}."""
    from desra_fast.imageio import read_rgb

    index_file = out / "candidates.json"
    if index_file.is_file():
        return json.loads(index_file.read_text())
    keys = {}
    sources = {name: degrade(img, seed=i) for i, (name, img) in enumerate(sorted(photographs().items()))}
    for p in sorted((ROOT / "samples" / "lr").glob("*.png")):
        sources[f"samples_{p.stem}"] = read_rgb(p)
    for name, lr in sources.items():
        for i, (t, l) in enumerate(textured_windows(lr, lr_size, crops)):
            key = f"{name}__{i}"
            write_png(out / "lr" / f"{key}.png", lr[t:t + lr_size, l:l + lr_size])
            keys[key] = name
    from desra_fast.utils import write_bytes_atomic

    write_bytes_atomic(index_file, json.dumps(keys, indent=1).encode())
    return keys


def split_by_photo(out: Path, keys: dict, min_images: int):
    """Screening (candidates with a detected region) and the split by photograph."""
    from desra_fast.imageio import read_mask
    from desra_fast.utils import write_list

    kept = {k: p for k, p in keys.items() if (out / "run" / "masks" / f"{k}.png").is_file()
            and read_mask(out / "run" / "masks" / f"{k}.png").any()}
    by_photo = {}
    for k, p in sorted(kept.items()):
        by_photo.setdefault(p, []).append(k)
    # photos with the most kept crops first, alternating sides, so both sides fill evenly
    photos = sorted(by_photo, key=lambda p: (-len(by_photo[p]), p))
    train, held = [], []
    for p in photos:
        (train if len(train) <= len(held) else held).extend(by_photo[p])
    if len(train) < min_images or len(held) < min_images:
        print(f"warning: only {len(train)} training and {len(held)} held-out images with detections "
              f"(wanted {min_images} each): raise --crops or --lr-size", file=sys.stderr)
    write_list(out / "train.txt", train)
    write_list(out / "heldout.txt", held)
    # what the fine-tune reads: every candidate of every photograph not held out, with or without
    # detections (as `desra-fast finetune --run RUN` without --list would read a whole run): the
    # images without detections are pure "stay as you are" examples for the generator
    held_photos = {kept[k] for k in held}
    write_list(out / "train_all.txt", sorted(k for k, p in keys.items() if p not in held_photos))
    return train, held, {k: kept[k] for k in train}, {k: kept[k] for k in held}


def empty_masks(out: Path, train) -> Path:
    from desra_fast.imageio import read_mask

    d = out / "empty_masks"
    for k in train:
        if not (d / f"{k}.png").is_file():
            write_png(d / f"{k}.png", np.zeros_like(read_mask(out / "run" / "masks" / f"{k}.png"), np.uint8))
    return d


def step(name: str, timings: dict, fn, *args):
    t = time.perf_counter()
    code = fn(*args)
    timings[name] = round(time.perf_counter() - t, 1)
    print(f"[demo] {name}: {timings[name]} s (exit {code})", flush=True)
    return code


def table(results: dict) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:+.0f} %"  # noqa: E731
    num = lambda x, f=".1f": "n/a" if x is None else format(x, f)  # noqa: E731
    rows = ["| generator evaluated | held-out area | held-out regions gone | images with new regions "
            "| outside: PSNR after vs before | outside: texture after / before | outside: PSNR vs MSE-SR "
            "before -> after | training area |", "|---|---|---|---|---|---|---|---|"]
    for (run, key), r in results.items():
        h, t = r["heldout"], r.get("train") or {}
        rows.append(f"| {run}, `{key}` | {pct(h['area_change'])} | {h['removed_regions']} / "
                    f"{h['regions_before']} | {h['images_with_new_regions']} / {h['images']} | "
                    f"{num(h['psnr_after_vs_before_outside'])} dB | {num(h['texture_kept'], '.3f')} | "
                    f"{num(h['psnr_gan_vs_mse_outside_before'])} -> {num(h['psnr_gan_vs_mse_outside_after'])} dB "
                    f"| {pct(t.get('area_change'))} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_finetune")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=128, help="HR patch (LR patch = patch / 4)")
    p.add_argument("--lr-size", type=int, default=64, help="LR candidate size (SR: 4x)")
    p.add_argument("--crops", type=int, default=8, help="candidate LR windows per photograph")
    p.add_argument("--min-images", type=int, default=6, help="images wanted on each side of the split")
    p.add_argument("--train-list", default="train_all.txt", choices=("train_all.txt", "train.txt"),
                   help="the fine-tune's images: every candidate of the training photographs (default) "
                        "or only those with detections")
    p.add_argument("--keys", default="params_ema", help="comma-separated: params_ema,params")
    p.add_argument("--no-control", action="store_true", help="skip the empty-mask control")
    p.add_argument("--no-train-eval", action="store_true", help="evaluate on the held-out images only")
    p.add_argument("finetune_args", nargs=argparse.REMAINDER,
                   help="after '--': more desra-fast finetune options for both runs")
    a = p.parse_args(argv)
    from desra_fast.cli import main as cli
    from desra_fast.utils import read_list

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tfile = out / "timings.json"
    timings = json.loads(tfile.read_text()) if tfile.is_file() else {}
    extra = [x for x in a.finetune_args if x != "--"]

    t = time.perf_counter()
    keys = make_candidates(out, a.lr_size, a.crops)
    timings.setdefault("candidates", round(time.perf_counter() - t, 1))
    code = step("run", timings, cli, ["run", "--lr", str(out / "lr"), "--gan-model", MODEL, "--mse-model",
                                      MSE_MODEL, "--out", str(out / "run"), "--save-sr", "png", "--no-progress"])
    train, held, train_ph, held_ph = split_by_photo(out, keys, a.min_images)
    runs = {"real": ["--run", str(out / "run")]}
    if not a.no_control:
        runs["control"] = ["--lr", str(out / "lr"), "--gan", str(out / "run" / "gan"), "--mse",
                           str(out / "run" / "mse"), "--mask", str(empty_masks(out, read_list(out / a.train_list)))]
    results = {}
    for run, data_args in runs.items():
        ft = out / f"ft_{run}"
        code = step(f"finetune_{run}", timings, cli, [
            "finetune", "--model", MODEL, *data_args, "--list", str(out / a.train_list), "--out", str(ft),
            "--iters", str(a.iters), "--batch", str(a.batch), "--patch", str(a.patch),
            "--ckpt-every", str(max(1, min(25, a.iters))), "--resume", "--quiet", *extra])
        if code:
            return code
        for key in a.keys.split(","):
            for side, lst in (("heldout", "heldout.txt"), ("train", "train.txt")):
                if side == "train" and a.no_train_eval:
                    continue
                ev = out / "eval" / f"{run}_{key}_{side}"
                step(f"evaluate_{run}_{key}_{side}", timings, cli, [
                    "evaluate-finetune", "--before", MODEL, "--after", str(ft / "net_g_final.pth"),
                    "--after-key", key, "--lr", str(out / "lr"), "--list", str(out / lst), "--mse-model",
                    MSE_MODEL, "--out", str(ev), "--no-progress"])
                rep = ev / "report.json"
                if rep.is_file():
                    results.setdefault((run, key), {})[side] = json.loads(rep.read_text())
        tfile.write_text(json.dumps(timings, indent=1))
    md = table({k: v for k, v in results.items() if "heldout" in v})
    log = [json.loads(l) for l in (out / "ft_real" / "train_log.jsonl").read_text().splitlines()]
    per_it = [r["sec"] for r in log if "sec" in r]
    summary = {"settings": vars(a), "train": train, "heldout": held, "train_photos": sorted(set(train_ph.values())),
               "heldout_photos": sorted(set(held_ph.values())), "seconds": timings,
               "finetune_s_per_iteration_median": float(np.median(per_it)) if per_it else None,
               "first_generator_step": next((r for r in log if r.get("first_generator_step")), None),
               "results": {f"{r}/{k}": v for (r, k), v in results.items()}}
    from desra_fast.utils import write_bytes_atomic

    write_bytes_atomic(out / "demo_table.md", md.encode())
    write_bytes_atomic(out / "demo_summary.json", json.dumps(summary, indent=1).encode())
    tfile.write_text(json.dumps(timings, indent=1))
    print(md)
    print(f"{len(train)} training images ({len(summary['train_photos'])} photos), {len(held)} held-out "
          f"({len(summary['heldout_photos'])} photos); seconds: {timings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
