"""The fine-tune demonstration's own logic: candidate windows (half-overlapping grid, most
textured first, restated with numpy) and the split by photograph (no photograph on both sides)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("finetune_demo", ROOT / "examples" / "finetune_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _texture(grey: np.ndarray) -> np.ndarray:
    """Mean-free 7x7 local standard deviation, restated with numpy (reflect-101 borders)."""
    g = np.pad(grey.astype(np.float64), 3, mode="reflect")
    win = np.lib.stride_tricks.sliding_window_view(g, (7, 7))
    return win.std(axis=(-1, -2))


def test_textured_windows_half_grid_most_textured_first(demo):
    import cv2

    rng = np.random.default_rng(0)
    lr = np.full((96, 128, 3), 128, np.uint8)
    lr[40:72, 80:112] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # one noisy patch off the 32-grid
    got = demo.textured_windows(lr, 32, 3)
    std = _texture(cv2.cvtColor(lr, cv2.COLOR_RGB2GRAY))
    cands = sorted(((std[t:t + 32, l:l + 32].mean(), t, l) for t in range(0, 96 - 32 + 1, 16)
                    for l in range(0, 128 - 32 + 1, 16)), reverse=True)
    assert got == [(t, l) for _, t, l in cands[:3]]
    assert got[0] == (40 - 40 % 16, 80)  # the half grid reaches the patch; a full grid could not
    assert all(t % 16 == 0 and l % 16 == 0 for t, l in got)


def test_split_by_photo_keeps_each_photograph_on_one_side(demo, tmp_path):
    import cv2

    keys = {f"{p}__{i}": p for p, n in (("a", 3), ("b", 2), ("c", 2), ("d", 1), ("e", 1)) for i in range(n)}
    (tmp_path / "run" / "masks").mkdir(parents=True)
    for k in keys:
        m = np.zeros((8, 8), np.uint8)
        if k != "e__0":
            m[2:4, 2:4] = 255  # every candidate has a detection but e's
        cv2.imwrite(str(tmp_path / "run" / "masks" / f"{k}.png"), m)
    train, held, train_ph, held_ph = demo.split_by_photo(tmp_path, keys, min_images=1)
    assert "e__0" not in train + held  # screened out: no detection
    assert sorted(train + held) == sorted(k for k in keys if k != "e__0")
    assert not set(train_ph.values()) & set(held_ph.values())
    assert (tmp_path / "train.txt").read_text().split() == train
    assert (tmp_path / "heldout.txt").read_text().split() == held
