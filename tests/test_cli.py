"""The desra-fast command line: usage errors, exit codes, the README demo on the bundled samples."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from desra_fast.cli import main
from images import real_pair
from oracle import oracle_detect

ROOT = Path(__file__).resolve().parents[1]


def _usage_error(argv, capsys, match):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    ([], "required"),
    (["detect", "--gan", "g", "--mse", "m"], "--out"),
    (["detect", "--gan", "g", "--mse", "m", "--out", "o", "--window", "disk"], "invalid choice"),
    (["detect", "--gan", "g", "--mse", "m", "--out", "o", "--workers", "0"], "must be >= 1"),
    (["detect", "--gan", "g", "--mse", "m", "--out", "o", "--area-threshold", "-1"], "must be >= 0"),
    (["detect", "--gan", "g", "--mse", "m", "--out", "o", "--threshold", "nan"], "finite"),
    (["detect", "--gan", "g", "--mse", "m", "--out", "o", "--backend", "tpu"], "invalid choice"),
    (["eval", "--pred", "p"], "--gt is missing"),
    (["eval", "--pred", "p", "--gt", "g", "--before", "b"], "either"),
    (["eval", "--pred", "p", "--gt", "g", "--p", "1.5"], "[0, 1]"),
])
def test_usage_errors_exit_2(argv, match, capsys):
    _usage_error(argv, capsys, match)


def test_eval_missing_folder_is_a_usage_error(tmp_path, capsys):
    _usage_error(["eval", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path)], capsys, "not a directory")


def test_detect_missing_folder_exits_1(tmp_path, capsys):
    assert main(["detect", "--gan", str(tmp_path / "nope"), "--mse", str(tmp_path), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_detect_empty_folders_exit_1(tmp_path, capsys):
    (tmp_path / "g").mkdir()
    (tmp_path / "m").mkdir()
    assert main(["detect", "--gan", str(tmp_path / "g"), "--mse", str(tmp_path / "m"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 1
    assert "no images" in capsys.readouterr().err


def test_python_m_help():
    proc = subprocess.run([sys.executable, "-m", "desra_fast", "detect", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for flag in ("--gan", "--mse", "--out", "--seg", "--threshold", "--area-threshold", "--window",
                 "--workers", "--overlay", "--backend", "--retry-failed", "--no-fsync"):
        assert flag in proc.stdout


def test_readme_demo_on_bundled_samples(tmp_path):
    """The README's main command: masks equal the oracle's, overlays and manifest are written."""
    out = tmp_path / "demo_out"
    proc = subprocess.run([sys.executable, "-m", "desra_fast", "detect", "--gan", "samples/gan", "--mse",
                           "samples/mse", "--out", str(out), "--overlay"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 written" in proc.stderr and str(out / "overlays") in proc.stderr
    records = {json.loads(line)["path"]: json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert sorted(records) == ["motorcycle.png", "rocket.png"]
    for name in ("rocket", "motorcycle"):
        gan, mse = real_pair(name)
        expected = oracle_detect(gan, mse)
        got = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got == 255, expected, err_msg=name)
        rec = records[f"{name}.png"]
        assert rec["error"] is None and rec["size"] == list(gan.shape[:2])
        assert rec["artifact_fraction"] == pytest.approx(expected.mean())
        pic = cv2.imread(str(out / "overlays" / f"{name}.jpg"))
        assert pic.shape[0] == gan.shape[0] and pic.shape[1] > 2 * gan.shape[1]
    assert records["rocket.png"]["regions"] >= 1  # the demo shows something
    # A second run has nothing to do and says so.
    proc = subprocess.run([sys.executable, "-m", "desra_fast", "detect", "--gan", "samples/gan", "--mse",
                           "samples/mse", "--out", str(out), "--overlay"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "0 written, 2 already done" in proc.stderr
    # eval reads the masks of an output folder, not its overlay pictures
    proc = subprocess.run([sys.executable, "-m", "desra_fast", "eval", "--pred", str(out), "--gt", str(out),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"iou": None, "precision": 1.0, "recall": 1.0, "images": 2}


def test_seg_folder(tmp_path):
    """--seg: label maps at the same relative paths change D' as the oracle says."""
    from images import blocky_seg, photo_pair

    rng_names = ["a/x", "b/y"]
    for i, key in enumerate(rng_names):
        gan, mse = photo_pair(96, 112, seed=40 + i)
        seg = blocky_seg(96, 112, seed=40 + i)
        for kind, img in (("gan", gan[:, :, ::-1]), ("mse", mse[:, :, ::-1]), ("seg", seg)):
            p = tmp_path / kind / (key + ".png")
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), img)
    out = tmp_path / "out"
    code = main(["detect", "--gan", str(tmp_path / "gan"), "--mse", str(tmp_path / "mse"), "--seg",
                 str(tmp_path / "seg"), "--out", str(out), "--area-threshold", "40", "--no-progress"])
    assert code == 0
    differs = 0
    for i, key in enumerate(rng_names):
        gan, mse = photo_pair(96, 112, seed=40 + i)
        seg = blocky_seg(96, 112, seed=40 + i)
        expected = oracle_detect(gan, mse, seg, area_threshold=40)
        got = cv2.imread(str(out / (key + ".png")), cv2.IMREAD_UNCHANGED) == 255
        np.testing.assert_array_equal(got, expected, err_msg=key)
        differs += int((expected != oracle_detect(gan, mse, None, area_threshold=40)).any())
    assert differs >= 1  # the label maps mattered
    # a missing label map is a recorded failure, not a crash
    (tmp_path / "seg" / "b" / "y.png").unlink()
    code = main(["detect", "--gan", str(tmp_path / "gan"), "--mse", str(tmp_path / "mse"), "--seg",
                 str(tmp_path / "seg"), "--out", str(tmp_path / "out2"), "--area-threshold", "40", "--no-progress"])
    assert code == 1
    last = [json.loads(x) for x in (tmp_path / "out2" / "manifest.jsonl").read_text().splitlines()]
    assert any(r["path"] == "b/y.png" and "missing label map" in r["error"] for r in last)
