"""``desra-fast run --engine ray`` on a local Ray instance (2 CPUs, started by the driver): the
same outputs as the local engine, byte for byte, including after the driver is SIGKILLed partway
and the job is rerun."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra (pip install 'ray[data]')")

from test_pipeline import make_lr_folder, output_files, read_manifest, run_cmd, tiny_models  # noqa: E402,F401

from ray_cluster import make_tiny_lr  # noqa: E402

from desra_fast import pipeline  # noqa: E402


def _end_session(proc) -> None:
    """SIGKILL the driver's session: the driver and the local Ray processes it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def test_ray_engine_matches_local_engine_after_a_kill(tiny_models, tmp_path):
    # The Ray engine's actors write each chunk's outputs themselves, a few milliseconds apart with
    # these tiny models: 40 more tiny images keep the job running long enough to be killed in the
    # middle. --batch 1: the rerun cuts the images left into other chunks, and an image's results
    # must not depend on which images shared its batch.
    root = tmp_path / "lr"
    files = make_lr_folder(root, n=6, seed=3)
    files["good"] += make_tiny_lr(root, 40, seed=3)["good"]
    ref_out = tmp_path / "local"
    pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(ref_out), area_threshold=20,
                 save_sr="png", overlay=True, batch=1, progress=False)
    ref = output_files(ref_out)

    out = tmp_path / "ray"
    cmd = run_cmd(root, out, tiny_models, "--save-sr", "png", "--overlay", "--batch", "1", "--engine", "ray")
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    log = tmp_path / "driver.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        masks = lambda: list((out / "masks").rglob("*.png")) if (out / "masks").is_dir() else []  # noqa: E731
        while proc.poll() is None and not masks() and time.monotonic() < deadline:
            time.sleep(0.01)
        killed = proc.poll() is None
    finally:
        _end_session(proc)
    text = log.read_text(errors="replace")
    if not killed and ("timed out during startup" in text or "Failed to get node info" in text):
        # Ray's own start-up deadlines expire on a heavily overloaded machine; not the engine's fault
        pytest.skip("Ray could not start a local instance here: " + text[-500:])
    time.sleep(0.5)  # nothing may be written after the kill
    partial = output_files(out)
    assert all(ref[p] == b for p, b in partial.items())
    assert killed and len([p for p in partial if p.startswith("masks/")]) < len(files["good"]), \
        "the Ray job finished before the kill: " + text[-3000:]

    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        rc = proc.wait(timeout=400)
    finally:
        _end_session(proc)
    assert rc == 1, log.read_text(errors="replace")[-3000:]  # the planted bad inputs
    assert output_files(out) == ref
    recs = read_manifest(out)
    assert sorted(r["path"] for r in recs if r.get("error") is None) == sorted(p for p in ref if p.startswith("masks/"))
    assert len({r["path"] for r in recs if r.get("error")}) == len(files["bad"])
