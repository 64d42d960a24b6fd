"""A real local Ray cluster for the tests (``scripts/ray_local_cluster.py``: a head and worker
nodes as separate ``ray start`` process groups on 127.0.0.1, token authentication on), drivers
run as subprocesses, and many tiny LR images.

The cluster is session-scoped (starting one costs ~30 s on 2 cores); its teardown stops exactly
what it started and asserts that no process of it, nor any driver a test started, is left.
Nothing here imports Ray into the test process, so the cluster never meets the ``ray.init()``
instances of other tests.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from images import photo

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("ray_local_cluster", ROOT / "scripts" / "ray_local_cluster.py")
ray_local_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ray_local_cluster)
LocalRayCluster = ray_local_cluster.LocalRayCluster

#: process groups of the drivers started by the tests (killed and checked at teardown).
DRIVERS: List[int] = []


@pytest.fixture(scope="session")
def ray_cluster():
    """Head + 1 worker node, 1 CPU and a 100 MB object store each. Yields the
    :class:`LocalRayCluster`; skips when Ray cannot start a cluster on this machine."""
    pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra (pip install 'ray[data]')")
    cluster = LocalRayCluster(nodes=2, cpus_per_node=1, object_store_bytes=100 << 20)
    try:
        cluster.start()
    except RuntimeError as exc:
        cluster.stop()
        pytest.skip(f"Ray could not start a local cluster here: {exc}")
    # SIGTERM (a CI timeout, `timeout pytest ...`) would end the process without running this
    # teardown and leave the cluster's process groups behind: turn it into the KeyboardInterrupt
    # that pytest answers by tearing its fixtures down.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield cluster
    finally:
        signal.signal(signal.SIGTERM, previous)
        for pgid in DRIVERS:
            kill_group(pgid)
        left = cluster.stop() + cluster.pids() + [g for g in DRIVERS if ray_local_cluster._alive(g)]
        assert not left, f"Ray processes left behind: {_ps(left)}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}: stopping the tests (the Ray cluster is torn down first)")


def _ps(pids: List[int]) -> str:
    return subprocess.run(["ps", "-o", "pid,pgid,cmd", "-p", ",".join(map(str, pids))],
                          capture_output=True, text=True).stdout


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_driver(cmd: List[str], cluster, log: Path) -> subprocess.Popen:
    """Start ``cmd`` (a ``desra-fast run --engine ray`` command) as its own process group with
    the cluster's token in its environment."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=cluster.driver_env(),
                                start_new_session=True)
    DRIVERS.append(proc.pid)
    return proc


def wait_driver(proc: subprocess.Popen, timeout: float) -> int:
    """The driver's exit status once it ends (within ``timeout``); its process group is killed
    in any case."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        stop_driver(proc)


def stop_driver(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's process group (whatever it is doing) and reap it."""
    kill_group(proc.pid)
    proc.wait(timeout=30)


def wait_for(cond, timeout: float, proc=None, step: float = 0.05) -> bool:
    """Poll ``cond()`` until true (True), ``timeout`` or ``proc`` ending (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(cond())
        time.sleep(step)
    return False


def make_tiny_lr(root: Path, n: int, seed: int = 0, min_side: int = 8, max_side: int = 16) -> Dict[str, List[str]]:
    """``n`` tiny LR crops of real photos (``min_side``..``max_side`` px, PNG and JPEG, in a few
    class folders). Returns {"good": [rel paths]}."""
    rng = np.random.default_rng(seed)
    names = ("rocket", "coffee", "chelsea", "astronaut")
    rels = []
    for i in range(n):
        img = photo(names[i % len(names)])
        h, w = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
        y, x = int(rng.integers(0, img.shape[0] - 4 * h)), int(rng.integers(0, img.shape[1] - 4 * w))
        crop = cv2.resize(img[y:y + 4 * h, x:x + 4 * w], (w, h), interpolation=cv2.INTER_AREA)
        ext, params = (".png", []) if i % 2 else (".JPEG", [cv2.IMWRITE_JPEG_QUALITY, 92])
        rel = f"t{i % 5}/tiny_{i:05d}{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), params)
        rels.append(rel)
    return {"good": rels}
