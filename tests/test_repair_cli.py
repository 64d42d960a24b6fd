"""``desra-fast sr --repair`` and ``desra_fast.Upscaler``: GAN-SR with DeSRA's regions replaced by
MSE-SR. References: the plain ``sr`` outputs of each model, the float64 oracle detector
(tests/oracle.py) and the feathered blend restated with scipy; the acceptance test runs the real
Real-ESRGAN x4plus and SRMD x4 weights on a real LR photo."""
from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_pipeline import identity_rrdbnet, tiny_models  # noqa: E402,F401

import desra_fast  # noqa: E402
from desra_fast.cli import main  # noqa: E402
from oracle import oracle_detect  # noqa: E402
from sr_fixtures import ROOT  # noqa: E402

AREA = 20


def _soft(mask: np.ndarray, r: int) -> np.ndarray:
    """repair()'s feather weight restated with scipy: square dilation by r (outside = 0), then a
    (2r+1) box mean with replicated borders, never below the mask."""
    from scipy import ndimage

    if r == 0:
        return mask.astype(np.float64)
    dil = ndimage.maximum_filter(mask.astype(np.float64), size=2 * r + 1, mode="constant", cval=0.0)
    return np.maximum(ndimage.uniform_filter(dil, size=2 * r + 1, mode="nearest"), mask)


def _expected(gan: np.ndarray, mse: np.ndarray, mask: np.ndarray, r: int) -> np.ndarray:
    a = _soft(mask, r)
    if gan.ndim == 3:
        a = a[..., None]
    out = np.floor(a * mse.astype(np.float64) + (1 - a) * gan.astype(np.float64) + 0.5)
    return np.clip(out, 0, np.iinfo(gan.dtype).max).astype(gan.dtype)


def _oracle_mask(gan: np.ndarray, mse: np.ndarray, **kw) -> np.ndarray:
    g, m = gan.astype(np.float64), mse.astype(np.float64)
    if gan.dtype == np.uint16:
        g, m = g / 257.0, m / 257.0
    if g.ndim == 3:
        g, m = g[..., :3], m[..., :3]
    return oracle_detect(g, m, **kw)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """LR crops of a real photo (texture for the detector to find) in every layout sr handles."""
    from images import photo

    root = tmp_path_factory.mktemp("repair_in")
    (root / "cls").mkdir()
    rgb = cv2.resize(photo("astronaut")[:192, :160], (40, 48), interpolation=cv2.INTER_AREA)
    imgs = {
        "cls/rgb.png": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
        "grey.png": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
        "rgba.png": np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full(rgb.shape[:2], 200, np.uint8)]),
        "deep.png": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257 + 3,
        "photo.jpg": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
    }
    for rel, a in imgs.items():
        assert cv2.imwrite(str(root / rel), a)
    return root, list(imgs)


def _sr(model, root, out, *extra):
    return main(["sr", "-i", str(root), "-o", str(out), "--model", model, "--no-progress", "--runtime", "torch",
                 *extra])


def test_sr_repair_every_layout_against_references(inputs, tiny_models, tmp_path, capsys):
    root, rels = inputs
    r = 2
    assert _sr(tiny_models["gan"], root, tmp_path / "gan") == 0
    assert _sr(tiny_models["mse"], root, tmp_path / "mse") == 0
    out = tmp_path / "rep"
    args = ["--repair", "--mse-model", tiny_models["mse"], "--feather", str(r), "--area-threshold", str(AREA)]
    assert _sr(tiny_models["gan"], root, out, *args) == 0
    recs = {rec["path"]: rec for rec in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    from scipy import ndimage

    found = 0
    for rel in rels:
        stem, ext = rel.rsplit(".", 1)
        name = f"{stem}_out.{ext}"            # the names and formats plain sr writes
        gan = cv2.imread(str(tmp_path / "gan" / name), cv2.IMREAD_UNCHANGED)
        mse = cv2.imread(str(tmp_path / "mse" / name), cv2.IMREAD_UNCHANGED)
        got = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert got.dtype == gan.dtype and got.shape == gan.shape, name
        if ext == "jpg":
            continue                            # lossy: compared through the manifest count only
        mask = _oracle_mask(gan, mse, area_threshold=AREA)
        found += int(mask.any())
        want = _expected(gan, mse, mask, r)
        assert np.abs(got.astype(np.int64) - want).max() <= 1, name
        assert recs[name]["replaced_px"] == int(mask.sum()), name
        reach = ndimage.binary_dilation(mask, np.ones((4 * r + 1, 4 * r + 1), bool))   # weight > 0 within 2r
        assert recs[name]["blended_px"] == int((reach & ~mask).sum()), name
    assert found >= 3                           # the test data has regions to repair
    assert recs["deep_out.png"]["bits"] == 16 and recs["rgba_out.png"]["mode"] == "RGBA"
    # rerun resumes; other repair settings in the same folder are refused
    assert _sr(tiny_models["gan"], root, out, *args) == 0
    assert "5 already done" in capsys.readouterr().err
    assert _sr(tiny_models["gan"], root, out, *args[:-4], "--feather", "1", "--area-threshold", str(AREA)) == 1
    assert "settings" in capsys.readouterr().err


def test_sr_repair_option_errors(inputs, tiny_models, tmp_path, capsys):
    root, _ = inputs
    assert _sr(tiny_models["gan"], root, tmp_path / "a", "--repair") == 1
    assert "--repair needs --mse-model" in capsys.readouterr().err
    assert _sr(tiny_models["gan"], root, tmp_path / "b", "--mse-model", tiny_models["mse"]) == 1
    assert "belong to --repair" in capsys.readouterr().err
    assert _sr(tiny_models["gan"], root, tmp_path / "c", "--repair", "--mse-model", str(tmp_path / "nope.pth")) == 1
    assert "nope.pth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _sr(tiny_models["gan"], root, tmp_path / "d", "--max-memory", "lots")
    assert "memory size" in capsys.readouterr().err


def test_upscaler_threads_and_errors(tiny_models):
    from desra_fast.models import SRModel, load_sr

    gan, mse = load_sr(tiny_models["gan"], runtime="torch"), load_sr(tiny_models["mse"], runtime="torch")
    up = desra_fast.Upscaler(gan, mse, feather=1, area_threshold=AREA)
    from images import photo

    imgs = [cv2.resize(photo(n)[:160, :160], (36, 36), interpolation=cv2.INTER_AREA) for n in ("astronaut", "coffee")]
    expect = [up.upscale(i) for i in imgs]
    assert any(m.any() for _, m in expect)
    for img, (fixed, mask) in zip(imgs, expect):
        g, m = gan.upscale(img), mse.upscale(img)
        np.testing.assert_array_equal(mask, _oracle_mask(g, m, area_threshold=AREA))
        assert np.abs(fixed.astype(np.int64) - _expected(g, m, mask, 1)).max() <= 1
    got, errors = {}, []

    def work(t):
        try:
            for k in range(3):
                j = (t + k) % 2
                got.setdefault((t, k), (j, up.upscale(imgs[j])))
        except Exception as exc:   # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 6
    for j, (fixed, mask) in got.values():
        assert np.array_equal(fixed, expect[j][0]) and np.array_equal(mask, expect[j][1])
    with pytest.raises(ValueError, match="feather"):
        desra_fast.Upscaler(gan, mse, feather=-1)
    x2 = SRModel(identity_rrdbnet(0.0, seed=1), dict(arch="RRDBNet", scale=4))
    x2.scale = 2
    with pytest.raises(ValueError, match="x4.*x2"):
        desra_fast.Upscaler(gan, x2)
    with pytest.raises(ValueError, match="threshold"):
        desra_fast.Upscaler(gan, mse, threshold=float("nan"))
    with pytest.raises(TypeError, match="numpy"):
        up.upscale([[1, 2, 3]])


def test_repair_real_models_on_a_real_photo(tmp_path):
    """Acceptance: Real-ESRGAN x4plus + SRMD x4 on the rocket LR photo (crop around its two
    detected regions): inside the regions the output is MSE-SR, outside them grown by the
    feather's reach (2 * feather) it is GAN-SR, within 1 level; Upscaler gives the same."""
    from desra_fast.models import load_sr

    try:
        gan = load_sr("realesrgan-x4plus", runtime="torch")
        mse = load_sr("srmd-x4", runtime="torch")
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(f"packaged real weights not installed: {exc}")
    bgr = cv2.imread(str(ROOT / "samples" / "lr" / "rocket.png"))[24:96, 36:92]
    (tmp_path / "lr").mkdir()
    assert cv2.imwrite(str(tmp_path / "lr" / "rocket.png"), bgr)
    lr = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    g, m = gan.upscale(lr), mse.upscale(lr)
    mask = oracle_detect(g, m)
    assert mask.sum() > 4000
    f = 3
    rc = main(["sr", "-i", str(tmp_path / "lr"), "-o", str(tmp_path / "out"), "--model", "realesrgan-x4plus",
               "--mse-model", "srmd-x4", "--repair", "--feather", str(f), "--runtime", "torch", "--no-progress"])
    assert rc == 0
    got = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "rocket_out.png")), cv2.COLOR_BGR2RGB)
    from scipy import ndimage

    inside = mask                     # repair keeps weight 1 on every detected pixel
    outside = ~ndimage.binary_dilation(mask, np.ones((4 * f + 1, 4 * f + 1), bool))
    assert inside.any() and outside.any()
    assert np.abs(got[inside].astype(np.int32) - m[inside]).max() <= 1
    assert np.abs(got[outside].astype(np.int32) - g[outside]).max() <= 1
    rec = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[-1])
    assert rec["replaced_px"] == int(mask.sum())
    fixed, umask = desra_fast.Upscaler(gan, mse, feather=f).upscale(lr)
    assert np.array_equal(umask, mask) and np.array_equal(fixed, got)


def test_run_save_repaired(tiny_models, tmp_path, capsys):
    from images import photo

    lr = tmp_path / "lr"
    (lr / "cls").mkdir(parents=True)
    for i, (n, rel) in enumerate((("astronaut", "cls/a.png"), ("coffee", "b.png"))):
        img = cv2.resize(photo(n)[:160, :192], (48, 40), interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(lr / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = tmp_path / "run"
    r = 1
    args = ["run", "--lr", str(lr), "--gan-model", tiny_models["gan"], "--mse-model", tiny_models["mse"], "--out",
            str(out), "--save-sr", "png", "--save-repaired", "png", "--feather", str(r), "--area-threshold",
            str(AREA), "--runtime", "torch", "--no-progress"]
    assert main(args) == 0
    recs = {rec["path"]: rec for rec in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    found = 0
    for key in ("cls/a", "b"):
        gan = cv2.imread(str(out / "gan" / f"{key}.png"))
        mse = cv2.imread(str(out / "mse" / f"{key}.png"))
        mask = _oracle_mask(gan, mse, area_threshold=AREA)
        np.testing.assert_array_equal(cv2.imread(str(out / "masks" / f"{key}.png"), cv2.IMREAD_GRAYSCALE) != 0, mask)
        got = cv2.imread(str(out / "repaired" / f"{key}.png"))
        assert np.abs(got.astype(np.int64) - _expected(gan, mse, mask, r)).max() <= 1, key
        assert recs[f"masks/{key}.png"]["replaced_px"] == int(mask.sum())
        found += int(mask.any())
    assert found >= 1
    assert "repaired:" in capsys.readouterr().err
    # another feather width in the same folder is refused (the repaired images would differ)
    args[args.index("--feather") + 1] = "2"
    assert main(args) == 1 and "settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--lr", str(lr), "--gan-model", tiny_models["gan"], "--mse-model", tiny_models["mse"],
              "--out", str(tmp_path / "x"), "--save-repaired", "tif"])
