"""`desra-fast run` computes D once per image: the mask and the manifest's D statistics come from
one D map (desra_fast.detect_with_d), equal to detect() and d_map() of the same SR pair."""
from __future__ import annotations

import json
import types

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import desra_fast  # noqa: E402
from desra_fast import api, detect_d  # noqa: E402
from desra_fast.models import RRDBNet  # noqa: E402

from sr_fixtures import lr_crop  # noqa: E402


class _Counting:
    """The native module with its D-computing entry points counted."""

    def __init__(self, real):
        self._real, self.calls = real, {"dmap": 0, "detect": 0, "premask": 0}

    def __getattr__(self, name):
        fn = getattr(self._real, name)
        if name not in self.calls:
            return fn

        def counted(*a, **k):
            self.calls[name] += 1
            return fn(*a, **k)
        return counted


@pytest.fixture
def counting(monkeypatch):
    c = _Counting(api._native.C)
    shim = types.SimpleNamespace(C=c)
    monkeypatch.setattr(api, "_native", shim)
    monkeypatch.setattr(detect_d, "_native", shim)
    return c


def _models(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = RRDBNet(3, 3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)
        p = tmp_path / f"m{seed}.pth"
        torch.save({"params_ema": net.state_dict()}, p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("runtime", ["torch", "auto"])
def test_run_computes_d_once_per_image(tmp_path, counting, runtime):
    from desra_fast.pipeline import run

    lr = tmp_path / "lr"
    lr.mkdir()
    for i, (name, size) in enumerate((("rocket", 30), ("motorcycle", 26), ("rocket", 30))):
        cv2.imwrite(str(lr / f"im{i}.png"), cv2.cvtColor(lr_crop(name, size, 10 + 7 * i, 20), cv2.COLOR_RGB2BGR))
    gan_p, mse_p = _models(tmp_path)
    out = tmp_path / "out"
    res = run(str(lr), gan_p, mse_p, str(out), runtime=runtime, save_sr="png", threshold=0.9, area_threshold=20,
              batch=2, progress=False, workers=1)
    assert not res.failed
    assert counting.calls["detect"] == 0 and counting.calls["premask"] == 0
    # im0 and im2 have one size: one batch of two; im1 alone -> two D computations in all
    assert counting.calls["dmap"] == 2, counting.calls
    lines = [json.loads(s) for s in (out / "manifest.jsonl").read_text().splitlines()]
    for i in range(3):
        gan = cv2.imread(str(out / "gan" / f"im{i}.png"))[:, :, ::-1].copy()
        mse = cv2.imread(str(out / "mse" / f"im{i}.png"))[:, :, ::-1].copy()
        mask = cv2.imread(str(out / "masks" / f"im{i}.png"), cv2.IMREAD_UNCHANGED) != 0
        want = desra_fast.detect(gan, mse, threshold=0.9, area_threshold=20)
        np.testing.assert_array_equal(mask, want)
        d = desra_fast.d_map(gan, mse)
        line = next(v for v in lines if f"im{i}." in json.dumps(v))
        assert line["d"]["min"] == pytest.approx(float(d.min()), abs=2e-6)
        assert line["d"]["mean"] == pytest.approx(float(d.mean()), abs=2e-6)
        assert line["d"]["below_threshold"] == pytest.approx(float((d < 0.9).mean()), abs=2e-6)


def test_detect_with_d_equals_detect_near_the_threshold():
    """Thresholds set to D values of the pair (ties resolved in float64) and semantic weights."""
    rgb = lr_crop("rocket", 60, 20, 30)
    gan = cv2.resize(rgb, (180, 180), interpolation=cv2.INTER_NEAREST)
    mse = cv2.GaussianBlur(cv2.resize(rgb, (180, 180), interpolation=cv2.INTER_CUBIC), (5, 5), 1.2)
    d = desra_fast.d_map(gan, mse)
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 150, size=gan.shape[:2]).astype(np.uint8)
    for thr in (0.7, float(d[40, 40]), float(np.nextafter(d[90, 17], 2)), float(np.quantile(d, 0.4))):
        for labels in (None, seg):
            want, n_want = desra_fast.detect(gan, mse, labels, threshold=thr, area_threshold=50, return_counts=True)
            got, n_got, dd = detect_d.detect_with_d(gan, mse, labels, threshold=thr, area_threshold=50)
            np.testing.assert_array_equal(got, want)
            assert n_got == n_want
            np.testing.assert_array_equal(dd, d)
    t = torch.from_numpy(np.stack([gan, gan[::-1].copy()])).permute(0, 3, 1, 2)
    u = torch.from_numpy(np.stack([mse, mse[::-1].copy()])).permute(0, 3, 1, 2)
    got, counts, dd = detect_d.detect_with_d(t, u, threshold=0.95, area_threshold=50)
    want = desra_fast.detect(t, u, threshold=0.95, area_threshold=50)
    assert got.dtype == torch.bool and torch.equal(got, want) and dd.shape == (2, 170, 170)
    with pytest.raises(ValueError, match="threshold"):
        detect_d.detect_with_d(gan, mse, threshold=float("nan"))
