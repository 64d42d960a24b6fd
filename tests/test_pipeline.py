"""``desra-fast run`` / ``desra_fast.pipeline.run`` and ``desra-fast select`` on the local engine.

SR models here are tiny RRDBNets (BasicSR layout, saved as official ``.pth`` checkpoints) with
weights set by hand so that their output is known without running desra_fast: the MSE model is
an exact nearest-neighbour x4 upscaler (identity convolutions, body switched off), the GAN model
the same plus random texture from its body. So the SR stage is checked against ``np.repeat`` of
the independently decoded LR, and the masks against the float64 oracle (tests/oracle.py) on the
SR outputs the job wrote. The real-weight run (Real-ESRGAN x4plus + SRMD x4) is at the end.
The helpers at the top are shared with tests/test_pipeline_ray.py and test_pipeline_kill.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from desra_fast import pipeline  # noqa: E402
from desra_fast.cli import main  # noqa: E402
from desra_fast.jobs import JobError  # noqa: E402
from desra_fast.models import RRDBNet  # noqa: E402

from images import photo  # noqa: E402
from oracle import oracle_detect  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AREA = 20   # small area threshold: the 4x outputs of the crops are ~130x170 px
SCALE = 4


def identity_rrdbnet(texture: float, seed: int, num_feat: int = 8, num_block: int = 1) -> RRDBNet:
    """x4 RRDBNet that upscales by nearest neighbour exactly; the body's output, scaled by
    ``texture``, adds (random, content-dependent) texture on top."""
    torch.manual_seed(seed)
    net = RRDBNet(num_feat=num_feat, num_block=num_block, num_grow_ch=4)
    with torch.no_grad():
        for name in ("conv_first", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
            conv = getattr(net, name)
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(3):
                conv.weight[c, c, 1, 1] = 1.0
        net.conv_body.weight.mul_(texture)
        net.conv_body.bias.zero_()
    return net


def save_models(d: Path, **kw) -> Dict[str, str]:
    paths = {}
    for name, tex in (("gan", 3.0), ("mse", 0.0)):
        paths[name] = str(d / f"{name}.pth")
        torch.save({"params_ema": identity_rrdbnet(tex, seed=1, **kw).state_dict()}, paths[name])
    return paths


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return save_models(tmp_path_factory.mktemp("models"))


def _write(path: Path, bgr: np.ndarray, params=()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr, list(params)), path


def make_lr_folder(root: Path, n: int = 10, seed: int = 0, bad: bool = True, formats: bool = True) -> Dict[str, List[str]]:
    """LR crops of real photos, ImageNet style: class folders ``n0144076x/ILSVRC2012_val_*.JPEG``
    and flat ``ILSVRC2012_val_*.png`` names, some of one size (batching). With ``formats``: a
    CMYK JPEG, a grey JPEG, a 16-bit PNG, an RGBA PNG; with ``bad``: a zero-byte, a truncated and
    a corrupt file. Returns {"good": [rel paths], "bad": [rel paths], "cmyk": [...], "grey": [...]}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = ("rocket", "coffee", "chelsea", "astronaut")
    out = {"good": [], "bad": [], "cmyk": [], "grey": [], "16bit": []}
    for i in range(n):
        img = photo(names[i % len(names)])
        h, w = (32, 40) if i % 3 == 0 else (int(rng.integers(28, 44)), int(rng.integers(28, 44)))
        y, x = int(rng.integers(0, img.shape[0] - 4 * h)), int(rng.integers(0, img.shape[1] - 4 * w))
        crop = cv2.resize(img[y:y + 4 * h, x:x + 4 * w], (w, h), interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
        if i % 2 == 0:
            rel = f"n0144076{i % 3}/ILSVRC2012_val_{i + 1:08d}.JPEG"
            _write(root / rel, bgr, (cv2.IMWRITE_JPEG_QUALITY, 92))
        else:
            rel = f"ILSVRC2012_val_{i + 1:08d}.png"
            _write(root / rel, bgr)
        out["good"].append(rel)
    if formats:
        base = cv2.resize(photo("coffee")[100:260, 100:300], (50, 40), interpolation=cv2.INTER_AREA)
        rel = "n01440764/ILSVRC2012_val_00000901.JPEG"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(base).convert("CMYK").save(root / rel, quality=92)
        out["cmyk"].append(rel)
        rel = "n01440764/ILSVRC2012_val_00000902.JPEG"
        Image.fromarray(base[..., 1]).save(root / rel, quality=92)
        out["grey"].append(rel)
        rel = "ILSVRC2012_val_00000903.png"
        _write(root / rel, cv2.cvtColor(base, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257 + 3)
        out["16bit"].append(rel)
        rel = "ILSVRC2012_val_00000904.png"
        _write(root / rel, np.dstack([cv2.cvtColor(base, cv2.COLOR_RGB2BGR), np.full(base.shape[:2], 128, np.uint8)]))
        out["good"] += out["cmyk"] + out["grey"] + out["16bit"] + [rel]
    if bad:
        (root / "ILSVRC2012_val_00000990.JPEG").write_bytes(b"")
        _write(root / "ILSVRC2012_val_00000991.JPEG", cv2.cvtColor(photo("rocket")[:64, :64], cv2.COLOR_RGB2BGR))
        data = (root / "ILSVRC2012_val_00000991.JPEG").read_bytes()
        (root / "ILSVRC2012_val_00000991.JPEG").write_bytes(data[: len(data) // 3])
        (root / "n01440764" / "ILSVRC2012_val_00000992.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 20)
        out["bad"] = ["ILSVRC2012_val_00000990.JPEG", "ILSVRC2012_val_00000991.JPEG",
                      "n01440764/ILSVRC2012_val_00000992.JPEG"]
    return out


def decode_lr_independently(path: Path) -> np.ndarray:
    """RGB of an LR file with PIL (not desra_fast.imageio); 16-bit PNGs through cv2."""
    from PIL import Image

    if path.suffix == ".png":
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img.dtype == np.uint16:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def key(rel: str) -> str:
    return rel.rsplit(".", 1)[0]


def read_manifest(out: Path) -> List[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def read_rgb_cv2(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def output_files(out: Path) -> Dict[str, bytes]:
    """Every output file (masks, SR pairs, overlays) by relative path, bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.name != "manifest.jsonl"}


def run_cmd(lr: Path, out: Path, models, *extra) -> List[str]:
    return [sys.executable, "-m", "desra_fast", "run", "--lr", str(lr), "--gan-model", models["gan"],
            "--mse-model", models["mse"], "--out", str(out), "--area-threshold", str(AREA),
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def lr_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("lr")
    return root, make_lr_folder(root)


@pytest.fixture(scope="module")
def full_run(lr_folder, tiny_models, tmp_path_factory):
    root, _ = lr_folder
    out = tmp_path_factory.mktemp("run") / "out"
    res = pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(out), area_threshold=AREA,
                       save_sr="png", overlay=True, batch=3, progress=False)
    return out, res


# ---------------------------------------------------------------------------------------------

def test_run_sr_outputs_masks_manifest(lr_folder, full_run):
    root, files = lr_folder
    out, res = full_run
    assert res.exit_code == 1  # planted bad inputs
    assert sorted(p[len("masks/"):] for p in res.failed) == sorted(key(r) + ".png" for r in files["bad"])
    recs = {r["path"]: r for r in read_manifest(out)}
    assert len(recs) == len(files["good"]) + len(files["bad"])
    assert "empty file" in recs["masks/ILSVRC2012_val_00000990.png"]["error"]
    assert "not a decodable image" in recs["masks/n01440764/ILSVRC2012_val_00000992.png"]["error"]
    assert recs["masks/ILSVRC2012_val_00000991.png"]["error"]
    nonempty = 0
    for rel in files["good"]:
        k = key(rel)
        lr = decode_lr_independently(root / rel)
        mse = read_rgb_cv2(out / "mse" / f"{k}.png")
        gan = read_rgb_cv2(out / "gan" / f"{k}.png")
        assert mse.dtype == lr.dtype and gan.dtype == lr.dtype, rel  # 16-bit stays 16-bit
        # the MSE model is exact nearest-neighbour x4; CMYK JPEGs: OpenCV vs PIL colour conversion
        tol = 2 * (257 if lr.dtype == np.uint16 else 1) if rel in files["cmyk"] else 0
        np.testing.assert_allclose(mse.astype(int), lr.repeat(SCALE, 0).repeat(SCALE, 1).astype(int), atol=tol,
                                   err_msg=rel)
        scale = 255 / 65535 if gan.dtype == np.uint16 else 1.0
        expected = oracle_detect(gan.astype(np.float64) * scale, mse.astype(np.float64) * scale,
                                 area_threshold=AREA)
        mask = cv2.imread(str(out / "masks" / f"{k}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask == 255, expected, err_msg=rel)
        assert set(np.unique(mask)) <= {0, 255}
        r = recs[f"masks/{k}.png"]
        assert r["error"] is None and r["lr"] == rel and r["size"] == list(mask.shape)
        assert r["lr_size"] == list(lr.shape[:2])
        assert r["artifact_fraction"] == pytest.approx(expected.mean())
        n, _, st, _ = cv2.connectedComponentsWithStats(expected.astype(np.uint8), connectivity=8)
        assert r["regions"] == n - 1 and r["areas"] == sorted(st[1:, cv2.CC_STAT_AREA].tolist(), reverse=True)
        assert 0 < r["d"]["min"] <= r["d"]["p1"] <= r["d"]["p5"] <= r["d"]["mean"] <= 1.0 + 1e-6
        assert set(r["timings"]) >= {"decode", "gan", "mse", "detect", "write"}
        assert (out / "overlays" / f"{k}.jpg").is_file()
        nonempty += bool(expected.any())
    assert nonempty >= 3 and nonempty < len(files["good"])  # non-trivial masks


def test_masks_equal_detect_on_the_written_sr_outputs(full_run, tmp_path):
    out, _ = full_run
    det = tmp_path / "det"
    assert main(["detect", "--gan", str(out / "gan"), "--mse", str(out / "mse"), "--out", str(det),
                 "--area-threshold", str(AREA), "--no-progress"]) == 0
    masks = {str(p.relative_to(out / "masks")): p.read_bytes() for p in (out / "masks").rglob("*.png")}
    assert masks and masks == {str(p.relative_to(det)): p.read_bytes() for p in det.rglob("*.png")}


def test_batching_and_engines_agree_and_restart_is_a_noop(lr_folder, full_run, tiny_models, tmp_path):
    root, files = lr_folder
    out, _ = full_run
    other = tmp_path / "b1"
    res = pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(other), area_threshold=AREA,
                       save_sr="png", overlay=True, batch=1, workers=1, progress=False)
    assert res.written == len(files["good"])
    assert output_files(other) == output_files(out)  # batch 3 vs batch 1: same bytes
    res = pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(other), area_threshold=AREA,
                       save_sr="png", overlay=True, progress=False)
    assert res.written == 0 and res.skipped == len(files["good"]) and res.not_retried == len(files["bad"])
    with pytest.raises(JobError, match="other settings"):
        pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(other), area_threshold=AREA + 1)
    with pytest.raises(JobError, match="other settings"):  # other weights under the same file name
        pipeline.run(str(root), tiny_models["mse"], tiny_models["mse"], str(other), area_threshold=AREA)


def test_select_then_only_regenerates_the_sr_pairs(lr_folder, full_run, tiny_models, tmp_path):
    root, _ = lr_folder
    out, _ = full_run
    recs = [r for r in read_manifest(out) if r["error"] is None]
    with_regions = sorted((r for r in recs if r["regions"] > 0), key=lambda r: (-r["artifact_fraction"], r["path"]))
    lists = tmp_path / "lists"
    assert main(["select", "--run", str(out), "--top", "4", "--train", "1", "-o", str(lists)]) == 0
    train = (lists / "train.txt").read_text().split()
    val = (lists / "val.txt").read_text().split()
    top = [r["lr"] for r in with_regions[:4]]
    assert len(top) == 4 and sorted(train + val) == sorted(top) and len(train) == 1 and not set(train) & set(val)
    assert (lists / "ranking.tsv").read_text().splitlines()[1].endswith(top[0])
    assert main(["select", "--run", str(out), "--top", "3", "--train", "3", "--by", "regions", "-o",
                 str(tmp_path / "l2")]) == 0
    by_regions = sorted((r for r in recs if r["regions"] > 0), key=lambda r: (-r["regions"], r["path"]))
    assert (tmp_path / "l2" / "train.txt").read_text().split() == sorted([r["lr"] for r in by_regions[:3]],
                                                                        key=[r["lr"] for r in by_regions].index)

    # run --only train+val --save-sr png in a fresh folder: exactly those images, same bytes
    again = tmp_path / "again"
    rc = main(["run", "--lr", str(root), "--gan-model", tiny_models["gan"], "--mse-model", tiny_models["mse"],
               "--out", str(again), "--area-threshold", str(AREA), "--save-sr", "png", "--overlay",
               "--only", str(lists / "val.txt"), "--no-progress"])
    assert rc == 0
    got = output_files(again)
    assert {p.split("/", 1)[1].rsplit(".", 1)[0] for p in got} == {key(r) for r in val}
    ref = output_files(out)
    assert all(ref[p] == b for p, b in got.items())
    # --limit takes the first N (sorted) of the folder
    lim = tmp_path / "lim"
    res = pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(lim), area_threshold=AREA, limit=2,
                       progress=False)
    assert res.items == 2 and sorted(p.name for p in (lim / "masks").rglob("*.png")) == \
        sorted(Path(key(r)).name + ".png" for r in sorted(_all_rel(root))[:2])


def _all_rel(root: Path) -> List[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def test_only_list_errors_and_bad_arguments(lr_folder, tiny_models, tmp_path, capsys):
    root, _ = lr_folder
    assert main(["run", "--lr", str(root), "--gan-model", tiny_models["gan"], "--mse-model", tiny_models["mse"],
                 "--out", str(tmp_path / "o"), "--only", str(tmp_path / "missing.txt")]) == 1
    assert "cannot read list" in capsys.readouterr().err
    assert main(["run", "--lr", str(tmp_path / "nope"), "--gan-model", tiny_models["gan"], "--mse-model",
                 tiny_models["mse"], "--out", str(tmp_path / "o")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["run", "--lr", str(root), "--gan-model", str(tmp_path / "g.pth"), "--mse-model",
                 tiny_models["mse"], "--out", str(tmp_path / "o")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["run", "--lr", str(root), "--gan-model", str(bad), "--mse-model", tiny_models["mse"],
                 "--out", str(tmp_path / "o2"), "--no-progress"]) == 1
    assert "cannot load the models" in capsys.readouterr().err
    assert main(["select", "--run", str(tmp_path), "-o", str(tmp_path / "l")]) == 1
    assert "no manifest" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--lr", "x", "--gan-model", "g", "--mse-model", "m", "--out", "o", "--save-sr", "tiff"])


def test_large_images_are_tiled(tiny_models, tmp_path, monkeypatch):
    import desra_fast.jobs.run as job

    root = tmp_path / "lr"
    make_lr_folder(root, n=1, bad=False, formats=False)
    monkeypatch.setattr(job, "AUTO_TILE_MAX_PIXELS", 1000)  # every crop counts as large here
    monkeypatch.setattr(job, "AUTO_TILE", 24)
    out = tmp_path / "out"
    res = pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(out), area_threshold=AREA,
                       save_sr="png", progress=False)
    assert res.exit_code == 0
    for r in read_manifest(out):
        assert r["tile"] == 24
        lr = decode_lr_independently(root / r["lr"])
        mse = read_rgb_cv2(out / "mse" / (key(r["lr"]) + ".png"))  # nearest x4 is tile-invariant
        np.testing.assert_array_equal(mse, lr.repeat(SCALE, 0).repeat(SCALE, 1))


# ---------------------------------------------------------------------------------------------
# the real models: Real-ESRGAN x4plus (GAN) and SRMD x4 (MSE) converted from their pip packages

def test_real_models_pipeline_on_real_lr_crops(tmp_path):
    from desra_fast.models.zoo import packaged_model

    try:
        gan_p, mse_p = str(packaged_model("realesrgan-x4plus")), str(packaged_model("srmd-x4"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    root = tmp_path / "lr"
    for name, (y, x) in (("rocket", (30, 60)), ("motorcycle", (40, 80))):
        img = cv2.imread(str(ROOT / "samples" / "lr" / f"{name}.png"), cv2.IMREAD_COLOR)
        _write(root / f"{name}.png", img[y:y + 20, x:x + 24])
    out = tmp_path / "out"
    res = pipeline.run(str(root), gan_p, mse_p, str(out), area_threshold=AREA, save_sr="png", progress=False)
    assert res.exit_code == 0 and res.written == 2
    for r in read_manifest(out):
        gan = read_rgb_cv2(out / "gan" / (key(r["lr"]) + ".png"))
        mse = read_rgb_cv2(out / "mse" / (key(r["lr"]) + ".png"))
        assert gan.shape == mse.shape == (80, 96, 3)
        assert np.abs(gan.astype(int) - mse.astype(int)).mean() > 1  # two different models ran
        mask = cv2.imread(str(out / r["path"]), cv2.IMREAD_UNCHANGED) == 255
        np.testing.assert_array_equal(mask, oracle_detect(gan.astype(np.float64), mse.astype(np.float64),
                                                          area_threshold=AREA))
        assert 0 < r["d"]["mean"] < 1


def test_run_records_its_lr_folder_for_the_finetune(lr_folder, full_run):
    # ``desra-fast finetune --run OUT`` needs no --lr: the run names the LR folder it read
    from desra_fast.train.data import from_run

    root, files = lr_folder
    out, _ = full_run
    info = json.loads((out / ".desra-fast-run.json").read_text())
    assert Path(info["lr_dir"]) == Path(root).resolve()
    samples = from_run(out)
    good = {key(r) for r in files["good"]}
    assert samples and {s.key for s in samples} <= good
    assert all(Path(s.lr).resolve().is_relative_to(Path(root).resolve()) for s in samples)
