"""Segmentation end to end: detect(seg=Segmenter), desra-fast segment / detect --seg-model /
calibrate --seg-model on the bundled real pairs, with a random-weight mmseg checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import desra_fast
import segformer_refs as refs
from images import SAMPLES, real_pair

from desra_fast.imageio import read_labels
from desra_fast.models import load_segmenter

SCALE = (512, 160)  # small network input: the pipeline is what is tested here


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model, cfg = refs.mmseg_model("b0", seed=7)
    path = tmp_path_factory.mktemp("segcli") / "segformer_b0.pth"
    refs.save_mmseg_checkpoint(model, cfg, path, layout="1.x")
    return path


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "desra_fast", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_detect_with_segmenter(ckpt):
    seg = load_segmenter(ckpt, scale=SCALE)
    gan, mse = (np.ascontiguousarray(x[:220, :300]) for x in real_pair("rocket"))
    labels = seg.segment(gan)
    # weights that make the labels matter: every class present gets a different weight
    w = np.linspace(0.9, 1.3, 150)
    np.testing.assert_array_equal(desra_fast.detect(gan, mse, seg, weights=w),
                                  desra_fast.detect(gan, mse, labels, weights=w))
    np.testing.assert_array_equal(desra_fast.detect(gan, mse, seg, weights=w, segment_source="mse"),
                                  desra_fast.detect(gan, mse, seg.segment(mse), weights=w))
    with pytest.raises(ValueError, match="segment_source"):
        desra_fast.detect(gan, mse, seg, segment_source="lr")


def test_cli_segment_job_and_detect_with_its_label_maps(ckpt, tmp_path):
    out = tmp_path / "seg"
    r = _cli("segment", "-i", SAMPLES / "gan", "-o", out, "--model", ckpt, "--scale", *SCALE, "--no-progress")
    assert r.returncode == 0, r.stderr
    seg = load_segmenter(ckpt, scale=SCALE)
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(x["path"] for x in lines) == ["motorcycle", "rocket"] and all(x["error"] is None for x in lines)
    for name in ("rocket", "motorcycle"):
        np.testing.assert_array_equal(read_labels(out / f"{name}.png"), seg.segment(real_pair(name)[0]))
    r = _cli("segment", "-i", SAMPLES / "gan", "-o", out, "--model", ckpt, "--scale", *SCALE, "--no-progress")
    assert r.returncode == 0 and "2 already done" in r.stderr
    r = _cli("segment", "-i", SAMPLES / "gan", "-o", out, "--model", ckpt, "--scale", 640, 200, "--no-progress")
    assert r.returncode == 1 and "settings" in r.stderr.lower()
    masks = tmp_path / "masks"
    r = _cli("detect", "--gan", SAMPLES / "gan", "--mse", SAMPLES / "mse", "--seg", out, "--out", masks, "--no-progress")
    assert r.returncode == 0, r.stderr


def test_cli_segment_bad_model(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    r = _cli("segment", "-i", SAMPLES / "gan", "-o", tmp_path / "o", "--model", bad)
    assert r.returncode == 1 and "truncated or corrupt" in r.stderr


def test_cli_calibrate_with_seg_model(ckpt, tmp_path):
    out = tmp_path / "w.tsv"
    r = _cli("calibrate", "--gan", SAMPLES / "gan", "--mse", SAMPLES / "mse", "--seg-model", ckpt, "-o", out,
             "--min-pixels", "100", "--scale", *SCALE)
    assert r.returncode == 0, r.stderr
    w = desra_fast.load_weights(str(out))
    seg = load_segmenter(ckpt, scale=SCALE)
    pairs = [real_pair(n) for n in ("motorcycle", "rocket")]
    cal = desra_fast.calibrate_weights(pairs, seg, min_pixels=100)
    np.testing.assert_array_equal(w, cal.weights)
    assert cal.calibrated.sum() >= 3
    gan, mse = pairs[1]
    desra_fast.detect(gan, mse, seg, weights=str(out))


def test_cli_detect_seg_model(ckpt, tmp_path):
    from desra_fast.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["detect"]
    if not any("--seg-model" in a.option_strings for a in sub._actions):
        pytest.skip("desra-fast detect has no --seg-model option in this checkout")
    out = tmp_path / "masks"
    r = _cli("detect", "--gan", SAMPLES / "gan", "--mse", SAMPLES / "mse", "--seg-model", ckpt, "--out", out,
             "--no-progress")
    assert r.returncode == 0, r.stderr
    seg = load_segmenter(ckpt)
    for name in ("rocket", "motorcycle"):
        gan, mse = real_pair(name)
        want = desra_fast.detect(gan, mse, seg)
        got = desra_fast.imageio.read_mask(out / f"{name}.png") > 0
        np.testing.assert_array_equal(got, want)
