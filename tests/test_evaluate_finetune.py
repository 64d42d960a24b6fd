"""``desra-fast evaluate-finetune``: each figure against an independent float64 restatement
(scipy labels, numpy sliding windows) on drawn masks and images; the EVAL layout; --after-key,
--json, --gt; clear errors for bad models, keys, scales and images; hostile file names; and the
report after a SIGKILL and a rerun byte-identical to an uninterrupted run's.

The models are tiny random RRDBNets (1 block, 8 features) on 16x16 LR images, so that a whole
evaluation takes a few seconds."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ndimage = pytest.importorskip("scipy.ndimage")

from desra_fast import metrics  # noqa: E402
from desra_fast.cli import main  # noqa: E402

# --------------------------------------------------------------------------------------------
# the figures, restated independently (float64, scipy / numpy only)

EIGHT = np.ones((3, 3), bool)  # 8-connectivity


def ref_regions(mask):
    lab, n = ndimage.label(mask, structure=EIGHT)
    return [lab == i for i in range(1, n + 1)]


def ref_psnr(a, b, outside):
    if not outside.any():
        return math.nan
    d = a.astype(np.float64)[outside] - b.astype(np.float64)[outside]
    mse = np.mean(d * d)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ref_texture(img, union):
    """(sum of 7x7 population std of the BT.601 grey over windows with no union pixel, windows)."""
    g = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    win = np.lib.stride_tricks.sliding_window_view(g.astype(np.float64), (7, 7))
    clean = ~np.lib.stride_tricks.sliding_window_view(union, (7, 7)).any(axis=(-2, -1))
    std = win.std(axis=(-2, -1))
    return float(std[clean].sum()), int(clean.sum())


def ref_figures(b_img, a_img, m_img, mb, ma):
    union = mb | ma
    out = ~union
    rb, ra = ref_regions(mb), ref_regions(ma)
    tb, n = ref_texture(b_img, union)
    ta, _ = ref_texture(a_img, union)
    return {"area_before": mb.mean(), "area_after": ma.mean(), "regions_before": len(rb),
            "regions_removed": sum(not (r & ma).any() for r in rb),
            "new_regions": sum(not (r & mb).any() for r in ra),
            "psnr_after_vs_before_outside": ref_psnr(a_img, b_img, out),
            "texture_kept": ta / tb if n and tb > 0 else math.nan,
            "psnr_gan_vs_mse_outside_before": ref_psnr(b_img, m_img, out),
            "psnr_gan_vs_mse_outside_after": ref_psnr(a_img, m_img, out),
            "_tex": (tb, ta, n), "_pix": (mb.sum(), ma.sum(), mb.size), "_out": (union, b_img, a_img, m_img)}


def drawn_case(rng, h=40, w=52):
    """Blob masks (rectangles and discs, some overlapping, some not) and images that differ
    inside and outside them."""
    yy, xx = np.mgrid[:h, :w]
    mb = np.zeros((h, w), bool)
    ma = np.zeros((h, w), bool)
    for m, k in ((mb, rng.integers(0, 4)), (ma, rng.integers(0, 4))):
        for _ in range(k):
            if rng.random() < 0.5:
                y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
                m[y:y + rng.integers(1, 9), x:x + rng.integers(1, 12)] = True
            else:
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 6)
                m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    base = rng.integers(0, 256, (h, w, 3))
    b_img = base.astype(np.uint8)
    a_img = np.clip(base + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
    m_img = np.clip(base // 2 + 60, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # a flat stretch: local std exactly 0 there
        b_img[: h // 2, : w // 2] = 77
        a_img[: h // 2, : w // 2] = 77
    return b_img, a_img, m_img, mb, ma


def close(x, y, rel=1e-9):
    if isinstance(y, float) and (math.isnan(y) or math.isinf(y)):
        return (math.isnan(x) and math.isnan(y)) or x == y
    return math.isclose(x, y, rel_tol=rel, abs_tol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_figures_match_an_independent_restatement(seed):
    rng = np.random.default_rng(seed)
    b_img, a_img, m_img, mb, ma = drawn_case(rng)
    got = metrics.finetune_figures(b_img, a_img, m_img, mb, ma)["figures"]
    ref = ref_figures(b_img, a_img, m_img, mb, ma)
    for k, v in got.items():
        assert close(float(v), float(ref[k])), (k, v, ref[k])
    # uint8 0/255 masks (as read back from the PNGs) give the same figures
    again = metrics.finetune_figures(b_img, a_img, m_img, mb.astype(np.uint8) * 255, ma.astype(np.uint8) * 255)
    assert again["figures"] == got


def test_figures_on_known_shapes():
    """Hand-checkable: two before-regions (one kept, one gone) and one new after-region."""
    h, w = 40, 40
    mb = np.zeros((h, w), bool)
    ma = np.zeros((h, w), bool)
    mb[2:6, 2:6] = True      # overlaps the after region below: kept
    mb[20:24, 30:34] = True  # no after pixel: removed
    ma[4:8, 4:8] = True
    ma[30:33, 2:5] = True    # touches no before region: new
    ma[10, 10] = True        # diagonal neighbours form one 8-connected region...
    ma[11, 11] = True
    img = np.full((h, w, 3), 100, np.uint8)
    fig = metrics.finetune_figures(img, img, img, mb, ma)["figures"]
    assert (fig["regions_before"], fig["regions_removed"], fig["new_regions"]) == (2, 1, 2)
    assert fig["psnr_after_vs_before_outside"] == math.inf
    assert math.isnan(fig["texture_kept"])  # flat image: no texture to keep
    assert fig["area_before"] == 32 / 1600 and fig["area_after"] == (16 + 9 + 2) / 1600


def test_pooled_figures_pool_pixels_not_images():
    rng = np.random.default_rng(3)
    cases = [drawn_case(rng, 30 + 10 * i, 44 - 4 * i) for i in range(4)]
    recs = [metrics.finetune_figures(*c) for c in cases]
    refs = [ref_figures(*c) for c in cases]
    pooled = metrics.pool_finetune_figures(recs)
    pb = sum(r["_pix"][0] for r in refs)
    pa = sum(r["_pix"][1] for r in refs)
    px = sum(r["_pix"][2] for r in refs)
    assert pooled["images"] == 4
    assert close(pooled["area_before"], pb / px) and close(pooled["area_after"], pa / px)
    assert close(pooled["area_change"], (pa / px) / (pb / px) - 1 if pb else math.nan)
    regions = sum(r["regions_before"] for r in refs)
    removed = sum(r["regions_removed"] for r in refs)
    assert (pooled["regions_before"], pooled["removed_regions"]) == (regions, removed)
    assert close(pooled["removal_rate"], removed / regions if regions else math.nan)
    added = sum(r["new_regions"] > 0 for r in refs)
    assert pooled["images_with_new_regions"] == added and close(pooled["addition_rate"], added / 4)
    # PSNR of all outside values of all images at once; texture ratio of the summed stds
    for name, (i, j) in (("psnr_after_vs_before_outside", (2, 1)), ("psnr_gan_vs_mse_outside_before", (1, 3)),
                         ("psnr_gan_vs_mse_outside_after", (2, 3))):
        d = np.concatenate([(r["_out"][i].astype(np.float64) - r["_out"][j])[~r["_out"][0]].ravel() for r in refs])
        assert close(pooled[name], 10 * math.log10(255.0 ** 2 / np.mean(d * d))), name
    tb = sum(r["_tex"][0] for r in refs)
    ta = sum(r["_tex"][1] for r in refs)
    assert close(pooled["texture_kept"], ta / tb)
    assert metrics.pool_finetune_figures([])["images"] == 0


def test_figures_refuse_bad_inputs():
    img = np.zeros((20, 20, 3), np.uint8)
    m = np.zeros((20, 20), bool)
    with pytest.raises(ValueError, match="sr_after"):
        metrics.finetune_figures(img, img[:10], img, m, m)
    with pytest.raises(ValueError, match="uint8"):
        metrics.finetune_figures(img, img.astype(np.float32), img, m, m)
    with pytest.raises(ValueError, match="mask_after"):
        metrics.finetune_figures(img, img, img, m, m[:5])


# --------------------------------------------------------------------------------------------
# the command

KEYS = ("a", "b", "sub/c", "sub/d")


def tiny(seed, scale=4):
    from desra_fast.models import RRDBNet

    torch.manual_seed(seed)
    return RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=scale)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("evft")
    rng = np.random.default_rng(0)
    lr = root / "lr"
    for key in KEYS:
        (lr / key).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(lr / f"{key}.png"), rng.integers(0, 256, (16, 18 + 2 * len(key), 3), dtype=np.uint8))
    models = {"before": root / "before.pth", "after": root / "ft.pth", "mse": root / "mse.pth"}
    torch.save({"params_ema": tiny(1).state_dict()}, models["before"])
    torch.save({"params_ema": tiny(2).state_dict(), "params": tiny(3).state_dict()}, models["after"])
    torch.save({"params": tiny(4).state_dict()}, models["mse"])
    return root, lr, models


def args(lr, models, out, *extra):
    # threshold above every D and no area limit: every pixel of the valid region is detected, so
    # the before/after masks, regions and figures are not empty
    return ["evaluate-finetune", "--before", str(models["before"]), "--after", str(models["after"]),
            "--lr", str(lr), "--mse-model", str(models["mse"]), "--out", str(out), "--threshold", "1.01",
            "--area-threshold", "0", "--no-progress", "--workers", "1", *extra]


@pytest.fixture(scope="module")
def reference(data):
    root, lr, models = data
    out = root / "ref"
    assert main(args(lr, models, out, "--after-key", "params")) == 0
    return out


def test_layout_and_figures_from_the_saved_images(data, reference):
    import cv2

    root, lr, models = data
    rep = json.loads((reference / "report.json").read_text())
    assert rep["images"] == len(KEYS) and rep["after_key"] == "params" and rep["errors"] == {}
    assert sorted(rep["per_image"]) == sorted(KEYS)
    for key in KEYS:
        h, w = cv2.imread(str(lr / f"{key}.png")).shape[:2]
        for d in ("sr/before", "sr/after", "sr/mse"):
            assert cv2.imread(str(reference / d / f"{key}.png")).shape == (4 * h, 4 * w, 3)
        masks = {}
        for d in ("before", "after"):
            m = cv2.imread(str(reference / d / f"{key}.png"), cv2.IMREAD_GRAYSCALE)
            assert m.shape == (4 * h, 4 * w) and set(np.unique(m)) <= {0, 255}
            masks[d] = m == 255
        pic = cv2.imread(str(reference / "compare" / f"{key}.jpg"))
        assert pic.shape[1] == 3 * 4 * w + 16
        sr = {d: cv2.imread(str(reference / "sr" / d / f"{key}.png"))[..., ::-1] for d in ("before", "after", "mse")}
        ref = ref_figures(sr["before"], sr["after"], sr["mse"], masks["before"], masks["after"])
        for k, v in rep["per_image"][key].items():
            r = float(ref[k])
            assert (v is None and not math.isfinite(r)) or close(float(v), r), (key, k, v, r)
    assert rep["area_before"] > 0.3 and rep["regions_before"] == len(KEYS)


def test_after_key_picks_the_checkpoint_entry(data, reference, tmp_path):
    import cv2

    from desra_fast.models import load_sr

    root, lr, models = data
    img = cv2.imread(str(lr / "a.png"))[..., ::-1].copy()
    # the evaluation runs the torch modules in fp32 (not load_sr's default runtime, which may be
    # another engine within one level): the same call here gives the same bytes
    want = {k: load_sr(models["after"], key=k, runtime="torch").upscale(img, precision="fp32").astype(int)
            for k in ("params", "params_ema")}
    assert np.abs(want["params"] - want["params_ema"]).max() > 10  # the two entries are told apart
    for key, other in (("params", "params_ema"), ("params_ema", "params")):
        out = reference if key == "params" else tmp_path / "ema"
        if key == "params_ema":
            assert main(args(lr, models, out, "--after-key", "params_ema", "--list", str(_list(tmp_path, "a")))) == 0
        got = cv2.imread(str(out / "sr" / "after" / "a.png"))[..., ::-1].astype(int)
        assert np.array_equal(got, want[key]), key
        assert np.abs(got - want[other]).max() > 10, key
        assert json.loads((out / "report.json").read_text())["after_key"] == key
    # default: what load_sr picks (params_ema)
    out = tmp_path / "default"
    assert main(args(lr, models, out, "--list", str(_list(tmp_path, "a")))) == 0
    assert json.loads((out / "report.json").read_text())["after_key"] == "params_ema"


def _list(tmp_path, *names):
    p = tmp_path / "list.txt"
    p.write_text("".join(n + "\n" for n in names))
    return p


def test_json_to_stdout_and_to_a_file(data, reference, tmp_path, capsys):
    root, lr, models = data
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(reference, out)
    capsys.readouterr()
    assert main(args(lr, models, out, "--after-key", "params", "--json")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((reference / "report.json").read_text())
    assert main(args(lr, models, out, "--after-key", "params", "--json", "-")) == 0
    assert json.loads(capsys.readouterr().out) == printed
    dest = tmp_path / "r.json"
    assert main(args(lr, models, out, "--after-key", "params", "--json", str(dest))) == 0
    assert dest.read_bytes() == (reference / "report.json").read_bytes()
    assert "report" in capsys.readouterr().out  # the human summary still printed


def test_gt_iou_figures(data, reference, tmp_path):
    import cv2

    root, lr, models = data
    gt = tmp_path / "gt"
    rng = np.random.default_rng(1)
    ious = []
    for key in ("a", "sub/c"):
        m = cv2.imread(str(reference / "before" / f"{key}.png"), cv2.IMREAD_GRAYSCALE)
        g = np.zeros_like(m)
        y, x = rng.integers(0, m.shape[0] // 2), rng.integers(0, m.shape[1] // 2)
        g[y:y + 30, x:x + 40] = 255
        (gt / key).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(gt / f"{key}.png"), g)
        p, q = (m == 255)[5:-5, 5:-5], (g == 255)[5:-5, 5:-5]  # the authors' 5-px crop
        ious.append((p & q).sum() / (p | q).sum())
    out = tmp_path / "ev"
    import shutil

    shutil.copytree(reference, out)
    assert main(args(lr, models, out, "--after-key", "params", "--gt", str(gt))) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["gt_images"] == 2 and rep["gt_errors"] == {}
    assert close(rep["iou_before"], float(np.mean(ious)))
    assert rep["iou_after"] is not None and rep["removal_rate_vs_gt"] is not None


def test_bad_models_keys_and_scales(data, tmp_path, capsys):
    root, lr, models = data
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    x2 = tmp_path / "x2.pth"
    torch.save({"params_ema": tiny(5, scale=2).state_dict()}, x2)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "evil.pth"
    torch.save({"params_ema": Evil()}, evil)
    cases = [
        ({"after": tmp_path / "missing.pth"}, [], "missing.pth"),
        ({"after": bad}, [], "bad.pth"),
        ({"before": evil}, [], "evil.pth"),
        ({"mse": x2}, [], "different factors"),
        ({"before": models["after"], "after": models["before"]}, ["--after-key", "params"], "'params'"),
    ]
    for i, (swap, extra, needle) in enumerate(cases):
        ms = dict(models, **swap)
        assert main(args(lr, ms, tmp_path / f"o{i}", *extra)) == 1
        err = capsys.readouterr().err
        assert needle in err, (needle, err)
        assert "Traceback" not in err
    assert not marker.exists()  # the malicious pickle was refused, not run


def test_bad_images_and_hostile_names_are_recorded(data, tmp_path, capsys):
    import cv2

    root, lr, models = data
    src = tmp_path / "lr"
    src.mkdir()
    rng = np.random.default_rng(2)
    names = ["-rf NaN Infinity", "sp ace\u00e9\u6f22", "quote\"'back\\slash", "new\nline",
             os.fsdecode(b"not utf-8 \xff\xfe"), "ok"]
    for n in names:
        png = cv2.imencode(".png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))[1].tobytes()
        with open(os.fsencode(src / f"{n}.png"), "wb") as fh:
            fh.write(png)
    (src / "trunc.png").write_bytes((src / "ok.png").read_bytes()[:40])
    (src / "tiny.png").write_bytes(cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes())
    (src / "twice.png").write_bytes((src / "ok.png").read_bytes())
    (src / "twice.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    out = tmp_path / "ev"
    assert main(args(src, models, out)) == 1
    rep = json.loads((out / "report.json").read_text())
    assert sorted(rep["per_image"]) == sorted(names)
    assert sorted(rep["errors"]) == ["tiny", "trunc", "twice"]
    assert "trunc.png" in rep["errors"]["trunc"] and "ambiguous" in rep["errors"]["twice"]
    for n in names:
        assert (out / "sr" / "after" / f"{n}.png").is_file() and (out / "compare" / f"{n}.jpg").is_file()
    assert (out / "report.json").read_bytes().isascii()  # undecodable bytes escaped, JSON still valid
    err = capsys.readouterr().err
    assert "trunc" in err and "Traceback" not in err


def test_lost_manifest_lines_and_half_written_items_give_the_same_report(data, reference, tmp_path):
    """Killed between a rename and the manifest append, or between two renames: the rerun
    recovers the figures from the saved PNGs and redoes the unfinished image."""
    import shutil

    root, lr, models = data
    out = tmp_path / "ev"
    shutil.copytree(reference, out)
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    (out / "manifest.jsonl").write_text(lines[0] + lines[1][:20])  # two lines lost, one torn
    (out / "before" / "sub" / "d.png").unlink()                     # d: completion marker missing
    (out / "report.json").unlink()
    assert main(args(lr, models, out, "--after-key", "params")) == 0
    assert (out / "report.json").read_bytes() == (reference / "report.json").read_bytes()


def test_sigkill_then_rerun_gives_the_uninterrupted_report(data, reference, tmp_path):
    root, lr, models = data
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "desra_fast", *args(lr, models, out, "--after-key", "params")]
    env = dict(os.environ)  # the reference's thread count: same convolution order, same bytes
    killed_mid_run = False
    for attempt in range(2):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 120
        manifest = out / "manifest.jsonl"
        # kill once the first image is complete (the next ones are then being computed or written)
        while proc.poll() is None and time.monotonic() < deadline and (
                not manifest.is_file() or manifest.read_text().count("\n") < 1 + attempt):
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            killed_mid_run = killed_mid_run or not (out / "report.json").exists()
        else:
            proc.wait()
    assert killed_mid_run, "the job finished before the kill: the test did not test a kill"
    assert subprocess.run(cmd, capture_output=True, env=env, timeout=300).returncode == 0
    assert (out / "report.json").read_bytes() == (reference / "report.json").read_bytes()
    assert not [p for p in out.rglob("*") if p.name.endswith(".desra-tmp")]
    done = [json.loads(x)["path"] for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(set(done)) == sorted(KEYS)


def test_list_selects_images_and_reports_missing_ones(data, reference, tmp_path):
    import shutil

    root, lr, models = data
    out = tmp_path / "ev"
    shutil.copytree(reference, out)
    lst = tmp_path / "val.txt"
    lst.write_text("a\n./sub/c.png\nmissing.png\n../escape\n")
    assert main(args(lr, models, out, "--after-key", "params", "--list", str(lst))) == 1
    rep = json.loads((out / "report.json").read_text())
    assert sorted(rep["per_image"]) == ["a", "sub/c"] and rep["images"] == 2
    assert sorted(rep["errors"]) == ["../escape", "missing"] and "--list" in rep["errors"]["missing"]
    full = json.loads((reference / "report.json").read_text())
    assert rep["per_image"]["a"] == full["per_image"]["a"]
    assert not (tmp_path / "escape.png").exists() and not (out / "sr" / "escape.png").exists()


def test_other_runtime_stays_within_one_level_of_torch(data, reference, tmp_path):
    import cv2

    from desra_fast.runtime import runtime_status

    ok, why = runtime_status("openvino", "cpu")
    if not ok:
        pytest.skip(f"OpenVINO unavailable: {why}")
    root, lr, models = data
    out = tmp_path / "ov"
    assert main(args(lr, models, out, "--after-key", "params", "--runtime", "openvino",
                     "--list", str(_list(tmp_path, "a")))) == 0
    for d in ("sr/before", "sr/after", "sr/mse"):
        got = cv2.imread(str(out / d / "a.png")).astype(int)
        ref = cv2.imread(str(reference / d / "a.png")).astype(int)
        assert np.abs(got - ref).max() <= 1, d
    # a resume with another runtime is refused (its SR images may differ by a level)
    assert main(args(lr, models, out, "--after-key", "params", "--list", str(_list(tmp_path, "a")))) == 1


def test_reuse_sr_reads_the_before_and_mse_images_of_another_evaluation(data, reference, tmp_path, capsys):
    import shutil

    import cv2

    root, lr, models = data
    lst = str(_list(tmp_path, "a", "b"))
    plain = tmp_path / "plain"
    assert main(args(lr, models, plain, "--after-key", "params_ema", "--list", lst)) == 0
    reused = tmp_path / "reused"
    assert main(args(lr, models, reused, "--after-key", "params_ema", "--list", lst,
                     "--reuse-sr", str(reference))) == 0
    assert (reused / "report.json").read_bytes() == (plain / "report.json").read_bytes()
    # the images are read, not recomputed: a planted MSE-SR image shows up in the output
    other = tmp_path / "other"
    shutil.copytree(reference, other)
    planted = np.full_like(cv2.imread(str(other / "sr" / "mse" / "a.png")), 9)
    cv2.imwrite(str(other / "sr" / "mse" / "a.png"), planted)
    out = tmp_path / "planted"
    assert main(args(lr, models, out, "--list", lst, "--reuse-sr", str(other))) == 0
    assert np.array_equal(cv2.imread(str(out / "sr" / "mse" / "a.png")), planted)
    # a folder made with another MSE model, or not an evaluation at all: refused
    ms = dict(models, mse=models["before"])
    assert main(args(lr, ms, tmp_path / "x", "--list", lst, "--reuse-sr", str(reference))) == 1
    assert "--reuse-sr" in capsys.readouterr().err
    assert main(args(lr, models, tmp_path / "y", "--list", lst, "--reuse-sr", str(lr))) == 1
    assert "not an evaluate-finetune output folder" in capsys.readouterr().err
