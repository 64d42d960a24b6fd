"""The Ray Data executor of a folder job (``desra-fast run --engine ray``).

The items left to do become a ``ray.data`` dataset of indices, then three stages:

1. ``map_batches(_read)``: CPU tasks decode the inputs (``job.read``);
2. ``map_batches(_ComputeActor)``: actors that load the models once (``job.setup``) and run
   ``job.compute`` on same-size batches, ``num_gpus=1`` each when the job runs on CUDA (one
   actor per GPU of the cluster by default), so detection runs where the SR outputs are;
3. ``map_batches(_write)``: CPU tasks encode and write the outputs into the shared output
   folder with the same atomic rules as the local engine (tmp + fsync + rename, completion
   marker last) and return the manifest lines.

The driver appends the lines to ``OUT/manifest.jsonl`` as they stream back, so the triage,
the manifest, resume and failure recording are exactly those of :mod:`desra_fast.jobs`: a
killed driver (its local Ray instance dies with it) is resumed by running the same command.
Decoded images and results travel between stages pickled (``bytes`` columns), which keeps
Ray Data from converting ragged arrays.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..jobs import engine as _engine


def _read(batch: Dict[str, np.ndarray], job, todo) -> Dict[str, Any]:
    items = [todo[int(i)] for i in batch["i"]]
    out = _engine.read_items(job, items)
    return {"i": batch["i"], "payload": np.array([pickle.dumps((d, e, s), protocol=5) for _, d, e, s in out],
                                                 dtype=object)}


class _ComputeActor:
    def __init__(self, job, todo):
        self.job, self.todo = job, todo
        job.setup()

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, Any]:
        idx = [int(i) for i in batch["i"]]
        decoded = [pickle.loads(p) for p in batch["payload"]]
        ok = [(self.todo[i], d, s) for i, (d, e, s) in zip(idx, decoded) if e is None]
        results = {}
        for it, data, result, err, secs in _engine.compute_items(self.job, ok):
            results[it.key] = (data, result, err, secs)
        payload = []
        for i, (d, e, s) in zip(idx, decoded):
            payload.append(pickle.dumps((None, None, e, s) if e is not None else results[self.todo[i].key], protocol=5))
        return {"i": batch["i"], "payload": np.array(payload, dtype=object)}


def _write(batch: Dict[str, np.ndarray], job, todo, out_dir: str, fsync: bool) -> Dict[str, Any]:
    lines = []
    for i, p in zip(batch["i"], batch["payload"]):
        it = todo[int(i)]
        data, result, err, secs = pickle.loads(p)
        if err is not None:
            rec = _engine.failure_record(job, it, data, err, secs)
        else:
            (rec,) = _engine.write_items(job, out_dir, [(it, data, result, secs)], fsync)
        lines.append(json.dumps(rec))
    return {"rec": np.array(lines, dtype=object)}


class RayExecutor:
    """Executor for :func:`desra_fast.jobs.run_job` on Ray Data.

    Args:
        address: an existing cluster (``"ray://head:10001"``, ``"auto"``); None starts a local
            instance unless ``ray.init`` was already called.
        actors: number of model actors (default: one per GPU of the cluster for CUDA jobs,
            else 1).
    """

    def __init__(self, address: Optional[str] = None, actors: Optional[int] = None):
        self.address, self.actors = address, actors

    def __call__(self, job, out_dir: Path, todo: List, opts, rec, log) -> None:
        try:
            import ray
        except ImportError as exc:
            raise _engine.JobError("--engine ray needs Ray: pip install 'desra_fast[ray]' "
                                   "(or pip install 'ray[data]')") from exc
        if not ray.is_initialized():
            import logging

            try:
                kw = {} if self.address else {"include_dashboard": False}  # only for a new instance
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                raise _engine.JobError(f"cannot start or reach {where}: {exc}") from exc
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the job's own bar counts images
        ctx.execution_options.preserve_order = False
        gpu = str(getattr(getattr(job, "cfg", None), "device", "cpu")).startswith("cuda")
        actors = self.actors or (max(1, int(ray.cluster_resources().get("GPU", 0))) if gpu else 1)
        bs = max(1, job.max_batch)
        todo_ref, job_ref = todo, job  # Ray Data ships these to the workers once
        ds = ray.data.from_items([{"i": i} for i in range(len(todo))],
                                 override_num_blocks=max(1, min(len(todo), 4 * actors * 8)))
        ds = ds.map_batches(_read, batch_size=bs, fn_kwargs={"job": job_ref, "todo": todo_ref})
        ds = ds.map_batches(_ComputeActor, batch_size=bs, concurrency=actors,
                            fn_constructor_kwargs={"job": job_ref, "todo": todo_ref},
                            num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1)
        ds = ds.map_batches(_write, batch_size=bs,
                            fn_kwargs={"job": job_ref, "todo": todo_ref, "out_dir": str(out_dir), "fsync": opts.fsync})
        bar = rec.bar = _engine.progress_bar(len(todo), opts, log, desc=f"desra-fast {job.name} (ray)")
        try:
            for row in ds.iter_rows():
                rec.finish(json.loads(row["rec"]))
        except (ray.exceptions.RayError, RuntimeError) as exc:
            # a stage that cannot run at all (models fail to load on a worker...): say why once
            cause = exc
            while getattr(cause, "__cause__", None) is not None:
                cause = cause.__cause__
            raise _engine.JobError(f"the Ray job failed: {_engine.describe(cause)}") from exc
        finally:
            bar.close()
