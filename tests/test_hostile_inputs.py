"""Hostile and malformed inputs: each must give a clear error or the oracle's result, never a hang, a
pybind11 signature error or a silently wrong mask."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import cv2
import desra_fast
from desra_fast.cli import main
from images import blocky_seg, photo_pair
from oracle import oracle_detect


@pytest.fixture(scope="module")
def pair():
    return photo_pair(80, 96, seed=11)


@pytest.mark.parametrize("area", [2**63 - 1, 10**30, np.uint64(2**64 - 1), 70 * 86, 70 * 86 - 1])
def test_huge_area_threshold_keeps_nothing(pair, area):
    gan, mse = pair
    got = desra_fast.detect(gan, mse, area_threshold=area)
    want = oracle_detect(gan, mse, area_threshold=min(int(area), 70 * 86))
    assert np.array_equal(got, want) and not got.any()
    mask = np.ones((30, 40), bool)
    assert not desra_fast.filter_components(mask, area_threshold=area).any()
    assert not desra_fast.postprocess(mask, area_threshold=area).any()


def test_filter_components_keeps_full_cover_below_its_area():
    mask = np.ones((30, 40), bool)
    assert desra_fast.filter_components(mask, area_threshold=30 * 40 - 1).all()


@pytest.mark.parametrize("bad", ["0.5", True, np.bool_(True), None, [0.7]])
def test_threshold_must_be_a_real_number(pair, bad):
    with pytest.raises(TypeError, match="threshold"):
        desra_fast.detect(*pair, threshold=bad)


@pytest.mark.parametrize("d", [np.full((5, 5), np.nan), np.full((5, 5), np.inf)])
def test_threshold_stage_rejects_non_finite_d(d):
    with pytest.raises(ValueError, match="NaN or infinite"):
        desra_fast.threshold(d)


def test_threshold_stage_accepts_bfloat16_tensor():
    torch = pytest.importorskip("torch")
    d = torch.linspace(0, 1, 400).reshape(20, 20)
    got = desra_fast.threshold(d.bfloat16())
    assert got.dtype == torch.bool and torch.equal(got, d.bfloat16().float() < 0.7)


@pytest.mark.parametrize("w", [np.ones(150) * (1 + 1j), ["1"] * 150, np.ones(150, bool)])
def test_weights_must_be_real_numbers(w):
    with pytest.raises(TypeError, match="weights"):
        desra_fast.load_weights(w)


@pytest.mark.parametrize("w", [{"sky": "0.5"}, {"sky": True}])
def test_weight_dict_values_must_be_numbers(w):
    with pytest.raises(TypeError, match="sky"):
        desra_fast.load_weights(w)


def test_threshold_stage_validates_weights_without_seg():
    with pytest.raises(TypeError):
        desra_fast.threshold(np.zeros((4, 4), np.float32), weights="garbage")


def test_num_threads_is_bounded():
    before = desra_fast.get_num_threads()
    for bad in (0, -1, 10**6, 2.5):
        with pytest.raises(ValueError, match="1..256"):
            desra_fast.set_num_threads(bad)
    assert desra_fast.get_num_threads() == before


def test_out_folder_equal_to_an_input_is_refused(tmp_path, capsys):
    gan, mse = photo_pair(40, 48, seed=3)
    for kind, img in (("gan", gan), ("mse", mse)):
        (tmp_path / kind).mkdir()
        cv2.imwrite(str(tmp_path / kind / "x.png"), img[:, :, ::-1])
    for target in ("gan", "mse"):
        code = main(["detect", "--gan", str(tmp_path / "gan"), "--mse", str(tmp_path / "mse"),
                     "--out", str(tmp_path / target), "--no-progress"])
        assert code == 1
        assert "folder of their own" in capsys.readouterr().err
        assert sorted(p.name for p in (tmp_path / target).iterdir()) == ["x.png"]  # untouched


def test_palette_png_label_maps(tmp_path):
    """Segmentation outputs are commonly saved as palette ('P') PNGs: labels are the indices."""
    gan, mse = photo_pair(96, 112, seed=40)
    seg = blocky_seg(96, 112, seed=40)
    for kind, img in (("gan", gan[:, :, ::-1]), ("mse", mse[:, :, ::-1])):
        (tmp_path / kind).mkdir()
        cv2.imwrite(str(tmp_path / kind / "x.png"), img)
    (tmp_path / "seg").mkdir()
    im = Image.fromarray(seg.astype(np.uint8), mode="P")
    im.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    im.save(tmp_path / "seg" / "x.png")
    out = tmp_path / "out"
    assert main(["detect", "--gan", str(tmp_path / "gan"), "--mse", str(tmp_path / "mse"), "--seg",
                 str(tmp_path / "seg"), "--out", str(out), "--area-threshold", "40", "--no-progress"]) == 0
    got = cv2.imread(str(out / "x.png"), cv2.IMREAD_UNCHANGED) == 255
    assert np.array_equal(got, oracle_detect(gan, mse, seg, area_threshold=40))
