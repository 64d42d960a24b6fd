"""Crash safety end to end: the real ``desra-fast detect`` killed with SIGKILL and restarted.

A job over 36 pairs in nested class folders (PNG 8/16-bit, JPEG, WebP) with planted corrupt,
truncated, unpaired and size-mismatched inputs is SIGKILLed several times while it runs and
restarted each time. At every kill, every mask present under its final name must already equal
the uninterrupted run's; at the end the set of masks and every pixel must be identical, no
temporary file may remain, and the manifest must record each bad input and each good pair once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_batch import AREA, make_dataset

TMP_SUFFIX = ".desra-tmp"


def _cmd(root: Path, out: Path):
    return [sys.executable, "-m", "desra_fast", "detect", "--gan", str(root / "gan"), "--mse",
            str(root / "mse"), "--out", str(out), "--area-threshold", str(AREA), "--workers", "2"]


def _masks(out: Path):
    return {str(p.relative_to(out)): p for p in out.rglob("*.png") if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("killjob")
    keys = make_dataset(root, n_pairs=36, classes=4, seed=7, size_range=(90, 160))
    return root, keys


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    root, _ = dataset
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    proc = subprocess.run(_cmd(root, out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # planted failures -> exit code 1
    return out


def test_sigkill_and_restart_gives_the_uninterrupted_masks(dataset, reference, tmp_path):
    root, keys = dataset
    ref = _masks(reference)
    assert sorted(ref) == sorted(k + ".png" for k in keys["good"])
    ref_px = {k: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for k, p in ref.items()}
    assert sum(int(m.any()) for m in ref_px.values()) >= 10  # non-trivial masks

    out = tmp_path / "out"
    kills_partway = 0
    counts = []  # masks present after each kill
    for step in (1, 10, 12):  # kill as soon as this many more masks are written
        trigger = len(_masks(out)) + step
        proc = subprocess.Popen(_cmd(root, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(_masks(out)) < trigger and time.monotonic() < deadline:
            time.sleep(0.001)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            counts.append(len(_masks(out)))
            if counts[-1] < len(ref):
                kills_partway += 1
            # Nothing of the job outlives it: no file changes after the kill.
            snapshot = sorted(p.name for p in out.rglob("*"))
            time.sleep(0.5)
            assert sorted(p.name for p in out.rglob("*")) == snapshot, "files changed after SIGKILL"
        # Whatever is under a final name is complete and correct, even right after SIGKILL.
        for name, path in _masks(out).items():
            got = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert got is not None, f"{name}: partial file under its final name"
            np.testing.assert_array_equal(got, ref_px[name], err_msg=name)
    print("masks present after each SIGKILL:", counts, "of", len(ref))
    assert kills_partway >= 1, f"the job finished before any kill ({counts}): the test did not test a kill"

    proc = subprocess.run(_cmd(root, out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    got = _masks(out)
    assert sorted(got) == sorted(ref)
    for name, path in got.items():
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), ref_px[name], err_msg=name)
    assert not [p for p in out.rglob("*") if p.name.endswith(TMP_SUFFIX)]

    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ok = [r["path"] for r in records if r.get("error") is None]
    assert sorted(ok) == sorted(ref)  # every good pair logged exactly once
    errors = {r["path"]: r["error"] for r in records if r.get("error") is not None}
    bad = keys["corrupt"] + keys["unpaired"] + keys["mismatch"]
    assert sorted(errors) == sorted(k + ".png" for k in bad)
    assert "missing partner" in errors["bad/only_gan.png"] and "missing partner" in errors["bad/only_mse.png"]
    assert "size mismatch" in errors["bad/mismatch.png"]
    for k in bad:  # the final summary lists every failed pair too
        assert k + ".png" in proc.stderr
