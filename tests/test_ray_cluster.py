"""``desra-fast run --engine ray --ray-address`` on a real multi-node cluster (tests/ray_cluster.py:
a head and a worker node started by ``ray start`` on 127.0.0.1 with token authentication, 1 CPU
and a 100 MB object store each), against the local engine's outputs, byte for byte:

- the multi-node run equals the local engine, and its manifest shows work on both nodes;
- the driver SIGKILLed mid-run, then rerun: it resumes (does not redo the finished images) and
  ends identical (``--batch 1`` there: see the test);
- a few hundred tiny images through the 100 MB object stores complete (images never enter the
  object store; ``benchmarks/ray_scaling.py`` measures thousands and the driver's memory);
- the worker node SIGKILLed early in the run (raylet, object store, agents and its model actor):
  the job finishes on the head alone, identical. This one runs last: the session's worker node is gone after it.

The SR models are the tiny hand-set RRDBNets of tests/test_pipeline.py; the local engine they
are compared with is itself tested against independent references there.
"""
from __future__ import annotations

import re
import signal

import pytest

pytest.importorskip("torch")
pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra (pip install 'ray[data]')")

from ray_cluster import make_tiny_lr, ray_cluster, start_driver, stop_driver, wait_driver, wait_for  # noqa: E402,F401,E501
from test_pipeline import make_lr_folder, output_files, read_manifest, run_cmd, tiny_models  # noqa: E402,F401

from desra_fast import pipeline  # noqa: E402
from desra_fast.jobs import JobError  # noqa: E402
from desra_fast.pipeline.ray_engine import actor_layout  # noqa: E402

DRIVER_TIMEOUT = 420
#: the engine is under test, not the runtimes: both engines run the models on torch
RUNTIME = ("--runtime", "torch")


@pytest.fixture(scope="module")
def lr_and_ref(tiny_models, tmp_path_factory):
    """An LR folder (real-photo crops in ImageNet layout, odd formats, 3 bad files, 120 tiny
    images) and the local engine's outputs for it."""
    root = tmp_path_factory.mktemp("lr")
    files = make_lr_folder(root, n=8, seed=5)
    files["good"] += make_tiny_lr(root, 120, seed=5)["good"]
    ref_out = tmp_path_factory.mktemp("local") / "out"
    res = pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(ref_out), area_threshold=20,
                       save_sr="png", overlay=True, batch=2, progress=False, runtime="torch")
    assert res.written == len(files["good"]) and len(res.failed) == len(files["bad"])
    return root, files, output_files(ref_out)


def _cmd(root, out, tiny_models, cluster):
    return run_cmd(root, out, tiny_models, *RUNTIME, "--save-sr", "png", "--overlay", "--batch", "2",
                   "--engine", "ray", "--ray-address", cluster.address)


def _masks(out):
    d = out / "masks"
    return sum(1 for _ in d.rglob("*.png")) if d.is_dir() else 0


def _check_complete(out, files, ref, log):
    text = log.read_text(errors="replace")
    assert output_files(out) == ref, text[-3000:]
    recs = read_manifest(out)
    ok = {r["path"] for r in recs if r.get("error") is None}
    assert ok == {p for p in ref if p.startswith("masks/")}
    assert len({r["path"] for r in recs if r.get("error")}) == len(files["bad"])
    return recs, text


def test_multi_node_run_matches_local_engine(ray_cluster, lr_and_ref, tiny_models, tmp_path):
    root, files, ref = lr_and_ref
    out, log = tmp_path / "out", tmp_path / "driver.log"
    rc = wait_driver(start_driver(_cmd(root, out, tiny_models, ray_cluster), ray_cluster, log), DRIVER_TIMEOUT)
    assert rc == 1, log.read_text(errors="replace")[-3000:]  # exit 1: the planted bad inputs
    recs, _ = _check_complete(out, files, ref, log)
    nodes = {r.get("node") for r in recs if r.get("error") is None}
    assert None not in nodes
    assert len(nodes) == 2, f"all images were computed on one node: {nodes}"


def test_driver_killed_then_rerun_resumes(ray_cluster, tiny_models, tmp_path):
    # --batch 1: a rerun cuts the images left into other chunks, hence other batches, and the
    # models' float results may depend on which images share a batch (both engines alike);
    # alone, an image's outputs are the same whatever the history
    root = tmp_path / "lr"
    files = make_lr_folder(root, n=8, seed=6)
    files["good"] += make_tiny_lr(root, 40, seed=6)["good"]
    ref_out, out, log = tmp_path / "local", tmp_path / "out", tmp_path / "driver.log"
    pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(ref_out), area_threshold=20,
                 save_sr="png", overlay=True, batch=1, progress=False, runtime="torch")
    ref = output_files(ref_out)
    cmd = run_cmd(root, out, tiny_models, *RUNTIME, "--save-sr", "png", "--overlay", "--batch", "1",
                  "--engine", "ray", "--ray-address", ray_cluster.address)
    proc = start_driver(cmd, ray_cluster, log)
    started = wait_for(lambda: _masks(out) >= 6, DRIVER_TIMEOUT, proc)
    stop_driver(proc)  # SIGKILL of the driver's process group
    assert started and proc.returncode == -signal.SIGKILL, \
        "the driver ended before the kill: " + log.read_text(errors="replace")[-3000:]
    partial = output_files(out)
    done_before = _masks(out)
    assert done_before < len(files["good"]), "the job finished before the kill"
    assert all(ref[p] == b for p, b in partial.items())

    rc = wait_driver(start_driver(cmd, ray_cluster, log), DRIVER_TIMEOUT)
    assert rc == 1, log.read_text(errors="replace")[-3000:]
    _, text = _check_complete(out, files, ref, log)
    skipped = int(re.findall(r"(\d+) already done", text)[-1])
    assert skipped >= done_before  # resumed: nothing finished before the kill was redone


def test_many_tiny_images_through_small_object_stores(ray_cluster, tiny_models, tmp_path):
    root = tmp_path / "lr"
    names = make_tiny_lr(root, 300, seed=9)["good"]
    ref_out, out, log = tmp_path / "local", tmp_path / "out", tmp_path / "driver.log"
    # no fsync: a few hundred fsyncs on a busy disk cost minutes, and fsync changes no byte
    pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(ref_out), area_threshold=20,
                 batch=4, progress=False, runtime="torch", fsync=False)
    cmd = run_cmd(root, out, tiny_models, *RUNTIME, "--batch", "4", "--no-fsync", "--engine", "ray",
                  "--ray-address", ray_cluster.address)
    rc = wait_driver(start_driver(cmd, ray_cluster, log), DRIVER_TIMEOUT)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert not re.search(r"ObjectStoreFull|OutOfMemory|spill", text), text[-3000:]
    assert output_files(out) == output_files(ref_out)
    assert len(read_manifest(out)) == len(names)


def test_worker_node_killed_mid_run(ray_cluster, lr_and_ref, tiny_models, tmp_path):
    root, files, ref = lr_and_ref
    out, log = tmp_path / "out", tmp_path / "driver.log"
    proc = start_driver(_cmd(root, out, tiny_models, ray_cluster), ray_cluster, log)

    # early in the run: both actors have started (the pool starts them together) and the
    # chunks are spread over them, so the worker node dies holding work
    busy = wait_for(lambda: _masks(out) >= 4, DRIVER_TIMEOUT, proc)
    ray_cluster.kill_node(1, signal.SIGKILL)  # raylet, object store, agents, the model actor
    assert busy and proc.poll() is None and _masks(out) < len(files["good"]), \
        "the job ended before the worker node was killed: " + log.read_text(errors="replace")[-3000:]
    rc = wait_driver(proc, DRIVER_TIMEOUT)
    assert rc == 1, log.read_text(errors="replace")[-3000:]
    _check_complete(out, files, ref, log)


def _node(cpu=0.0, gpu=0.0):
    return {"Alive": True, "Resources": {"CPU": cpu, **({"GPU": gpu} if gpu else {})}}


def test_actor_layout():
    # CPU: one actor per node of the smallest node's size, all its CPUs; --ray-actors caps
    assert actor_layout([_node(1), _node(1)], False, None) == (2, {"num_gpus": 0, "num_cpus": 1.0})
    assert actor_layout([_node(0), _node(8), _node(16)], False, None) == (3, {"num_gpus": 0, "num_cpus": 8.0})
    assert actor_layout([_node(2.5), _node(4)], False, 1) == (1, {"num_gpus": 0, "num_cpus": 2.0})
    assert actor_layout([_node(1), _node(1)], False, 5)[0] == 2  # never more than fit
    # GPU: one per GPU, no CPU claimed; none -> a clear error instead of actors waiting forever
    assert actor_layout([_node(8), _node(4, 8), _node(4, 8)], True, None) == (16, {"num_gpus": 1, "num_cpus": 0})
    assert actor_layout([_node(4, 8)], True, 3)[0] == 3
    with pytest.raises(JobError, match="no GPU"):
        actor_layout([_node(8)], True, None)
