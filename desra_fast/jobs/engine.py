"""The engine of a folder job: plan -> triage against what is on disk -> read / compute / write
with bounded look-ahead -> manifest lines, progress bar, result. See :mod:`desra_fast.jobs`."""
from __future__ import annotations

import collections
import concurrent.futures as cf
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

from . import store
from .store import JobError

#: Group items into read tasks of up to this many input bytes (amortises per-task overhead for
#: small images while keeping a task of big images to one item).
TASK_BYTES = 2 << 20


@dataclass
class Item:
    """One unit of work of a folder job.

    ``key`` is the item's manifest ``path`` (unique in the job); ``outputs`` the relative paths
    under the output folder that must all exist for the item to be complete, the *last* one
    being its completion marker (written last); ``fields`` the manifest fields known from
    planning (input paths...); ``inputs`` absolute input paths (read-ahead sizing);
    ``error`` set when planning found the item cannot be processed; ``extra`` free for the job.
    """

    key: str
    outputs: Tuple[str, ...]
    fields: Dict[str, Any] = field(default_factory=dict)
    inputs: Tuple[str, ...] = ()
    error: Optional[str] = None
    extra: Any = None


class FolderJob:
    """Base class of a job; override the methods marked *required* (see :mod:`desra_fast.jobs`)."""

    #: command word in messages ("detect"), and what an item is called in the summary.
    name = "job"
    noun = "item"
    #: at most this many items per read task, and per ``compute`` call.
    task_max_items = 16
    max_batch = 16

    def validate(self) -> None:
        """Raise JobError if the job cannot run at all (missing folders...)."""

    def settings(self) -> Dict[str, Any]:
        """Settings that change output content; a restart with other settings is refused."""
        return {}

    def exclude(self) -> Sequence[str]:
        """Folders the planner must not search (the output folder)."""
        return ()

    def plan(self) -> List[Item]:  # required
        raise NotImplementedError

    def setup(self) -> None:
        """Called once before the first ``compute`` in the process that computes (load models)."""

    def read(self, item: Item) -> Any:  # required; runs in reader threads
        raise NotImplementedError

    def info(self, item: Item, data: Any) -> Dict[str, Any]:
        """Manifest fields known once the item is read (size...); also in failure lines."""
        return {}

    def batch_key(self, item: Item, data: Any) -> Hashable:
        """Items with equal keys may be computed in one call (same size...)."""
        return id(data)

    def compute(self, items: List[Item], datas: List[Any]) -> List[Any]:  # required; main thread
        """One result per item (an Exception instance marks that item failed). Raising makes
        the engine retry the items one by one, so that one bad item is isolated."""
        raise NotImplementedError

    def encode(self, item: Item, data: Any, result: Any) -> Tuple[List[Tuple[str, bytes]], Dict[str, Any]]:
        """(files as (relative path, bytes), manifest fields); runs in writer threads. The
        files must include ``item.outputs[-1]``; the engine writes it last."""
        raise NotImplementedError

    def recover(self, item: Item, out_dir: Path) -> Dict[str, Any]:
        """Manifest fields of an item whose outputs exist but whose line is missing (the job
        was killed between the rename and the append)."""
        return {}

    def summary_lines(self) -> List[str]:
        """Lines of the summary saying where the outputs are."""
        return []


@dataclass
class JobResult:
    """Outcome of a run. ``failed`` maps item path -> error for every failed item of the job,
    including failures recorded by an earlier run and not retried."""

    items: int = 0
    written: int = 0
    skipped: int = 0
    recovered: int = 0
    failed: Dict[str, str] = field(default_factory=dict)
    not_retried: int = 0  # failures recorded by an earlier run, skipped (no --retry-failed)
    seconds: float = 0.0
    stale_tmp_removed: int = 0

    @property
    def pairs(self) -> int:  # the detection job's name for its items
        return self.items

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


@dataclass
class RunOptions:
    """How a job runs (none of these change output content)."""

    workers: int = 2
    retry_failed: bool = False
    progress: Optional[bool] = None  # None: only when the log is a terminal
    fsync: bool = True


class Recorder:
    """Turns item outcomes into manifest lines and result counts (used by every executor)."""

    def __init__(self, manifest: store.Manifest, res: JobResult, bar=None):
        self.manifest, self.res, self.bar = manifest, res, bar

    def finish(self, rec: dict) -> None:
        self.manifest.append(rec)
        if rec.get("error") is not None:
            self.res.failed[rec["path"]] = rec["error"]
        else:
            self.res.written += 1
        if self.bar is not None:
            self.bar.update(1)


def record(item: Item, **fields) -> dict:
    """A manifest line: ``{"path": item.key, **item.fields, **fields}``."""
    rec = {"path": item.key}
    rec.update(item.fields)
    rec.update(fields)
    return rec


def describe(exc: BaseException) -> str:
    """The ``error`` text of a failed item: the message of a ValueError (our own clear errors),
    else ``Type: message``."""
    msg = str(exc)
    return msg if isinstance(exc, ValueError) and msg else f"{type(exc).__name__}: {msg}"


Executor = Callable[[FolderJob, Path, List[Item], RunOptions, Recorder, Any], None]


def run_job(job: FolderJob, out_dir: str, options: Optional[RunOptions] = None, *, log=sys.stderr,
            executor: Optional[Executor] = None) -> JobResult:
    """Run (or resume) ``job`` writing into ``out_dir``; returns the :class:`JobResult`.

    ``executor(job, out_dir, todo, options, recorder, log)`` runs the items left to do; the
    default runs them in this process (:func:`run_local`). Raises JobError if the job cannot
    start; per-item failures are in the result instead.
    """
    opts = options or RunOptions()
    t_start = time.perf_counter()
    job.validate()
    if opts.workers < 1:
        raise JobError(f"--workers must be >= 1, got {opts.workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock_fd = store.lock(out)
    log_level = _silence_opencv()
    try:
        store.check_settings(out, job.settings())
        res = _run_locked(job, out, opts, executor or run_local, log)
    finally:
        _restore_opencv(log_level)
        os.close(lock_fd)
    res.seconds = time.perf_counter() - t_start
    return res


def _run_locked(job: FolderJob, out: Path, opts: RunOptions, executor: Executor, log) -> JobResult:
    res = JobResult()
    present, res.stale_tmp_removed = store.scan_outputs(out)
    previous = store.read_manifest(out / store.MANIFEST)
    items = job.plan()
    res.items = len(items)
    manifest = store.Manifest(out / store.MANIFEST, opts.fsync)
    rec = Recorder(manifest, res)
    try:
        todo: List[Item] = []
        for it in items:
            last = previous.get(it.key)
            if it.error is not None:
                res.failed[it.key] = it.error
                if not (last and last.get("error") == it.error):
                    manifest.append(record(it, error=it.error))
            elif all(o in present for o in it.outputs):
                res.skipped += 1
                if not last or last.get("error") is not None:
                    manifest.append(record(it, **job.recover(it, out), seconds=None, error=None, recovered=True))
                    res.recovered += 1
            elif last and last.get("error") and not opts.retry_failed:
                res.failed[it.key] = last["error"]
                res.not_retried += 1
            else:
                todo.append(it)
        if res.stale_tmp_removed:
            print(f"desra-fast: removed {res.stale_tmp_removed} unfinished temporary file(s) of an "
                  f"interrupted run", file=log)
        if todo:
            executor(job, out, todo, opts, rec, log)
    finally:
        manifest.close()
    return res


def progress_bar(total: int, opts: RunOptions, log, desc: str = "desra-fast"):
    """tqdm bar (images/s, ETA) on the log when it is a terminal (or ``opts.progress``)."""
    from tqdm import tqdm

    show = opts.progress if opts.progress is not None else (hasattr(log, "isatty") and log.isatty())
    return tqdm(total=total, unit="img", disable=not show, file=log, dynamic_ncols=True,
                smoothing=0.1, desc=desc)


# ---------------------------------------------------------------------------------------------
# the local executor: reader threads -> compute in this thread -> writer threads

def read_items(job: FolderJob, items: Sequence[Item]) -> List[Tuple[Item, Any, Optional[str], float]]:
    """[(item, data, error, seconds)]: ``job.read`` on each item, failures caught."""
    out = []
    for it in items:
        t0 = time.perf_counter()
        try:
            out.append((it, job.read(it), None, time.perf_counter() - t0))
        except Exception as exc:  # one bad input must not stop the job
            out.append((it, None, describe(exc), time.perf_counter() - t0))
    return out


def iter_computed(job: FolderJob, decoded: List[Tuple[Item, Any, float]]
                  ) -> Iterator[List[Tuple[Item, Any, Any, Optional[str], float]]]:
    """Run ``job.compute`` on same-``batch_key`` groups of up to ``job.max_batch`` read items
    (one call per item if a batched call raises); yields, per call, [(item, data, result, error,
    seconds)] where seconds adds the item's share of the compute time to its read time."""
    groups: Dict[Hashable, List[Tuple[Item, Any, float]]] = {}
    for d in decoded:
        groups.setdefault(job.batch_key(d[0], d[1]), []).append(d)
    step = max(1, job.max_batch)
    for group in groups.values():
        for i in range(0, len(group), step):
            yield _compute_group(job, group[i:i + step])


def compute_items(job: FolderJob, decoded: List[Tuple[Item, Any, float]]
                  ) -> List[Tuple[Item, Any, Any, Optional[str], float]]:
    """All of :func:`iter_computed` as one list."""
    return [r for batch in iter_computed(job, decoded) for r in batch]


def _compute_group(job: FolderJob, group):
    t0 = time.perf_counter()
    try:
        results = job.compute([g[0] for g in group], [g[1] for g in group])
        if len(results) != len(group):
            raise RuntimeError(f"internal error: {len(results)} results for {len(group)} items")
        share = (time.perf_counter() - t0) / len(group)
        timed = [(r, share) for r in results]
    except Exception:
        timed = []
        for it, data, _ in group:
            t1 = time.perf_counter()
            try:
                (r,) = job.compute([it], [data])
            except Exception as exc:
                r = exc
            timed.append((r, time.perf_counter() - t1))
    out = []
    for (it, data, secs), (r, dt) in zip(group, timed):
        if isinstance(r, BaseException):
            out.append((it, data, None, describe(r), secs + dt))
        else:
            out.append((it, data, r, None, secs + dt))
    return out


def write_items(job: FolderJob, out_dir: str, items, fsync: bool) -> List[dict]:
    """Encode and atomically write computed items; returns one manifest line per item."""
    records = []
    for it, data, result, seconds in items:
        t0 = time.perf_counter()
        info = _safe_info(job, it, data)
        try:
            files, fields = job.encode(it, data, result)
            store.write_outputs(out_dir, files, it.outputs[-1], fsync)
            rec = record(it, **info, **fields, error=None)
        except Exception as exc:
            rec = record(it, **info, error=describe(exc))
        rec["seconds"] = round(seconds + time.perf_counter() - t0, 6)
        records.append(rec)
    return records


def _safe_info(job: FolderJob, it: Item, data: Any) -> Dict[str, Any]:
    try:
        return job.info(it, data) if data is not None else {}
    except Exception:  # pragma: no cover - info only reads attributes of decoded data
        return {}


def failure_record(job: FolderJob, it: Item, data: Any, error: str, seconds: float) -> dict:
    return record(it, **_safe_info(job, it, data), error=error, seconds=round(seconds, 6))


def chunk_items(items: Sequence[Item], max_items: int) -> Iterator[List[Item]]:
    """The read tasks of a job: consecutive items, at most ``max_items`` and about
    ``TASK_BYTES`` of input each (the Ray engine sends the same chunks, so both engines batch alike)."""
    chunk, size = [], 0
    for it in items:
        nbytes = 0
        for p in it.inputs:
            try:
                nbytes += os.path.getsize(p)
            except OSError:
                pass
        if chunk and (size + nbytes > TASK_BYTES or len(chunk) >= max_items):
            yield chunk
            chunk, size = [], 0
        chunk.append(it)
        size += nbytes
    if chunk:
        yield chunk


def run_local(job: FolderJob, out_dir: Path, todo: List[Item], opts: RunOptions, rec: Recorder, log) -> None:
    """Run ``todo`` in this process: ``opts.workers`` reader threads decode ahead, this thread
    computes (same-size items batched), ``opts.workers`` writer threads encode and write, with
    at most ``2 * workers + 1`` tasks in flight each way (memory stays bounded)."""
    bar = rec.bar = progress_bar(len(todo), opts, log, desc=f"desra-fast {job.name}")
    depth = 2 * opts.workers + 1
    chunks = chunk_items(todo, job.task_max_items)
    reads: Deque[cf.Future] = collections.deque()
    writes: set = set()

    def collect_writes(block_until: int) -> None:
        nonlocal writes
        while len(writes) > block_until:
            done, writes = cf.wait(writes, return_when=cf.FIRST_COMPLETED)
            for f in done:
                for r in f.result():
                    rec.finish(r)
        done = {f for f in writes if f.done()}
        writes -= done
        for f in done:
            for r in f.result():
                rec.finish(r)

    def submit_read() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            reads.append(reader.submit(read_items, job, chunk))

    # Decoding and writing run in threads of this process: OpenCV's decoders/encoders, file
    # I/O, fsync, torch and the detection kernels release the GIL, so the stages overlap
    # without pickling images to other processes (a process pool measured slower on 2 cores
    # and could outlive a SIGKILLed job).
    reader = cf.ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="desra-read")
    writer = cf.ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="desra-write")
    try:
        for _ in range(depth):
            submit_read()
        job.setup()  # loads models while the first reads run; fails once, clearly
        while reads:
            decoded = reads.popleft().result()
            submit_read()
            ok = []
            for it, data, err, secs in decoded:
                if err is not None:
                    rec.finish(failure_record(job, it, None, err, secs))
                else:
                    ok.append((it, data, secs))
            for batch in iter_computed(job, ok):
                out_items = []
                for it, data, result, err, secs in batch:
                    if err is not None:
                        rec.finish(failure_record(job, it, data, err, secs))
                    else:
                        out_items.append((it, data, result, secs))
                if out_items:  # written while the next batch computes
                    collect_writes(depth - 1)
                    writes.add(writer.submit(write_items, job, str(out_dir), out_items, opts.fsync))
            collect_writes(depth)
        collect_writes(0)
    finally:
        # Interrupted (Ctrl-C, error): let running writes finish and log them, so that a
        # restart does not need to recover their lines; queued ones are dropped.
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
        for f in writes:
            if f.done() and not f.cancelled() and f.exception() is None:
                for r in f.result():
                    rec.finish(r)
        bar.close()


def format_summary(job: FolderJob, res: JobResult, max_errors: int = 20) -> str:
    """Human-readable end-of-job summary."""
    rate = res.written / res.seconds if res.seconds > 0 else math.nan
    lines = [
        f"desra-fast {job.name}: {res.items} {job.noun}(s): {res.written} written, {res.skipped} already done"
        + (f" ({res.recovered} manifest line(s) recovered)" if res.recovered else "")
        + f", {len(res.failed)} failed; {res.seconds:.1f} s ({rate:.2f} images/s)",
    ]
    lines += job.summary_lines()
    if res.failed:
        lines.append(f"  failed {job.noun}s:")
        for path, err in list(sorted(res.failed.items()))[:max_errors]:
            lines.append(f"    {path}: {err}")
        if len(res.failed) > max_errors:
            lines.append(f"    ... and {len(res.failed) - max_errors} more (see the manifest)")
        if res.not_retried:
            lines.append(f"  ({res.not_retried} failure(s) recorded by an earlier run were not retried; "
                         f"use --retry-failed to retry them)")
    return "\n".join(lines)


def _silence_opencv():
    """Decoding errors are reported in the manifest; OpenCV's own log lines would be noise."""
    try:
        import cv2

        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        return level
    except AttributeError:  # pragma: no cover
        return None


def _restore_opencv(level) -> None:
    if level is not None:
        import cv2

        cv2.utils.logging.setLogLevel(level)
