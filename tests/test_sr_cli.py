"""``desra-fast sr``: Real-ESRGAN's flags and output names, file or folder (nested kept), grey /
RGBA / 16-bit, resume and failures; outputs checked against independent references: the tiny
exact nearest-x4 RRDBNet of test_pipeline (np.repeat, cv2 for the Lanczos outscale) and, for
the real Real-ESRGAN x4plus weights, the ncnn runtime."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from test_pipeline import tiny_models  # noqa: E402,F401

from desra_fast.cli import main  # noqa: E402


def _nearest(a, s=4):
    return a.repeat(s, 0).repeat(s, 1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("sr_in")
    (root / "cls").mkdir()
    imgs = {
        "cls/rgb.png": rng.integers(0, 256, (12, 10, 3), dtype=np.uint8),
        "grey.png": rng.integers(0, 256, (9, 11), dtype=np.uint8),
        "rgba.png": rng.integers(0, 256, (8, 8, 4), dtype=np.uint8),
        "deep.png": rng.integers(0, 65536, (7, 9, 3), dtype=np.uint16),
        "photo.jpg": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
    }
    for rel, a in imgs.items():
        assert cv2.imwrite(str(root / rel), a)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    return root, {rel: cv2.imread(str(root / rel), cv2.IMREAD_UNCHANGED) for rel in imgs}


def test_folder_names_modes_depths(inputs, tiny_models, tmp_path, capsys):
    root, imgs = inputs
    out = tmp_path / "res"
    rc = main(["sr", "-i", str(root), "-o", str(out), "--model", tiny_models["mse"], "--no-progress"])
    assert rc == 1 and "broken" in capsys.readouterr().err  # one corrupt input: recorded, exit 1
    got = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert got == {"cls/rgb_out.png", "grey_out.png", "rgba_out.png", "deep_out.png", "photo_out.jpg", "manifest.jsonl"}
    for rel, name in (("cls/rgb.png", "cls/rgb_out.png"), ("grey.png", "grey_out.png"), ("rgba.png", "rgba_out.png"),
                      ("deep.png", "deep_out.png")):
        res = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert res.dtype == imgs[rel].dtype and res.ndim == imgs[rel].ndim, name
        np.testing.assert_array_equal(res, _nearest(imgs[rel]), err_msg=name)  # alpha upscaled by the model too
    recs = {r["path"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert recs["broken_out.png"]["error"] and recs["rgba_out.png"]["mode"] == "RGBA"
    assert recs["deep_out.png"]["bits"] == 16 and recs["grey_out.png"]["out_size"] == [36, 44]
    # rerun: everything done is skipped, the failure is kept
    assert main(["sr", "-i", str(root), "-o", str(out), "--model", tiny_models["mse"], "--no-progress"]) == 1
    assert "5 already done" in capsys.readouterr().err
    # other settings in the same folder are refused
    assert main(["sr", "-i", str(root), "-o", str(out), "--model", tiny_models["mse"], "-s", "2", "--no-progress"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_single_file_outscale_suffix_ext(inputs, tiny_models, tmp_path):
    root, imgs = inputs
    out = tmp_path / "one"
    assert main(["sr", "-i", str(root / "cls" / "rgb.png"), "-o", str(out), "--model", tiny_models["mse"],
                 "-s", "2", "--suffix", "", "--tile", "4", "--tile_pad", "2", "--no-progress"]) == 0
    res = cv2.imread(str(out / "rgb.png"), cv2.IMREAD_UNCHANGED)
    exp = cv2.resize(_nearest(imgs["cls/rgb.png"]), (20, 24), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(res, exp)  # the x4 output resized to x2 (Lanczos), as Real-ESRGAN
    out = tmp_path / "jpg"
    assert main(["sr", "-i", str(root / "deep.png"), "-o", str(out), "--model", tiny_models["mse"], "--ext", "jpg",
                 "--suffix", "x4", "--no-progress"]) == 0
    res = cv2.imread(str(out / "deep_x4.jpg"), cv2.IMREAD_UNCHANGED)  # 16-bit -> 8-bit JPEG
    assert res.dtype == np.uint8 and res.shape == (28, 36, 3)
    out = tmp_path / "rgba_jpg"
    assert main(["sr", "-i", str(root / "rgba.png"), "-o", str(out), "--model", tiny_models["mse"], "--ext", "jpg",
                 "--alpha_upsampler", "bicubic", "--no-progress"]) == 0
    res = cv2.imread(str(out / "rgba_out.png"), cv2.IMREAD_UNCHANGED)  # RGBA is always PNG, as Real-ESRGAN
    np.testing.assert_array_equal(res[..., :3], _nearest(imgs["rgba.png"][..., :3]))
    np.testing.assert_array_equal(res[..., 3], cv2.resize(imgs["rgba.png"][..., 3], (32, 32),
                                                          interpolation=cv2.INTER_LINEAR))


def test_usage_and_bad_model(inputs, tmp_path, capsys):
    root, _ = inputs
    with pytest.raises(SystemExit):
        main(["sr", "-i", str(root), "--model", "m.pth", "--fp32", "--half"])
    with pytest.raises(SystemExit):
        main(["sr", "-i", str(root), "--model", "m.pth", "-s", "0"])
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert main(["sr", "-i", str(root), "-o", str(tmp_path / "o"), "--model", str(bad), "--no-progress"]) == 1
    assert "cannot load the model" in capsys.readouterr().err
    assert main(["sr", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o2"), "--model", str(bad)]) == 1
    assert "no such file" in capsys.readouterr().err


def test_real_x4plus_matches_the_ncnn_runtime(tmp_path):
    from sr_fixtures import lr_crop, ncnn_net, ncnn_realesrgan

    from desra_fast.models.zoo import packaged_model

    pytest.importorskip("ncnn")
    try:
        param = packaged_model("realesrgan-x4plus")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    lr = lr_crop("rocket", 16, 40, 60)
    cv2.imwrite(str(tmp_path / "lr.png"), cv2.cvtColor(lr, cv2.COLOR_RGB2BGR))
    assert main(["sr", "-i", str(tmp_path / "lr.png"), "-o", str(tmp_path / "o"), "--model", str(param),
                 "--no-progress"]) == 0
    got = cv2.cvtColor(cv2.imread(str(tmp_path / "o" / "lr_out.png")), cv2.COLOR_BGR2RGB)
    _, ref = ncnn_realesrgan(ncnn_net(param), lr)
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
