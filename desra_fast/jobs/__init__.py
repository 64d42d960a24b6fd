"""Crash-safe folder jobs: the machinery shared by ``desra-fast detect``, ``sr``, ``segment``,
``run`` (and any job that turns a folder of inputs into a folder of outputs), and the jobs
themselves, one module each: :mod:`.detect`, :mod:`.sr`, :mod:`.segment`, :mod:`.run` (the
end-to-end job), :mod:`.evaluate_finetune`; :mod:`.sources` resolves and fingerprints their
model arguments.

A job is a :class:`FolderJob` subclass; :func:`run_job` runs or resumes it into an output
folder ``OUT`` and returns a :class:`JobResult` (``exit_code`` 1 when any item failed).

Defining a job
--------------
- ``plan() -> [Item]``: one :class:`Item` per unit of work, sorted. ``Item.key`` is its
  manifest ``path`` (unique), ``Item.outputs`` the relative paths under ``OUT`` that must all
  exist for the item to be complete, **the last one being its completion marker** (e.g. the
  mask), ``Item.fields`` the manifest fields known from planning (input paths),
  ``Item.inputs`` its input files (read-ahead sizing), ``Item.error`` a planning failure
  (missing partner...), ``Item.extra`` anything the job needs to read it.
- ``read(item) -> data``: decode the inputs (runs in reader threads; raise ``ValueError`` with
  a clear message for a bad input, the item is then recorded as failed).
- ``batch_key(item, data)``: items with equal keys may share one ``compute`` call (at most
  ``max_batch``; e.g. same image size).
- ``setup()``: once, in the process that computes, before the first ``compute`` (load models).
- ``compute(items, datas) -> [result]``: the per-item work, batched (runs in the computing
  thread; an ``Exception`` instance in the list marks that item failed; raising retries the
  batch item by item so that one bad item is isolated).
- ``encode(item, data, result) -> (files, fields)``: ``files`` = [(relative path, bytes)]
  including the completion marker, ``fields`` = manifest fields (runs in writer threads).
- optional: ``info(item, data)`` (fields known once read, e.g. size; also in failure lines),
  ``recover(item, OUT)`` (fields of a complete item whose manifest line was lost),
  ``settings()`` (what changes output content), ``validate()``, ``exclude()``,
  ``summary_lines()``, ``name`` / ``noun`` for messages.

What the engine guarantees
--------------------------
- Atomic outputs: every file goes to a ``*.desra-tmp`` file in its directory, is fsync'ed and
  renamed onto its final name, the completion marker last (:func:`store.write_outputs`); an
  item is complete iff all its outputs exist. Stale tmp files are removed on start.
- ``OUT/manifest.jsonl``: append-only, one JSON line per item outcome
  (``{"path": ..., **fields, "error": null | "what went wrong", "seconds": ...}``), one
  ``write`` per line, fsync'ed every second and at the end; a torn last line is cut on
  restart; the last line of a path counts. A complete item without its line gets one
  recomputed by ``recover`` (``"recovered": true``).
- Resume: complete items are skipped, so a job killed at any moment (SIGKILL) redoes at most
  the items in flight. Items recorded as failed are not retried unless
  ``RunOptions(retry_failed=True)`` (``--retry-failed``); they still count as failed.
- ``OUT/.desra-fast.lock`` (flock) refuses a second job on the same folder;
  ``OUT/.desra-fast-job.json`` records ``settings()`` and refuses a restart with others.
- Overlap: ``workers`` reader threads decode ahead and ``workers`` writer threads encode and
  write while ``compute`` runs, with bounded queues (memory bounded whatever the job size);
  a tqdm bar (images/s, ETA) on a terminal; :func:`format_summary` for the end.
- Other executors (the Ray engine of :mod:`desra_fast.pipeline`) reuse the triage, the
  manifest and :func:`read_items` / :func:`compute_items` / :func:`write_items`, so the same
  rules hold on every engine.

Example: a job that writes the negative of every image of a folder::

    class Negate(FolderJob):
        name, noun = "negate", "image"

        def __init__(self, src):
            self.src = src

        def plan(self):
            return [Item(rel, (rel.rsplit(".", 1)[0] + ".png",), {"input": rel},
                         (os.path.join(self.src, rel),))
                    for (rel,) in sorted(imageio.list_images(self.src).values())]

        def read(self, item):
            return imageio.read_rgb(item.inputs[0])

        def compute(self, items, datas):
            return [255 - d for d in datas]

        def encode(self, item, data, result):
            return [(item.outputs[0], png_bytes(result))], {"size": list(result.shape[:2])}

    res = run_job(Negate("in/"), "out/", RunOptions(workers=2))
"""
from . import store
from .engine import (TASK_BYTES, FolderJob, Item, JobResult, Recorder, RunOptions, compute_items,
                     describe, failure_record, format_summary, iter_computed, progress_bar, read_items,
                     record,
                     run_job, run_local, write_items)
from .store import MANIFEST, JobError, read_manifest

__all__ = ["FolderJob", "Item", "JobResult", "JobError", "RunOptions", "run_job", "run_local",
           "format_summary", "read_manifest", "read_items", "compute_items",
           "write_items", "iter_computed", "failure_record", "record", "describe", "progress_bar", "Recorder",
           "MANIFEST", "TASK_BYTES", "store"]
