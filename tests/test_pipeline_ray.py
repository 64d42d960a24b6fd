"""``desra-fast run --engine ray --ray-address`` against a local Ray head (2 CPUs): the same
outputs as the local engine, byte for byte, including after the driver is SIGKILLed partway and
the job is rerun."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra (pip install 'ray[data]')")

from test_pipeline import make_lr_folder, output_files, read_manifest, run_cmd, tiny_models  # noqa: E402,F401

from desra_fast import pipeline  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray head (2 CPUs) in its own process group, ended by that group at the end."""
    import shutil

    ray_bin = shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the ray command is not on PATH")
    port = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    log = tmp / "head.log"
    with open(log, "wb") as fh:
        head = subprocess.Popen([ray_bin, "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
                                 f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                                 f"--temp-dir={tmp}"], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while b"block forever" not in log.read_bytes():  # printed once the head is up
            if head.poll() is not None or time.monotonic() > deadline:
                # Ray's own start-up deadlines (GCS / raylet RPCs) expire on a heavily
                # overloaded machine; that is not a failure of the engine under test.
                pytest.skip("Ray could not start a head node here: " + log.read_text()[-600:])
            time.sleep(0.5)
        yield address
    finally:
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(timeout=30)


def test_ray_engine_matches_local_engine_after_a_kill(ray_cluster, tiny_models, tmp_path):
    root = tmp_path / "lr"
    files = make_lr_folder(root, n=6, seed=3)
    ref_out = tmp_path / "local"
    pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(ref_out), area_threshold=20,
                 save_sr="png", overlay=True, batch=2, progress=False)
    ref = output_files(ref_out)

    out = tmp_path / "ray"
    cmd = run_cmd(root, out, tiny_models, "--save-sr", "png", "--overlay", "--batch", "2", "--engine", "ray",
                  "--ray-address", ray_cluster)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    masks = lambda: list((out / "masks").rglob("*.png")) if (out / "masks").is_dir() else []  # noqa: E731
    while proc.poll() is None and not masks() and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(1.0)  # the driver's actors die with it; nothing may be written after the kill
    partial = output_files(out)
    assert all(ref[p] == b for p, b in partial.items())
    assert killed and len([p for p in partial if p.startswith("masks/")]) < len(files["good"]), \
        "the Ray job finished before the kill"

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert output_files(out) == ref
    recs = read_manifest(out)
    assert sorted(r["path"] for r in recs if r.get("error") is None) == sorted(p for p in ref if p.startswith("masks/"))
    assert len({r["path"] for r in recs if r.get("error")}) == len(files["bad"])
