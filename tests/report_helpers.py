"""Fixtures of the report tests (tests/test_report.py, tests/test_report_browser.py): a real run
folder made by ``desra_fast.pipeline.run`` with the tiny RRDBNets of tests/test_pipeline.py,
over LR images whose names hold spaces, quotes, ``<`` and non-ASCII (one is a script injection
attempt), a synthetic evaluation folder following the ``evaluate-finetune`` contract, and a
reader for the JSON data a report page embeds."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np

from images import fit, photo

HOSTILE = "<img src=x onerror=window.pwned=1>"
LR_NAMES = ["plain_a.png", "with space b.png", "quote's \"c\".png", "ünïcødé_d.png", f"{HOSTILE}.png",
            "sub/nested e.png", "f_flat.png", "g.png"]
AREA = 10
THRESHOLD = 0.8


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())


def make_run(root: Path, models: dict, names=LR_NAMES) -> Path:
    """``root/lr`` (LR images 28x36) and ``root/run`` = ``desra-fast run --save-sr png --overlay``."""
    from desra_fast import pipeline

    rng = np.random.default_rng(7)
    lr = root / "lr"
    for i, name in enumerate(names):
        img = np.clip(fit(photo(["astronaut", "coffee", "chelsea", "rocket"][i % 4]), 28, 36, rng), 0, 255).astype(np.uint8)
        _write_png(lr / name, img)
    out = root / "run"
    res = pipeline.run(str(lr), models["gan"], models["mse"], str(out), area_threshold=AREA, save_sr="png",
                       overlay=True, batch=4, progress=False, workers=1, threshold=THRESHOLD)
    assert res.exit_code == 0
    return out


def page_data(index: Path) -> dict:
    """The JSON the page embeds, read as a browser would (text of the data element)."""
    text = index.read_text("utf-8")
    m = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', text, re.S)
    assert m, "no data element"
    return json.loads(m.group(1))


def read_manifest_lines(run: Path) -> list:
    return [json.loads(ln) for ln in (run / "manifest.jsonl").read_text("utf-8").splitlines() if ln.strip()]


def make_eval(root: Path, keys=("a", "b c", "ünï/d", HOSTILE)) -> Path:
    """An ``evaluate-finetune`` output folder per the contract (docs/report.md), with figures
    chosen here (NaN written as null, as the contract says)."""
    rng = np.random.default_rng(3)
    ev = root / "eval"
    per_image = {}
    for i, key in enumerate(keys):
        img = np.clip(fit(photo("astronaut"), 48, 64, rng), 0, 255).astype(np.uint8)
        mb = np.zeros((48, 64), np.uint8)
        mb[8:24, 10:30] = 255
        ma = np.zeros_like(mb)
        if i % 2:
            ma[30:40, 40:50] = 255
        for sub, pic in (("sr/before", img), ("sr/after", 255 - img), ("sr/mse", img // 2)):
            _write_png(ev / sub / f"{key}.png", pic)
        for sub, m in (("before", mb), ("after", ma)):
            (ev / sub / f"{key}.png").parent.mkdir(parents=True, exist_ok=True)
            (ev / sub / f"{key}.png").write_bytes(cv2.imencode(".png", m)[1].tobytes())
        per_image[key] = {"area_before": 320, "area_after": 100 * (i % 2), "regions_before": 1,
                          "regions_removed": 1, "new_regions": i % 2,
                          "psnr_after_vs_before_outside": 31.25 + i / 7, "texture_kept": 0.9 - i / 13,
                          "psnr_gan_vs_mse_outside_before": 27.5 + i / 3,
                          "psnr_gan_vs_mse_outside_after": None if i == 2 else 28.125 + i / 9}
    rep = {"images": len(keys), "after_key": "params_ema", "area_before": 320 * len(keys),
           "area_after": 100 * (len(keys) // 2), "area_change": -0.84375, "regions_before": len(keys),
           "removed_regions": len(keys), "removal_rate": 1.0, "images_with_new_regions": len(keys) // 2,
           "addition_rate": 0.5, "psnr_after_vs_before_outside": 32.123456789, "texture_kept": 2 / 3,
           "psnr_gan_vs_mse_outside_before": 28.0, "psnr_gan_vs_mse_outside_after": math.pi * 9,
           "per_image": per_image, "errors": {"broken <b>x</b>": "decode failed: <script>alert(1)</script>"}}
    (ev / "report.json").write_text(json.dumps(rep), "utf-8")
    return ev

