"""The resumable detection folder job (desra_fast.jobs.detect) in-process, with an oracle detector.

The oracle detector wraps tests/oracle.py (independent float64 OpenCV/scipy pipeline) in the
batch interface of ``desra_fast.jobs.detect.run_job(detect_fn=...)``; it never calls desra_fast code.
The helpers at the top are also used by tests/test_batch_kill.py (the real CLI, killed with SIGKILL).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest

from desra_fast import imageio
from desra_fast.jobs import JobError, JobResult
from desra_fast.jobs.detect import JobConfig, find_pairs, run_job

from images import synthetic_pair
from oracle import oracle_detect

# Small images with a small area threshold: masks are non-trivial but the tests stay fast.
AREA = 60


def oracle_batch_detect(gan, mse, seg=None, *, threshold=0.7, area_threshold=4000, window="gaussian",
                        backend="auto", return_counts=True, weights=None):
    """(N, H, W, 3) uint8/uint16 -> ((N, H, W) bool, (N,) int64 region counts) via the oracle."""
    masks, counts = [], []
    for i in range(gan.shape[0]):
        scale = 255.0 / 65535.0 if gan.dtype == np.uint16 else 1.0
        g = gan[i].astype(np.float64) * scale
        m = mse[i].astype(np.float64) * scale
        mask = oracle_detect(g, m, None if seg is None else seg[i], threshold, area_threshold, window, weights)
        masks.append(mask)
        counts.append(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1)
    out = np.stack(masks)
    return (out, np.asarray(counts, np.int64)) if return_counts else out


def write_rgb(path: Path, rgb: np.ndarray, params=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = []
    for k, v in (params or {}).items():
        flags += [k, v]
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags)
    assert ok, path


def make_dataset(root: Path, n_pairs: int = 36, classes: int = 4, seed: int = 0,
                 size_range: Tuple[int, int] = (64, 97), plant_bad: bool = True) -> Dict[str, List[str]]:
    """GAN/MSE folders root/gan, root/mse in nested class folders (ImageNet-val style).

    PNG (8- and 16-bit), JPEG and WebP; expected masks must be computed from the decoded files
    (see ``expected_masks``). With ``plant_bad``: a corrupt GAN file, a truncated MSE file, a GAN file
    without MSE partner, an MSE file without GAN partner and a size mismatch. Returns the keys of
    {"good": [...], "corrupt": [...], "unpaired": [...], "mismatch": [...]}."""
    rng = np.random.default_rng(seed)
    keys: Dict[str, List[str]] = {"good": [], "corrupt": [], "unpaired": [], "mismatch": []}
    for i in range(n_pairs):
        cls = f"n{1440764 + i % classes:08d}"
        key = f"{cls}/ILSVRC2012_val_{i:08d}"
        h, w = int(rng.integers(*size_range)), int(rng.integers(*size_range))
        if i % 3 == 0:  # some same-size pairs so that batching is exercised
            h, w = 80, 80
        gan, mse = synthetic_pair(h, w, seed=1000 * seed + i)
        ext, params = ".png", {}
        if i % 7 == 3:
            ext, params = ".webp", {cv2.IMWRITE_WEBP_QUALITY: 101}
        elif i % 7 == 4:
            ext, params = ".jpg", {cv2.IMWRITE_JPEG_QUALITY: 95}
        if i % 11 == 5:  # 16-bit PNG pair
            gan, mse = gan.astype(np.uint16) * 257, mse.astype(np.uint16) * 257
            ext, params = ".png", {}
        write_rgb(root / "gan" / (key + ext), gan, params)
        write_rgb(root / "mse" / (key + ext), mse, params)
        keys["good"].append(key)
    if plant_bad:
        g, m = synthetic_pair(70, 70, seed=99)
        (root / "gan" / "bad").mkdir(parents=True)
        (root / "mse" / "bad").mkdir(parents=True)
        (root / "gan" / "bad" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
        write_rgb(root / "mse" / "bad" / "corrupt.png", m)
        write_rgb(root / "gan" / "bad" / "truncated.png", g)
        write_rgb(root / "mse" / "bad" / "truncated.png", m)
        data = (root / "mse" / "bad" / "truncated.png").read_bytes()
        (root / "mse" / "bad" / "truncated.png").write_bytes(data[: len(data) // 2])
        write_rgb(root / "gan" / "bad" / "only_gan.png", g)
        write_rgb(root / "mse" / "bad" / "only_mse.png", m)
        write_rgb(root / "gan" / "bad" / "mismatch.png", g)
        write_rgb(root / "mse" / "bad" / "mismatch.png", m[:60])
        keys["corrupt"] = ["bad/corrupt", "bad/truncated"]
        keys["unpaired"] = ["bad/only_gan", "bad/only_mse"]
        keys["mismatch"] = ["bad/mismatch"]
    return keys


def read_pair_independently(root: Path, key: str) -> Tuple[np.ndarray, np.ndarray]:
    """Decode a pair with plain cv2 (not desra_fast.imageio) as RGB."""
    out = []
    for kind in ("gan", "mse"):
        (path,) = [p for p in (root / kind).glob(key + ".*")]
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out[0], out[1]


def expected_masks(root: Path, keys: List[str], area_threshold: int = AREA) -> Dict[str, np.ndarray]:
    out = {}
    for key in keys:
        g, m = read_pair_independently(root, key)
        out[key] = oracle_batch_detect(g[None], m[None], area_threshold=area_threshold)[0][0]
    return out


def read_manifest_lines(out: Path) -> List[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def run(root: Path, out: Path, detect_fn=oracle_batch_detect, **kw) -> JobResult:
    cfg = JobConfig(gan_dir=str(root / "gan"), mse_dir=str(root / "mse"), out_dir=str(out),
                          area_threshold=kw.pop("area_threshold", AREA), progress=False, **kw)
    return run_job(cfg, detect_fn=detect_fn)


def assert_masks_equal(out: Path, expected: Dict[str, np.ndarray]) -> None:
    for key, exp in expected.items():
        got = cv2.imread(str(out / (key + ".png")), cv2.IMREAD_UNCHANGED)
        assert got is not None, key
        assert got.dtype == np.uint8 and got.shape == exp.shape, key
        assert set(np.unique(got)) <= {0, 255}, key
        np.testing.assert_array_equal(got == 255, exp, err_msg=key)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    keys = make_dataset(root, n_pairs=14, classes=3, seed=1)
    return root, keys, expected_masks(root, keys["good"])


# ---------------------------------------------------------------------------------------------

def test_find_pairs_nested_unpaired_ambiguous(tmp_path):
    for kind, names in (("gan", ["a/x.png", "a/y.png", "b/z.jpg", "w.png", "w.webp"]),
                        ("mse", ["a/x.png", "a/y.webp", "b/z.png", "w.png", "v.png"])):
        for n in names:
            (tmp_path / kind / n).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / kind / n).write_bytes(b"")
    (tmp_path / "gan" / ".hidden.png").write_bytes(b"")
    (tmp_path / "gan" / "notes.txt").write_bytes(b"")
    pairs = {p.key: p for p in find_pairs(str(tmp_path / "gan"), str(tmp_path / "mse"))}
    assert sorted(pairs) == ["a/x", "a/y", "b/z", "v", "w"]
    assert pairs["a/y"].error is None and (pairs["a/y"].gan, pairs["a/y"].mse) == ("a/y.png", "a/y.webp")
    assert pairs["b/z"].mask == "b/z.png" and pairs["b/z"].overlay == "overlays/b/z.jpg"
    assert pairs["v"].error.startswith("missing partner")
    assert pairs["w"].error.startswith("ambiguous")


def test_job_writes_oracle_masks_and_manifest(small_dataset, tmp_path):
    root, keys, expected = small_dataset
    out = tmp_path / "out"
    res = run(root, out, workers=2, overlay=True)
    assert_masks_equal(out, expected)
    assert res.written == len(keys["good"]) and res.skipped == 0
    bad = keys["corrupt"] + keys["unpaired"] + keys["mismatch"]
    assert sorted(k[:-4] for k in res.failed) == sorted(bad)
    assert res.exit_code == 1
    lines = read_manifest_lines(out)
    assert len(lines) == len(keys["good"]) + len(bad)
    by_path = {r["path"]: r for r in lines}
    for key in keys["good"]:
        r = by_path[key + ".png"]
        assert r["error"] is None
        exp = expected[key]
        assert r["size"] == list(exp.shape)
        assert r["artifact_fraction"] == pytest.approx(exp.mean())
        assert r["regions"] == cv2.connectedComponents(exp.astype(np.uint8), connectivity=8)[0] - 1
        assert r["seconds"] > 0
        pic = cv2.imread(str(out / r["overlay"]))
        assert pic.shape == (exp.shape[0], 2 * exp.shape[1] + 8, 3)
    # non-trivial data: masks with different numbers of regions, none all-artifact
    assert len({by_path[k + ".png"]["regions"] for k in keys["good"]}) > 2
    assert all(by_path[k + ".png"]["artifact_fraction"] < 0.9 for k in keys["good"])
    assert "missing partner" in by_path["bad/only_gan.png"]["error"]
    assert "missing partner" in by_path["bad/only_mse.png"]["error"]
    assert "size mismatch" in by_path["bad/mismatch.png"]["error"]
    assert "not a decodable image" in by_path["bad/corrupt.png"]["error"]
    assert by_path["bad/truncated.png"]["error"]
    for bad_key in bad:
        assert not (out / (bad_key + ".png")).exists()
    assert not list(out.rglob("*" + imageio.TMP_SUFFIX))


def test_restart_skips_done_recovers_and_cleans(small_dataset, tmp_path):
    root, keys, expected = small_dataset
    out = tmp_path / "out"
    run(root, out, workers=1)
    lines = (out / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    # Simulate a kill: two masks lost (in flight), one mask written but its line missing, a torn
    # last line, stale temporary files.
    good = keys["good"]
    lost, unlogged = good[:2], good[2]
    for k in lost:
        (out / (k + ".png")).unlink()
    kept = [ln for ln in lines if json.loads(ln)["path"] not in {k + ".png" for k in [*lost, unlogged]}]
    (out / "manifest.jsonl").write_bytes(b"".join(kept) + b'{"path": "torn')
    stale = out / good[3].split("/")[0] / (".x.png.123.0" + imageio.TMP_SUFFIX)
    stale.write_bytes(b"partial")
    mtimes = {k: (out / (k + ".png")).stat().st_mtime_ns for k in good[2:]}

    res = run(root, out, workers=2)
    assert res.written == 2 and res.skipped == len(good) - 2 and res.recovered == 1
    assert res.stale_tmp_removed == 1 and not stale.exists()
    assert res.not_retried == 3  # corrupt, truncated, size mismatch (unpaired: found by planning)
    assert_masks_equal(out, expected)
    for k in good[2:]:  # complete masks were not rewritten
        assert (out / (k + ".png")).stat().st_mtime_ns == mtimes[k]
    recs = read_manifest_lines(out)  # the torn line was cut: every line parses
    paths = [r["path"] for r in recs]
    assert sorted(set(paths)) == sorted(paths)  # nothing logged twice
    assert {k + ".png" for k in good} <= set(paths)
    rec = {r["path"]: r for r in recs}[unlogged + ".png"]
    assert rec["recovered"] is True and rec["artifact_fraction"] == pytest.approx(expected[unlogged].mean())

    res = run(root, out, workers=2)  # nothing left to do
    assert res.written == 0 and res.skipped == len(good) and res.exit_code == 1
    assert len(read_manifest_lines(out)) == len(recs)


def test_retry_failed(small_dataset, tmp_path):
    root, keys, _ = small_dataset
    out = tmp_path / "out"
    run(root, out, workers=1)
    n = len(read_manifest_lines(out))
    res = run(root, out, workers=1, retry_failed=True)
    assert res.not_retried == 0 and len(res.failed) == 5 and res.written == 0
    assert len(read_manifest_lines(out)) == n + 3  # corrupt, truncated and mismatch tried again


def test_overlay_requested_later_completes_pairs(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, n_pairs=3, seed=2, plant_bad=False)
    out = tmp_path / "out"
    run(root, out, workers=1)
    res = run(root, out, workers=1, overlay=True)
    assert res.written == 3
    assert len(list((out / "overlays").rglob("*.jpg"))) == 3


def test_changed_settings_are_refused(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, n_pairs=2, seed=3, plant_bad=False)
    out = tmp_path / "out"
    run(root, out, workers=1)
    with pytest.raises(JobError, match="other settings"):
        run(root, out, workers=1, area_threshold=AREA + 1)


def test_detector_failure_is_isolated_per_pair(tmp_path):
    root = tmp_path / "data"
    keys = make_dataset(root, n_pairs=6, seed=4, plant_bad=False)

    def picky(gan, mse, seg=None, **kw):
        if gan.shape[1] == 80:
            raise ValueError("refusing 80-pixel-high images")
        return oracle_batch_detect(gan, mse, seg, **kw)

    out = tmp_path / "out"
    res = run(root, out, workers=2, detect_fn=picky)
    heights = {k: read_pair_independently(root, k)[0].shape[0] for k in keys["good"]}
    assert sorted(k[:-4] for k in res.failed) == sorted(k for k, h in heights.items() if h == 80)
    assert all(e == "refusing 80-pixel-high images" for e in res.failed.values())
    assert res.written == sum(h != 80 for h in heights.values())


def test_bad_folders_and_workers(tmp_path):
    with pytest.raises(JobError, match="not a directory"):
        run_job(JobConfig(str(tmp_path / "nope"), str(tmp_path), str(tmp_path / "o")))
    with pytest.raises(JobError, match="workers"):
        run_job(JobConfig(str(tmp_path), str(tmp_path), str(tmp_path / "o"), workers=0))


# ---------------------------------------------------------------------------------------------
# image io

def test_read_rgb_formats_and_depths(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_rgb(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(imageio.read_rgb(tmp_path / "a.png"), rgb)
    write_rgb(tmp_path / "a.webp", rgb, {cv2.IMWRITE_WEBP_QUALITY: 101})
    np.testing.assert_array_equal(imageio.read_rgb(tmp_path / "a.webp"), rgb)
    rgb16 = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    write_rgb(tmp_path / "b.png", rgb16)
    got = imageio.read_rgb(tmp_path / "b.png")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, rgb16)
    write_rgb(tmp_path / "c.jpg", rgb)
    assert imageio.read_rgb(tmp_path / "c.jpg").shape == (20, 30, 3)
    grey = rgb[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(imageio.read_rgb(tmp_path / "g.png"), np.stack([grey] * 3, -1))
    bgra = np.dstack([rgb[:, :, ::-1], np.full((20, 30), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "h.png"), bgra)
    np.testing.assert_array_equal(imageio.read_rgb(tmp_path / "h.png"), rgb)


def test_read_errors_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="bad.png"):
        imageio.read_rgb(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="missing.png"):
        imageio.read_rgb(tmp_path / "missing.png")
    cv2.imwrite(str(tmp_path / "l.png"), np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="single-channel"):
        imageio.read_labels(tmp_path / "l.png")


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "m.png"
    imageio.write_mask_png(target, np.eye(8, dtype=bool))
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        imageio.write_mask_png(target, np.ones((8, 8), bool))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]  # tmp file cleaned up
    np.testing.assert_array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), np.eye(8, dtype=np.uint8) * 255)


def test_overlay_picture():
    from desra_fast.overlay import GAP, make_overlay

    rng = np.random.default_rng(3)
    gan = rng.integers(0, 65536, (120, 160, 3), dtype=np.uint16)
    mse = (np.full((120, 160, 3), 40000, np.uint16))
    mask = np.zeros((120, 160), bool)
    mask[60:100, 80:140] = True
    pic = make_overlay(gan, mse, mask)
    assert pic.shape == (120, 2 * 160 + GAP, 3) and pic.dtype == np.uint8
    g8 = np.round(gan.astype(np.float64) * 255 / 65535)
    inside = pic[70:90, 90:130].astype(float) - g8[70:90, 90:130]
    assert inside[..., 0].mean() > 30 and inside[..., 1].mean() < -30  # tinted red
    np.testing.assert_array_equal(pic[110:, :50], g8[110:, :50].astype(np.uint8))  # untouched outside
    assert (pic[:, 160:160 + GAP] == 255).all()
    right = pic[:, 160 + GAP:]
    assert (right[70:90, 90:130] == round(40000 * 255 / 65535)).all()  # MSE side: outline only
    assert (right[60, 80:140] != round(40000 * 255 / 65535)).any()
    with pytest.raises(ValueError, match="mask shape"):
        make_overlay(gan, mse, mask[:10])


def test_output_inside_input_folder_and_progress_bar(tmp_path):
    import io

    root = tmp_path / "data"
    make_dataset(root, n_pairs=3, seed=6, plant_bad=False)
    out = root / "gan" / "masks"  # output inside the GAN folder: not taken for input on restart
    log = io.StringIO()
    cfg = JobConfig(gan_dir=str(root / "gan"), mse_dir=str(root / "mse"), out_dir=str(out),
                          area_threshold=AREA, progress=True, workers=1)
    res = run_job(cfg, detect_fn=oracle_batch_detect, log=log)
    assert res.written == 3 and res.exit_code == 0
    assert "img/s" in log.getvalue() and "3/3" in log.getvalue()  # tqdm bar: count, rate (ETA)
    res = run(root, out, workers=1)
    assert res.pairs == 3 and res.skipped == 3 and res.exit_code == 0


def test_backend_choice_fails_once_with_the_reason(monkeypatch):
    # The job asks desra_fast.backends once, before any pair, whether its backend can run here.
    import torch

    from desra_fast import detect
    from desra_fast.jobs.detect import make_detector

    assert make_detector("cpu") is detect and make_detector("auto") is detect
    with pytest.raises(JobError, match="unknown backend 'gpu'"):
        make_detector("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for backend in ("triton", "cuda"):
        with pytest.raises(JobError, match=f"--backend {backend}: .*needs a CUDA device.*use backend='cpu'"):
            make_detector(backend)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert callable(make_detector("triton"))  # the interpreter runs on CPU tensors
    with pytest.raises(JobError, match="--backend cuda: .*needs a CUDA device"):
        make_detector("cuda")
