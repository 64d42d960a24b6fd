"""A_k calibration against numpy.percentile on the bundled real (GAN-SR, MSE-SR) pairs."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import desra_fast
from desra_fast.calibrate import BIN_WIDTH, calibrate_weights, write_weights_tsv
from images import SAMPLES, blocky_seg, real_pair

NAMES = ("rocket", "motorcycle")


def _data():
    pairs = [real_pair(n) for n in NAMES]
    # label maps with classes of very different sizes (a few large blocks, many small ones)
    segs = [blocky_seg(*p[0].shape[:2], seed=i, block=37, labels=[2, 4, 12, 21, 60, 90, 149][: 4 + 3 * i])
            for i, p in enumerate(pairs)]
    return pairs, segs


def _reference(pairs, segs, q):
    """numpy.percentile of the float64-promoted D over each class's pixels of all images."""
    per = {}
    for (g, m), s in zip(pairs, segs):
        d = desra_fast.d_map(g, m)
        lab = s[5:-5, 5:-5]
        for k in np.unique(lab):
            per.setdefault(int(k), []).append(d[lab == k])
    return {k: (float(np.percentile(np.concatenate(v).astype(np.float64), q)), sum(x.size for x in v))
            for k, v in per.items()}


@pytest.mark.parametrize("q", [85, 50, 3.7])
def test_percentiles_match_numpy(q):
    pairs, segs = _data()
    ref = _reference(pairs, segs, q)
    exact = calibrate_weights(pairs, segs, percentile=q, bins=None, exact=True, min_pixels=1)
    hist = calibrate_weights(pairs, segs, percentile=q, bins=None, min_pixels=1)
    assert set(np.flatnonzero(exact.calibrated)) == set(ref)
    for k, (want, n) in ref.items():
        assert exact.pixels[k] == n
        assert abs(exact.a[k] - want) <= 1e-12, (k, exact.a[k], want)
        assert abs(hist.a[k] - want) <= BIN_WIDTH, (k, hist.a[k], want)
        assert exact.weights[k] == pytest.approx(1 / max(want, 0.05), rel=1e-12)


def test_rounding_unseen_classes_and_tsv(tmp_path):
    pairs, segs = _data()
    cal = calibrate_weights(pairs, segs, percentile=85, bins=20, min_pixels=1)
    ref = _reference(pairs, segs, 85)
    default = desra_fast.load_weights()
    for k in range(150):
        if k in ref:
            b = int(np.clip(np.round(20 * (1 - ref[k][0])), 0, 19))
            assert cal.bins[k] == b and cal.weights[k] == 20 / (20 - b)
        else:
            assert cal.weights[k] == default[k] and not cal.calibrated[k]
    few = calibrate_weights(pairs, segs, min_pixels=10 ** 9)
    np.testing.assert_array_equal(few.weights, default)
    path = tmp_path / "w.tsv"
    cal.to_tsv(path)
    lines = path.read_text().splitlines()
    assert lines[0] == "label\tname\tbin\tweight" and lines[3].startswith("2\tsky\t")
    np.testing.assert_array_equal(desra_fast.load_weights(str(path)), cal.weights)
    g, m = pairs[0]
    np.testing.assert_array_equal(desra_fast.detect(g, m, segs[0], weights=str(path)),
                                  desra_fast.detect(g, m, segs[0], weights=cal.weights))
    unrounded = calibrate_weights(pairs, segs, bins=None, min_pixels=1)
    write_weights_tsv(tmp_path / "u.tsv", unrounded.weights)
    np.testing.assert_allclose(desra_fast.load_weights(tmp_path / "u.tsv"), unrounded.weights, rtol=1e-8)
    # the shipped table reads back bit for bit
    shipped = SAMPLES.parent / "desra_fast" / "data" / "ade20k_semantic_weights.tsv"
    np.testing.assert_array_equal(desra_fast.load_weights(shipped), default)


def test_bad_inputs(tmp_path):
    pairs, segs = _data()
    with pytest.raises(ValueError, match="fewer label maps"):
        calibrate_weights(pairs, segs[:1])
    with pytest.raises(ValueError, match="shape"):
        calibrate_weights(pairs, [s[:-1] for s in segs])
    with pytest.raises(ValueError, match="percentile"):
        calibrate_weights(pairs, segs, percentile=101)
    with pytest.raises(TypeError, match="twice"):
        calibrate_weights(iter(pairs), segs, exact=True)
    with pytest.raises(ValueError, match="0..149"):
        calibrate_weights(pairs[:1], [np.full(segs[0].shape, 150, np.uint8)])
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\tname\tbin\tweight\n0\twall\t1\n")
    with pytest.raises(ValueError, match="not a weights table"):
        desra_fast.load_weights(str(bad))


def test_cli_calibrate_with_label_maps(tmp_path):
    from desra_fast.models.segmenter import save_label_png

    pairs, segs = _data()
    seg_dir = tmp_path / "seg"
    for n, s in zip(NAMES, segs):
        save_label_png(seg_dir / f"{n}.png", s)
    out = tmp_path / "w.tsv"
    r = subprocess.run([sys.executable, "-m", "desra_fast", "calibrate", "--gan", str(SAMPLES / "gan"),
                        "--mse", str(SAMPLES / "mse"), "--seg", str(seg_dir), "-o", str(out), "--exact",
                        "--min-pixels", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cal = calibrate_weights(pairs, segs, exact=True, min_pixels=1)
    np.testing.assert_array_equal(desra_fast.load_weights(str(out)), cal.weights)
    assert "2 image" in r.stderr
