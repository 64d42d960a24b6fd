"""The Ray Data executor of a folder job (``desra-fast run --engine ray``).

The items left to do are cut into the chunks the local engine reads as one task
(:func:`desra_fast.jobs.engine.chunk_items`), which become the rows of a ``ray.data`` dataset;
one ``map_batches`` stage of model actors (:class:`_Worker`) takes them one at a time and, in the
actor, decodes the inputs (``job.read``), runs ``job.compute`` on the same same-size batches as
the local engine and writes each batch's outputs into the shared output folder with the local
engine's atomic rules (tmp + fsync + rename, completion marker last), returning only the
manifest lines. Same batches, same bytes: the models' float results can depend on which images
share a batch. Images never travel through the object store: it carries item descriptions in
and JSON lines out (a few hundred bytes per image), so a small object store (100 MB) serves any
folder, and the driver's memory does not grow with the images' sizes. LR_DIR and OUT must be on
storage every node sees (the workers read and write them).

Resources: on CUDA one actor per GPU (``num_gpus=1``); on CPU one actor per node of the smallest
node's size, claiming all of its CPUs (Ray then gives torch that many threads). Each actor runs
two calls at a time (``ACTOR_CONCURRENCY``), so that one chunk is decoded and written while the
other computes; ``compute`` itself is serialised per actor.

Failure handling (limits set explicitly, not Ray Data's unlimited defaults):

- ``ACTOR_MAX_RESTARTS``: a model actor whose process or node dies is restarted at most this
  many times, where resources allow (on a static cluster that lost a node there may be none).
- ``ACTOR_TASK_RETRIES`` = 0: a chunk in flight on a dead actor is *not* retried by Ray, because
  Ray would retry it on that same actor and wait for its restart, which never comes when its node
  is gone. The chunk is dropped from the round instead (``max_errored_blocks``) and redone:
- ``ROUNDS``: after the dataset finishes, the chunks without manifest lines are run again, unchanged,
  as a new dataset on the actors that the cluster can host then, at most ``ROUNDS`` times in all; if
  some are still missing the job stops with a :class:`~desra_fast.jobs.JobError` and rerunning
  the command resumes them (nothing is recorded as failed for a lost node).
- Actors whose model setup fails are not restarted (Ray Data replaces them up to
  ``DataContext.max_consecutive_actor_init_deaths`` times, then the job fails with the setup's
  error).

The driver appends the lines to ``OUT/manifest.jsonl`` as they stream back, so the triage,
resume and failure recording are those of :mod:`desra_fast.jobs`: a killed driver (its job's
actors die with it) is resumed by running the same command. Each line of this engine also names
the Ray ``node`` (node id) that processed the image.
"""
from __future__ import annotations

import json
import logging
import math
import pickle
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..jobs import engine as _engine
from ..jobs import store as _store

#: restarts of a model actor whose process or node died (Ray Data's default is unlimited).
ACTOR_MAX_RESTARTS = 3
#: retries of a chunk on its actor after the actor died: none, the next round redoes it.
ACTOR_TASK_RETRIES = 0
#: datasets run over the items still missing before the job gives up (rerun to resume).
ROUNDS = 3
#: calls one actor runs at once (decode/write of one chunk overlaps the compute of another).
ACTOR_CONCURRENCY = 2
#: at most this many dataset blocks (one chunk each, until there are too many).
MAX_BLOCKS = 4096


class _Worker:
    """A model actor: loads the models once, then reads, computes and writes chunks of items.

    ``__call__`` takes a batch ``{"chunk": object array of pickled lists of Items}`` (one chunk
    per call) and returns ``{"rec": object array of JSON manifest lines}``, one per item. A chunk
    is what the local engine reads as one task (:func:`desra_fast.jobs.engine.chunk_items`), and
    it is computed in the same same-size batches, so both engines run the models on the same
    batches and write the same bytes; each batch is written as soon as it is computed.
    """

    def __init__(self, job, out_dir: str, fsync: bool):
        import ray

        self.job, self.out_dir, self.fsync = job, out_dir, fsync
        job.setup()
        self.node = ray.get_runtime_context().get_node_id()
        self.compute_lock = threading.Lock()  # one compute at a time per actor (one model copy)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, Any]:
        recs = []
        for blob in batch["chunk"]:
            recs += self._chunk(pickle.loads(blob))
        for r in recs:
            r["node"] = self.node
        return {"rec": np.array([json.dumps(r) for r in recs], dtype=object)}

    def _chunk(self, items: List) -> List[dict]:
        job = self.job
        recs, ok = [], []
        for it, data, err, secs in _engine.read_items(job, items):
            if err is not None:
                recs.append(_engine.failure_record(job, it, None, err, secs))
            else:
                ok.append((it, data, secs))
        batches = _engine.iter_computed(job, ok)
        while True:
            with self.compute_lock:  # the other call's decode and writes go on meanwhile
                computed = next(batches, None)
            if computed is None:
                return recs
            done = []
            for it, data, result, err, secs in computed:
                if err is not None:
                    recs.append(_engine.failure_record(job, it, data, err, secs))
                else:
                    done.append((it, data, result, secs))
            recs += _engine.write_items(job, self.out_dir, done, self.fsync)


def actor_layout(nodes: List[Dict[str, Any]], gpu: bool, wanted: Optional[int]) -> Tuple[int, Dict[str, float]]:
    """(number of model actors, resources of one) for the alive ``nodes`` of ``ray.nodes()``.

    GPU jobs: one actor per GPU, ``num_gpus=1`` (no CPU claimed: decoding is light next to the
    models). CPU jobs: each actor claims the CPUs of the smallest node that has any, so one actor
    per node of that size. ``wanted`` (``--ray-actors``) caps the count; more than fit would only
    wait for resources, so the count never exceeds what fits (at least 1).
    """
    if gpu:
        fit = sum(int(n.get("Resources", {}).get("GPU", 0)) for n in nodes)
        if fit == 0:  # the actors would wait for a GPU forever
            raise _engine.JobError("--device cuda: the Ray cluster has no GPU (ray status lists its resources)")
        res = {"num_gpus": 1, "num_cpus": 0}
    else:
        cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
        cpus = [c for c in cpus if c >= 1]
        claim = float(math.floor(min(cpus))) if cpus else 1.0
        fit = sum(int(c // claim) for c in cpus)
        res = {"num_gpus": 0, "num_cpus": claim}
    fit = max(1, fit)
    return (min(fit, wanted) if wanted else fit), res


class RayExecutor:
    """Executor for :func:`desra_fast.jobs.run_job` on Ray Data.

    Args:
        address: an existing cluster (``"127.0.0.1:6379"``, ``"auto"``, ``"ray://head:10001"``);
            None starts a local instance unless ``ray.init`` was already called. A cluster with
            token authentication needs its token in the driver's environment
            (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``).
        actors: at most this many model actors (default: what the cluster fits, see
            :func:`actor_layout`).
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
            try:
                kw = {} if self.address else {"include_dashboard": False}  # only for a new instance
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING, **kw)
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                raise _engine.JobError(f"cannot start or reach {where}: {exc}") from exc
        ctx = ray.data.DataContext.get_current()
        saved = (ctx.enable_progress_bars, ctx.execution_options.preserve_order, ctx.max_errored_blocks)
        ctx.enable_progress_bars = False  # the job's own bar counts images
        ctx.execution_options.preserve_order = False
        ctx.max_errored_blocks = -1  # a chunk lost with its actor is redone by the next round
        gpu = str(getattr(getattr(job, "cfg", None), "device", "cpu")).startswith("cuda")
        bar = rec.bar = _engine.progress_bar(len(todo), opts, log, desc=f"desra-fast {job.name} (ray)")
        remaining = list(_engine.chunk_items(todo, job.task_max_items))
        try:
            for round_no in range(1, ROUNDS + 1):
                remaining = self._round(ray, job, str(out_dir), remaining, opts, rec, gpu)
                if not remaining:
                    return
                # the writers of the lost chunks are dead: their temporary files can go now
                _store.scan_outputs(out_dir)
                lost = sum(len(c) for c in remaining)
                if round_no < ROUNDS:
                    print(f"desra-fast: {lost} image(s) were lost with a Ray node or actor; "
                          f"running them again (round {round_no + 1} of {ROUNDS})", file=log)
            raise _engine.JobError(f"{lost} image(s) were lost with Ray nodes or actors (or an error of the "
                                   f"Ray stage, in Ray Data's log) in {ROUNDS} rounds; rerun the same command "
                                   f"to finish them")
        finally:
            ctx.enable_progress_bars, ctx.execution_options.preserve_order, ctx.max_errored_blocks = saved
            bar.close()

    def _round(self, ray, job, out_dir: str, chunks: List[List], opts, rec, gpu: bool) -> List[List]:
        """Run ``chunks`` (lists of items) as one dataset; returns the chunks whose items got no
        manifest line (lost with their actor), unchanged, so that a rerun computes the same batches."""
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        actors, res = actor_layout(nodes, gpu, self.actors)
        ds = ray.data.from_items([{"chunk": pickle.dumps(c, protocol=5)} for c in chunks],
                                 override_num_blocks=max(1, min(MAX_BLOCKS, len(chunks))))
        # a fixed pool, started asynchronously (an actor that cannot be placed does not hold the
        # others back); at most ACTOR_CONCURRENCY chunks queued per actor, so that a busy actor
        # does not hoard chunks an idle one could take, and a lost actor loses few
        pool = ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=ACTOR_CONCURRENCY,
                                          max_concurrent_calls_per_actor=ACTOR_CONCURRENCY,
                                          enable_true_multi_threading=True)
        ds = ds.map_batches(_Worker, batch_size=1, compute=pool,
                            fn_constructor_kwargs={"job": job, "out_dir": out_dir, "fsync": opts.fsync},
                            max_restarts=ACTOR_MAX_RESTARTS, max_task_retries=ACTOR_TASK_RETRIES, **res)
        missing = {it.key for c in chunks for it in c}
        try:
            for row in ds.iter_rows():
                line = json.loads(row["rec"])
                if line["path"] in missing:  # once per item, whatever Ray repeats
                    missing.discard(line["path"])
                    rec.finish(line)
        except (ray.exceptions.RayError, RuntimeError) as exc:
            # a stage that cannot run at all (models fail to load on a worker...): say why once
            cause = exc
            while getattr(cause, "__cause__", None) is not None:
                cause = cause.__cause__
            raise _engine.JobError(f"the Ray job failed: {_engine.describe(cause)}") from exc
        return [c for c in chunks if any(it.key in missing for it in c)]
