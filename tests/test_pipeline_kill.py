"""``desra-fast run`` SIGKILLed at random moments three times, then rerun: the outputs (masks,
SR pairs, overlays) are byte-identical to an uninterrupted run, nothing is lost, nothing is
logged twice, no temporary file remains, and ``select`` ranks the same lists."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("torch")

from test_pipeline import make_lr_folder, output_files, read_manifest, run_cmd, save_models  # noqa: E402

from desra_fast import pipeline  # noqa: E402
from desra_fast.cli import main  # noqa: E402


def _masks(out):
    return [p for p in (out / "masks").rglob("*.png")] if (out / "masks").is_dir() else []


def test_sigkill_three_times_then_rerun_gives_the_uninterrupted_outputs(tmp_path):
    root = tmp_path / "lr"
    files = make_lr_folder(root, n=10, seed=5)
    # wider than the other tests' models (same exact nearest-x4 construction): slow enough that
    # the kills land while the job runs
    models = save_models(tmp_path, num_feat=16, num_block=1)
    flags = ("--save-sr", "png", "--overlay", "--batch", "2", "--workers", "1")
    ref_out = tmp_path / "ref"
    res = pipeline.run(str(root), models["gan"], models["mse"], str(ref_out), area_threshold=20, save_sr="png",
                       overlay=True, batch=2, workers=1, progress=False)
    assert res.written == len(files["good"])
    ref = output_files(ref_out)

    out = tmp_path / "out"
    cmd = run_cmd(root, out, models, *flags)
    rng = np.random.default_rng(12)
    partway = 0
    for _ in range(3):
        trigger = len(_masks(out)) + int(rng.integers(1, 4))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(_masks(out)) < trigger and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0, 0.2)))  # a random moment: mid-SR, mid-write, mid-append
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            partway += len(_masks(out)) < len(files["good"])
        for rel, data in output_files(out).items():  # whatever is under a final name is complete
            assert data == ref[rel], f"{rel}: differs from the uninterrupted run right after SIGKILL"
    assert partway >= 2, "the job finished before the kills: the test did not test a kill"

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # the planted bad inputs
    assert output_files(out) == ref
    assert not [p for p in out.rglob("*") if p.name.endswith(".desra-tmp")]
    recs = read_manifest(out)
    ok = [r["path"] for r in recs if r.get("error") is None]
    assert sorted(ok) == sorted(p for p in ref if p.startswith("masks/"))  # each image once
    assert sorted({r["path"] for r in recs if r.get("error")}) == sorted(
        "masks/" + r.rsplit(".", 1)[0] + ".png" for r in files["bad"])
    lists = []
    for o in (ref_out, out):
        d = tmp_path / f"lists_{len(lists)}"
        assert main(["select", "--run", str(o), "--top", "5", "--train", "2", "-o", str(d)]) == 0
        lists.append([(d / n).read_text() for n in ("train.txt", "val.txt")])
    assert lists[0] == lists[1]
