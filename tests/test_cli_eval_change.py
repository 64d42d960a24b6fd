"""`desra-fast eval --after A (--before B | --gt GT)`: removal and addition rate (docs/spec.md §4).

Expected values are counted by hand from the drawn masks, not by desra_fast code.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from desra_fast.cli import main

H, W = 60, 80


def _write(folder, name, rects):
    folder.mkdir(parents=True, exist_ok=True)
    m = np.zeros((H, W), np.uint8)
    for (y0, y1, x0, x1) in rects:
        m[y0:y1, x0:x1] = 255
    assert cv2.imwrite(str(folder / name), m)


@pytest.fixture
def folders(tmp_path):
    gt, after = tmp_path / "gt", tmp_path / "after"
    # a.png: two GT regions; after fine-tuning one is still detected (not removed), one is gone.
    _write(gt, "a.png", [(10, 20, 10, 20), (30, 40, 50, 60)])
    _write(after, "a.png", [(12, 15, 12, 15)])
    # b.png: one GT region, removed; but a new detection outside GT appears (an addition).
    _write(gt, "b.png", [(10, 20, 10, 20)])
    _write(after, "b.png", [(40, 50, 40, 50)])
    # c.png: a GT region lying only in the 5-px frame is cropped away (the detector cannot see it).
    _write(gt, "c.png", [(0, 3, 0, 80), (20, 30, 20, 30)])
    _write(after, "c.png", [])
    return gt, after


def test_after_against_gt(folders, capsys):
    gt, after = folders
    assert main(["eval", "--after", str(after), "--gt", str(gt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # GT regions after cropping: a:2, b:1, c:1 -> 4; removed: a's second, b's, c's -> 3.
    assert out["removal_rate"] == pytest.approx(3 / 4)
    # images whose detection leaves the GT: only b.
    assert out["addition_rate"] == pytest.approx(1 / 3)


def test_before_and_gt_together_is_a_usage_error(folders, capsys):
    gt, after = folders
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--before", str(gt), "--after", str(after), "--gt", str(gt)])
    assert exc.value.code == 2
    assert "not both" in capsys.readouterr().err
