"""desra_fast.metrics against an independent re-implementation of the authors' metric scripts.

The ``_authors_*`` functions below re-state the logic of TencentARC/DeSRA metrics/calc_iou.py,
calc_precision.py and calc_recall.py (flat folders, cv2.imread GRAYSCALE, GT cropped by 5 px,
``int32(mask/255)`` binarisation for overlaps, connectedComponentsWithStats(connectivity=8) on the
raw mask for regions, one full-image loop per region). They deliberately keep the scripts'
slow per-region structure so that they share no code path with desra_fast.metrics.
"""
import json
import math
import os

import cv2
import numpy as np
import pytest
from scipy import ndimage

from desra_fast import metrics
from desra_fast.cli import main as cli_main


# ----------------------------------------------------------------------------------------------
# independent reference (the authors' scripts' logic)

def _authors_iou(pred_root, gt_root):
    avg_iou, count = 0.0, 0
    for name in sorted(os.listdir(pred_root)):
        input_mask = cv2.imread(os.path.join(pred_root, name), cv2.IMREAD_GRAYSCALE) / 255
        gt_path = os.path.join(gt_root, name)
        if not os.path.exists(gt_path):
            continue
        gt_mask = cv2.imread(gt_path, cv2.IMREAD_GRAYSCALE) / 255
        h, w = gt_mask.shape
        gt_mask = gt_mask[5:h - 5, 5:w - 5]
        a = np.asarray(input_mask, dtype="int32")
        b = np.asarray(gt_mask, dtype="int32")
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.sum(a & b) / np.sum(a | b)
        count += 1
        avg_iou += iou
    return avg_iou / count


def _authors_precision(pred_root, gt_root, threshold):
    total, real = 0, 0
    for name in sorted(os.listdir(pred_root)):
        input_mask = cv2.imread(os.path.join(pred_root, name), cv2.IMREAD_GRAYSCALE)
        num, labels, _stats, _c = cv2.connectedComponentsWithStats(input_mask, connectivity=8)
        total += num - 1
        gt_mask = cv2.imread(os.path.join(gt_root, name), cv2.IMREAD_GRAYSCALE)
        h, w = gt_mask.shape
        gt_mask = gt_mask[5:h - 5, 5:w - 5]
        for i, label in enumerate(np.unique(labels)):
            if label == 0:
                continue
            filt = np.zeros_like(input_mask)
            filt[labels == i] = 1
            overlap = np.asarray(filt, dtype="int32") & np.asarray(gt_mask / 255, dtype="int32")
            if np.sum(overlap) / np.sum(filt) >= threshold:
                real += 1
    return real / total  # ZeroDivisionError when nothing was detected, as in the script


def _authors_recall(pred_root, gt_root, threshold):
    total, found = 0, 0
    for name in sorted(os.listdir(pred_root)):
        input_mask = cv2.imread(os.path.join(pred_root, name), cv2.IMREAD_GRAYSCALE)
        gt_mask = cv2.imread(os.path.join(gt_root, name), cv2.IMREAD_GRAYSCALE)
        h, w = gt_mask.shape
        gt_mask = gt_mask[5:h - 5, 5:w - 5]
        num, labels, _stats, _c = cv2.connectedComponentsWithStats(gt_mask, connectivity=8)
        total += num - 1
        for i, label in enumerate(np.unique(labels)):
            if label == 0:
                continue
            filt = np.zeros_like(input_mask)
            filt[labels == i] = 1
            overlap = np.asarray(filt, dtype="int32") & np.asarray(input_mask / 255, dtype="int32")
            if np.sum(overlap) / np.sum(filt) >= threshold:
                found += 1
    return found / total


# ----------------------------------------------------------------------------------------------
# synthetic data

def _random_blobs(rng, h, w, n, value=255):
    m = np.zeros((h, w), np.uint8)
    for _ in range(n):
        kind = rng.integers(3)
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        if kind == 0:
            hh, ww = int(rng.integers(2, h // 3)), int(rng.integers(2, w // 3))
            m[max(cy - hh, 0):cy + hh, max(cx - ww, 0):cx + ww] = value
        elif kind == 1:
            cv2.ellipse(m, (cx, cy), (int(rng.integers(2, w // 4)), int(rng.integers(2, h // 4))),
                        float(rng.integers(0, 180)), 0, 360, int(value), -1)
        else:
            cv2.circle(m, (cx, cy), int(rng.integers(1, 6)), int(value), -1)
    return m


def _touching_pair(h, w):
    """Two squares touching only at a corner: one 8-connected region."""
    m = np.zeros((h, w), np.uint8)
    m[10:20, 10:20] = 255
    m[20:30, 20:30] = 255
    return m


def _make_dataset(root, rng, n_images=24):
    """Flat folders pred/ (valid-region size, authors' layout) and gt/ (full size)."""
    pred_dir, gt_dir = root / "pred", root / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    cases = []
    for i in range(n_images):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        gt = _random_blobs(rng, h, w, int(rng.integers(1, 5)))
        pred = _random_blobs(rng, h - 10, w - 10, int(rng.integers(0, 6)))
        # mix in predictions correlated with GT so that ratios near p occur
        if i % 3 == 0:
            shifted = np.roll(gt[5:-5, 5:-5], (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), (0, 1))
            pred = np.maximum(pred, shifted)
        cases.append((pred, gt))
    # explicit corner cases
    h, w = 50, 60
    cases.append((np.zeros((h - 10, w - 10), np.uint8), _random_blobs(rng, h, w, 3)))      # empty prediction
    cases.append((_random_blobs(rng, h - 10, w - 10, 3), np.zeros((h, w), np.uint8)))      # empty GT
    cases.append((_touching_pair(h - 10, w - 10), np.pad(_touching_pair(h - 10, w - 10)[:, ::-1], 5)))
    touching_gt = np.pad(_touching_pair(h - 10, w - 10), 5)
    cases.append((_touching_pair(h - 10, w - 10), touching_gt))                          # identical
    # GT with anti-aliased (non-255) values: regions count them, overlaps do not
    soft = _random_blobs(rng, h, w, 3)
    soft[soft == 255] = np.where(rng.random(np.count_nonzero(soft == 255)) < 0.3, 128, 255).astype(np.uint8)
    cases.append((_random_blobs(rng, h - 10, w - 10, 2), soft))
    for i, (pred, gt) in enumerate(cases):
        name = f"img_{i:03d}.png"
        cv2.imwrite(str(pred_dir / name), pred)
        cv2.imwrite(str(gt_dir / name), gt)
    return pred_dir, gt_dir, cases


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    return _make_dataset(root, np.random.default_rng(1234))


@pytest.fixture(scope="module")
def full_size_pred_dir(dataset, tmp_path_factory):
    """The same predictions in desra-fast's layout: full size with a zero 5-px frame."""
    pred_dir, _gt_dir, cases = dataset
    out = tmp_path_factory.mktemp("full_pred")
    for i, (pred, _gt) in enumerate(cases):
        cv2.imwrite(str(out / f"img_{i:03d}.png"), np.pad(pred, 5))
    return out


# ----------------------------------------------------------------------------------------------
# agreement with the authors' scripts

@pytest.mark.parametrize("p", [0.5, 0.0, 0.3, 0.8, 1.0])
def test_precision_recall_match_authors(dataset, p):
    pred_dir, gt_dir, _ = dataset
    got = metrics.evaluate_folders(pred_dir, gt_dir, p=p)
    assert got.precision == _authors_precision(pred_dir, gt_dir, p)
    assert got.recall == _authors_recall(pred_dir, gt_dir, p)
    assert got.images == len(os.listdir(pred_dir))


def test_iou_matches_authors(dataset):
    pred_dir, gt_dir, _ = dataset
    got = metrics.evaluate_folders(pred_dir, gt_dir)
    assert got.iou == pytest.approx(_authors_iou(pred_dir, gt_dir), rel=1e-12, abs=0)


def test_full_size_predictions_give_the_same_scores(dataset, full_size_pred_dir):
    pred_dir, gt_dir, _ = dataset
    a = metrics.evaluate_folders(pred_dir, gt_dir)
    b = metrics.evaluate_folders(full_size_pred_dir, gt_dir)
    assert (a.iou, a.precision, a.recall, a.images) == (b.iou, b.precision, b.recall, b.images)


def test_array_api_matches_folder_api(dataset):
    pred_dir, gt_dir, cases = dataset
    a = metrics.evaluate_folders(pred_dir, gt_dir, p=0.5)
    b = metrics.detection_scores([c[0] for c in cases], [c[1] for c in cases], p=0.5)
    assert (a.iou, a.precision, a.recall) == (b.iou, b.precision, b.recall)


def test_both_empty_image_gives_nan_iou_like_the_script(tmp_path):
    rng = np.random.default_rng(5)
    pred_dir, gt_dir, _ = _make_dataset(tmp_path, rng, n_images=3)
    cv2.imwrite(str(pred_dir / "zz_empty.png"), np.zeros((30, 30), np.uint8))
    cv2.imwrite(str(gt_dir / "zz_empty.png"), np.zeros((40, 40), np.uint8))
    ref = _authors_iou(pred_dir, gt_dir)
    got = metrics.evaluate_folders(pred_dir, gt_dir)
    assert math.isnan(ref) and math.isnan(got.iou)
    assert math.isnan(got.per_image_iou["zz_empty"])
    assert got.summary()["iou"] is None  # JSON-safe


def test_no_detected_region_gives_nan_precision(tmp_path):
    pred_dir, gt_dir = tmp_path / "p", tmp_path / "g"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gt = np.zeros((40, 40), np.uint8)
    gt[10:20, 10:20] = 255
    cv2.imwrite(str(pred_dir / "a.png"), np.zeros((30, 30), np.uint8))
    cv2.imwrite(str(gt_dir / "a.png"), gt)
    with pytest.raises(ZeroDivisionError):
        _authors_precision(pred_dir, gt_dir, 0.5)
    got = metrics.evaluate_folders(pred_dir, gt_dir)
    assert math.isnan(got.precision)
    assert got.recall == _authors_recall(pred_dir, gt_dir, 0.5) == 0.0
    assert got.iou == 0.0


# ----------------------------------------------------------------------------------------------
# hand-computed values (guard against a shared misreading of the scripts)

def test_hand_computed_example():
    gt = np.zeros((30, 30), np.uint8)
    gt[5:15, 5:15] = 255      # valid-region rows/cols 0..9: 100 px
    gt[20:25, 20:25] = 255    # valid-region 15..19: 25 px
    pred = np.zeros((20, 20), np.uint8)
    pred[0:10, 0:5] = 255     # 50 px, all inside GT region 1
    pred[12:14, 0:2] = 255    # 4 px, outside GT
    s = metrics.detection_scores([pred], [gt], p=0.5)
    assert s.iou == 50 / (125 + 4)
    assert s.precision == 1 / 2          # region 1 ratio 1.0, region 2 ratio 0
    assert s.recall == 1 / 2             # GT region 1 ratio 0.5 (>= 0.5), GT region 2 ratio 0
    s = metrics.detection_scores([pred], [gt], p=0.51)
    assert s.recall == 0.0


def test_touching_regions_are_one_region():
    m = _touching_pair(40, 40)
    assert metrics.region_hits(m, m, 0.5) == (1, 1)


def test_bad_inputs_raise_clear_errors():
    gt = np.zeros((30, 30), np.uint8)
    with pytest.raises(ValueError, match="prediction shape"):
        metrics.image_iou(np.zeros((25, 25), np.uint8), gt)
    with pytest.raises(TypeError, match="uint8"):
        metrics.image_iou(np.zeros((20, 20), np.float32), gt)
    with pytest.raises(ValueError, match="overlap ratio"):
        metrics.detection_scores([gt[5:-5, 5:-5]], [gt], p=1.5)


# ----------------------------------------------------------------------------------------------
# removal / addition rate (paper section 4.3: A & B = 0 removes, |A | B| > |B| adds)

def _ref_change(befores, afters):
    regions = removed = added = 0
    for b, a in zip(befores, afters):
        lab, n = ndimage.label(b > 0, structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            regions += 1
            removed += int(np.sum((lab == k) & (a == 255)) == 0)
        added += int(np.sum((a == 255) | (b == 255)) > np.sum(b == 255))
    return removed / regions, added / len(befores)


def test_change_scores_match_definition():
    rng = np.random.default_rng(7)
    befores, afters = [], []
    for i in range(20):
        b = _random_blobs(rng, 60, 70, int(rng.integers(1, 6)))
        a = np.where(rng.random(b.shape) < 0.02, 255, 0).astype(np.uint8) & b  # a few specks inside B
        if i % 4 == 0:
            a = _random_blobs(rng, 60, 70, 2)                                  # new detections
        if i % 5 == 0:
            a = np.zeros_like(b)
        befores.append(b)
        afters.append(a)
    got = metrics.change_scores(befores, afters)
    ref = _ref_change(befores, afters)
    assert (got.removal_rate, got.addition_rate) == ref
    assert 0 < got.removal_rate < 1 and 0 < got.addition_rate < 1


def test_change_hand_computed():
    b = np.zeros((20, 20), np.uint8)
    b[2:5, 2:5] = 255
    b[10:15, 10:15] = 255
    a = np.zeros_like(b)
    a[12, 12] = 255
    s = metrics.change_scores([b, b], [a, np.pad(b[5:-5, 5:-5], 5)])
    # image 1: region 1 removed, region 2 kept, nothing added; image 2: the 3x3 region is in the
    # cropped frame... it is cropped away in 'after' only, so it counts as removed.
    assert s.regions_before == 4 and s.removed_regions == 2
    assert s.addition_rate == 0.0
    s = metrics.change_scores([b], [np.full_like(b, 255)])
    assert s.removal_rate == 0.0 and s.addition_rate == 1.0


# ----------------------------------------------------------------------------------------------
# CLI

def test_cli_eval_json(dataset, capsys):
    pred_dir, gt_dir, _ = dataset
    code = cli_main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--p", "0.5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out) == {"iou", "precision", "recall", "images"}
    assert out["precision"] == _authors_precision(pred_dir, gt_dir, 0.5)
    assert out["recall"] == _authors_recall(pred_dir, gt_dir, 0.5)
    assert out["iou"] == pytest.approx(_authors_iou(pred_dir, gt_dir), rel=1e-12)
    assert out["images"] == len(os.listdir(pred_dir))


def test_cli_eval_before_after(tmp_path, capsys):
    b_dir, a_dir = tmp_path / "before", tmp_path / "after"
    b_dir.mkdir()
    a_dir.mkdir()
    b = np.zeros((20, 20), np.uint8)
    b[2:5, 2:5] = 255
    b[10:15, 10:15] = 255
    a = np.zeros_like(b)
    a[12, 12] = 255
    cv2.imwrite(str(b_dir / "x.png"), b)
    cv2.imwrite(str(a_dir / "x.png"), a)
    code = cli_main(["eval", "--before", str(b_dir), "--after", str(a_dir), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out == {"removal_rate": 0.5, "addition_rate": 0.0, "images": 1}
