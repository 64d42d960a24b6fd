"""The resumable folder job behind ``desra-fast detect``.

What it does, for every GAN-SR / MSE-SR pair found at the same relative path (extension ignored)
under two folders (flat, or nested class folders such as ImageNet val):

1. reader threads decode the pair (and its label map with ``--seg``) ahead of time;
2. the main process runs :func:`desra_fast.detect` (same-size images batched together);
3. writer threads write the full-size mask ``OUT_DIR/<relative path>.png`` (0/255) and, with
   ``overlay=True``, a picture ``OUT_DIR/overlays/<relative path>.jpg``;
4. the main process appends one JSON line per pair to ``OUT_DIR/manifest.jsonl``.

Crash safety (a job killed at any moment, even by SIGKILL, loses nothing):

- every output file is written to a ``*.desra-tmp`` file in its directory, fsync'ed and renamed
  onto its final name, so *a mask is complete iff it exists under its final name*; stale tmp
  files of a killed run are removed when the next run starts;
- the overlay (if requested) is renamed into place before the mask, so a present mask implies a
  present overlay; the manifest line is appended after the mask;
- the manifest is append-only; each line goes out in one ``write`` (O_APPEND) and is fsync'ed
  every second and at the end. A torn last line (killed mid-write) is cut off on restart. A mask
  that exists without its manifest line (killed between rename and append) gets its line
  recomputed from the mask file (``"recovered": true``);
- on restart, pairs whose mask is complete are skipped, so at most the pairs in flight are redone.
  Pairs recorded as failed are *not* retried unless ``retry_failed`` (``--retry-failed``); they
  still count as failed in the summary and exit code;
- a lock file (``OUT_DIR/.desra-fast.lock``, flock) stops two jobs writing the same folder, and
  ``OUT_DIR/.desra-fast-job.json`` records the detection settings so a restart with different
  settings is refused instead of mixing masks of two settings.

Failures of single pairs (unreadable or corrupt file, missing partner, size mismatch, ambiguous
names, images under 11x11...) are recorded with an ``error`` in the manifest and the summary and
do not stop the job.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import errno
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import imageio

MANIFEST = "manifest.jsonl"
OVERLAY_DIR = "overlays"
LOCK_FILE = ".desra-fast.lock"
JOB_FILE = ".desra-fast-job.json"

#: Group pairs into decode tasks of up to this many input bytes (amortises per-task
#: overhead for small images while keeping a task of big images to one pair).
TASK_BYTES = 2 << 20
TASK_MAX_PAIRS = 16
MANIFEST_FSYNC_SECONDS = 1.0


class JobError(RuntimeError):
    """The job cannot run at all (bad folders, another job running, settings changed)."""


@dataclass
class JobConfig:
    """Settings of one ``desra-fast detect`` run (see :func:`run_job`)."""

    gan_dir: str
    mse_dir: str
    out_dir: str
    seg_dir: Optional[str] = None
    threshold: float = 0.7
    area_threshold: int = 4000
    window: str = "gaussian"
    backend: str = "auto"
    workers: int = 2
    overlay: bool = False
    retry_failed: bool = False
    progress: Optional[bool] = None  # None: only when stderr is a terminal
    fsync: bool = True

    def detection_settings(self) -> Dict[str, object]:
        """The settings that change mask content (stored in OUT_DIR/.desra-fast-job.json)."""
        return {"threshold": float(self.threshold), "area_threshold": int(self.area_threshold),
                "window": self.window, "seg": self.seg_dir is not None}


@dataclass
class Pair:
    key: str                  # relative path without extension, '/'-separated
    gan: Optional[str]        # relative paths under the input folders (None if missing)
    mse: Optional[str]
    seg: Optional[str] = None
    error: Optional[str] = None  # set when the pair cannot be processed (found while planning)

    @property
    def mask(self) -> str:
        return self.key + ".png"

    @property
    def overlay(self) -> str:
        return f"{OVERLAY_DIR}/{self.key}.jpg"


@dataclass
class JobResult:
    """Outcome of a run. ``failed`` maps mask path -> error for every failed pair of the job,
    including failures recorded by an earlier run and not retried."""

    pairs: int = 0
    written: int = 0
    skipped: int = 0
    recovered: int = 0
    failed: Dict[str, str] = field(default_factory=dict)
    not_retried: int = 0  # failures recorded by an earlier run, skipped (no --retry-failed)
    seconds: float = 0.0
    stale_tmp_removed: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ---------------------------------------------------------------------------------------------
# planning

def find_pairs(gan_dir: str, mse_dir: str, seg_dir: Optional[str] = None,
               exclude: Sequence[str] = ()) -> List[Pair]:
    """Pair the images of the two folders by relative path without extension (sorted by key).

    Pairs that cannot be processed carry an ``error`` (missing partner or label map, several
    files with the same name and different extensions). Folders in ``exclude`` (the output
    folder, if it lies inside an input folder) are not searched."""
    gan = imageio.list_images(gan_dir, exclude)
    mse = imageio.list_images(mse_dir, exclude)
    seg = imageio.list_images(seg_dir, exclude) if seg_dir is not None else None
    pairs = []
    for key in sorted(gan.keys() | mse.keys()):
        g, m = gan.get(key), mse.get(key)
        p = Pair(key, g[0] if g else None, m[0] if m else None)
        if g is None:
            p.error = f"missing partner: {m[0]} is in the MSE folder but no {key}.* in the GAN folder"
        elif m is None:
            p.error = f"missing partner: {g[0]} is in the GAN folder but no {key}.* in the MSE folder"
        elif len(g) > 1 or len(m) > 1:
            p.error = f"ambiguous name: several files for {key}: {sorted(g + m)}"
        elif seg is not None:
            s = seg.get(key)
            if not s:
                p.error = f"missing label map: no {key}.* in the segmentation folder"
            elif len(s) > 1:
                p.error = f"ambiguous name: several label maps for {key}: {sorted(s)}"
            else:
                p.seg = s[0]
        pairs.append(p)
    return pairs


def read_manifest(path: Path) -> Dict[str, dict]:
    """Last record per mask path of an existing manifest.

    A torn last line (the job was killed while appending it) is cut off the file, so that the
    next append starts on a fresh line. Unparsable complete lines are ignored."""
    records: Dict[str, dict] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return records
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
        data = data[:end]
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("path"), str):
            records[rec["path"]] = rec
    return records


class _Manifest:
    """Append-only JSON lines; one os.write per line on an O_APPEND descriptor."""

    def __init__(self, path: Path, fsync: bool):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.fsync = fsync
        self.last_sync = time.monotonic()

    def append(self, rec: dict) -> None:
        line = (json.dumps(rec, separators=(", ", ": ")) + "\n").encode("utf-8")
        n = os.write(self.fd, line)
        if n != len(line):  # pragma: no cover - regular files do not short-write
            raise OSError(errno.EIO, f"short write to manifest ({n} of {len(line)} bytes)")
        if self.fsync and time.monotonic() - self.last_sync > MANIFEST_FSYNC_SECONDS:
            os.fsync(self.fd)
            self.last_sync = time.monotonic()

    def close(self) -> None:
        if self.fsync:
            os.fsync(self.fd)
        os.close(self.fd)


def _lock(out_dir: Path) -> int:
    import fcntl

    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + 5.0  # a job that is just exiting may hold it a moment longer
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                os.close(fd)
                raise JobError(f"another desra-fast job is writing to {out_dir} "
                               f"(lock {out_dir / LOCK_FILE} is held)") from exc
            time.sleep(0.1)


def _check_settings(out_dir: Path, settings: Dict[str, object]) -> None:
    path = out_dir / JOB_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old is not None and old != settings:
            raise JobError(
                f"{out_dir} holds masks made with other settings {old}; this run asks for {settings}. "
                f"Use another --out folder (or delete {path} together with the old masks)."
            )
        if old is not None:
            return
    imageio.write_bytes_atomic(path, (json.dumps(settings) + "\n").encode())


def _scan_outputs(out_dir: Path) -> Tuple[set, int]:
    """(set of relative paths of files under out_dir, number of stale tmp files removed)."""
    present, removed = set(), 0
    for dirpath, _dirs, files in os.walk(out_dir):
        rel_dir = os.path.relpath(dirpath, out_dir)
        for name in files:
            if name.endswith(imageio.TMP_SUFFIX):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            present.add(rel.replace(os.sep, "/"))
    return present, removed


# ---------------------------------------------------------------------------------------------
# decode / write tasks (run in the job's reader and writer threads)

def _read_task(items: Sequence[Tuple[str, str, str, Optional[str]]]) -> List[dict]:
    """Decode pairs: [(key, gan_path, mse_path, seg_path)] -> [{key, gan, mse, seg, seconds} or {key, error}]."""
    out = []
    for key, gan_path, mse_path, seg_path in items:
        t0 = time.perf_counter()
        try:
            gan = imageio.read_rgb(gan_path)
            mse = imageio.read_rgb(mse_path)
            if gan.shape != mse.shape:
                raise ValueError(f"size mismatch: GAN-SR is {gan.shape[1]}x{gan.shape[0]}, "
                                 f"MSE-SR is {mse.shape[1]}x{mse.shape[0]} (W x H)")
            if gan.dtype != mse.dtype:
                # 8-bit v and 16-bit 257*v are the same value after scaling to 0..255: exact.
                gan, mse = (g.astype(np.uint16) * 257 if g.dtype == np.uint8 else g for g in (gan, mse))
            seg = None
            if seg_path is not None:
                seg = imageio.read_labels(seg_path)
                if seg.shape != gan.shape[:2]:
                    raise ValueError(f"size mismatch: label map is {seg.shape[1]}x{seg.shape[0]}, "
                                     f"images are {gan.shape[1]}x{gan.shape[0]} (W x H)")
            out.append({"key": key, "gan": gan, "mse": mse, "seg": seg,
                        "seconds": time.perf_counter() - t0})
        except Exception as exc:  # one bad pair must not stop the job
            out.append({"key": key, "error": _describe(exc), "seconds": time.perf_counter() - t0})
    return out


def _write_task(items: Sequence[dict], out_dir: str, fsync: bool) -> List[dict]:
    """Write overlays then masks; returns one manifest record per item."""
    import cv2

    from .overlay import make_overlay

    records = []
    for it in items:
        t0 = time.perf_counter()
        rec = it["record"]
        try:
            mask = it["mask"]
            if it.get("overlay"):
                pic = make_overlay(it["gan"], it["mse"], mask)
                imageio.write_bytes_atomic(os.path.join(out_dir, it["overlay"]),
                                           imageio.rgb_to_jpeg_bytes(pic), fsync=fsync)
                rec["overlay"] = it["overlay"]
            imageio.write_mask_png(os.path.join(out_dir, rec["path"]), mask, fsync=fsync)
            rec["artifact_fraction"] = float(np.count_nonzero(mask)) / mask.size
            if "regions" not in rec:
                rec["regions"] = int(cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0] - 1)
        except Exception as exc:
            rec["error"] = _describe(exc)
        rec["seconds"] = round(rec["seconds"] + time.perf_counter() - t0, 6)
        records.append(rec)
    return records


def _describe(exc: BaseException) -> str:
    msg = str(exc)
    return msg if isinstance(exc, ValueError) and msg else f"{type(exc).__name__}: {msg}"


# ---------------------------------------------------------------------------------------------
# main side

def _record(pair: Pair, **extra) -> dict:
    rec = {"path": pair.mask, "gan": pair.gan, "mse": pair.mse}
    if pair.seg is not None:
        rec["seg"] = pair.seg
    rec.update(extra)
    return rec


def _recover_record(out_dir: Path, pair: Pair) -> dict:
    """Manifest line for a mask written by a run killed before it appended the line."""
    import cv2

    mask = imageio.read_mask(out_dir / pair.mask) != 0
    n = int(cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0] - 1)
    return _record(pair, size=list(mask.shape), artifact_fraction=float(np.count_nonzero(mask)) / mask.size,
                   regions=n, seconds=None, error=None, recovered=True)


def _chunks(pairs: Sequence[Pair], cfg: JobConfig) -> Iterator[List[Tuple[str, str, str, Optional[str]]]]:
    chunk, size = [], 0
    for p in pairs:
        item = (p.key, os.path.join(cfg.gan_dir, p.gan), os.path.join(cfg.mse_dir, p.mse),
                os.path.join(cfg.seg_dir, p.seg) if p.seg is not None else None)
        try:
            nbytes = os.path.getsize(item[1]) + os.path.getsize(item[2])
        except OSError:
            nbytes = 0
        if chunk and (size + nbytes > TASK_BYTES or len(chunk) >= TASK_MAX_PAIRS):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += nbytes
    if chunk:
        yield chunk


def make_detector(backend: str) -> Callable:
    """``detect_fn`` for :func:`run_job`: :func:`desra_fast.detect` on numpy batches, or, for
    ``backend`` "triton"/"cuda", on torch tensors moved to the GPU (results back to numpy).

    Raises JobError when the backend cannot run here (so that the job fails once, clearly,
    instead of once per pair)."""
    from .api import detect

    if backend in ("auto", "cpu"):
        return detect
    try:
        import torch
    except ImportError as exc:
        raise JobError(f"--backend {backend} needs torch: {exc}") from exc
    from . import _native
    from .backends import triton_interpreter_enabled

    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif backend == "triton" and triton_interpreter_enabled():
        device = torch.device("cpu")  # Triton's interpreter (tests only; slow)
    else:
        raise JobError(f"--backend {backend} needs a CUDA device, and torch sees none; use --backend cpu")
    if backend == "cuda" and not _native.cuda_available():
        raise JobError(f"--backend cuda is not available: {_native.cuda_status()}")

    def detect_torch(gan, mse, seg=None, **kw):
        # (N, H, W, 3) numpy -> (N, 3, H, W) strided views of the tensors on the device
        g = torch.from_numpy(gan).to(device).permute(0, 3, 1, 2)
        m = torch.from_numpy(mse).to(device).permute(0, 3, 1, 2)
        s = torch.from_numpy(seg).to(device) if seg is not None else None
        mask, counts = detect(g, m, s, **kw)
        counts = counts.cpu().numpy() if hasattr(counts, "cpu") else np.asarray(counts)
        return mask.cpu().numpy(), counts

    return detect_torch


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


def run_job(cfg: JobConfig, detect_fn: Optional[Callable] = None, log=sys.stderr) -> JobResult:
    """Run (or resume) a folder job; see the module docstring.

    ``detect_fn(gan, mse, seg, *, threshold, area_threshold, window, backend, return_counts=True)``
    defaults to :func:`desra_fast.detect`; it gets (N, H, W, 3) batches of same-size pairs and
    must return ((N, H, W) bool masks, (N,) region counts).
    Raises JobError if the job cannot start; per-pair failures are in the result instead.
    """
    t_start = time.perf_counter()
    for name, d in (("--gan", cfg.gan_dir), ("--mse", cfg.mse_dir), ("--seg", cfg.seg_dir)):
        if d is not None and not os.path.isdir(d):
            raise JobError(f"{name} {d}: not a directory")
    if cfg.workers < 1:
        raise JobError(f"--workers must be >= 1, got {cfg.workers}")
    for name, d in (("--gan", cfg.gan_dir), ("--mse", cfg.mse_dir), ("--seg", cfg.seg_dir)):
        # Masks written into an input folder would be read back as inputs (and PNG inputs taken
        # for finished masks): the output must be a folder of its own (a sub-folder is fine).
        if d is not None and os.path.realpath(cfg.out_dir) == os.path.realpath(d):
            raise JobError(f"--out {cfg.out_dir} is the {name} folder; give the masks a folder of their own")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    lock_fd = _lock(out_dir)
    log_level = _silence_opencv()
    try:
        _check_settings(out_dir, cfg.detection_settings())
        result = _run_locked(cfg, out_dir, detect_fn, log)
    finally:
        _restore_opencv(log_level)
        os.close(lock_fd)
    result.seconds = time.perf_counter() - t_start
    return result


def _run_locked(cfg: JobConfig, out_dir: Path, detect_fn: Optional[Callable], log) -> JobResult:
    res = JobResult()
    present, res.stale_tmp_removed = _scan_outputs(out_dir)
    previous = read_manifest(out_dir / MANIFEST)
    pairs = find_pairs(cfg.gan_dir, cfg.mse_dir, cfg.seg_dir, exclude=[str(out_dir)])
    res.pairs = len(pairs)
    manifest = _Manifest(out_dir / MANIFEST, cfg.fsync)
    try:
        todo: List[Pair] = []
        for p in pairs:
            last = previous.get(p.mask)
            if p.error is not None:
                res.failed[p.mask] = p.error
                if not (last and last.get("error") == p.error):
                    manifest.append(_record(p, error=p.error))
            elif p.mask in present and (not cfg.overlay or p.overlay in present):
                res.skipped += 1
                if not last or last.get("error") is not None:
                    manifest.append(_recover_record(out_dir, p))
                    res.recovered += 1
            elif last and last.get("error") and not cfg.retry_failed:
                res.failed[p.mask] = last["error"]
                res.not_retried += 1
            else:
                todo.append(p)
        if res.stale_tmp_removed:
            print(f"desra-fast: removed {res.stale_tmp_removed} unfinished temporary file(s) of an "
                  f"interrupted run", file=log)
        if todo:
            _pipeline(cfg, out_dir, todo, detect_fn or make_detector(cfg.backend), manifest, res, log)
    finally:
        manifest.close()
    return res


def _pipeline(cfg: JobConfig, out_dir: Path, todo: List[Pair], detect_fn: Callable,
              manifest: _Manifest, res: JobResult, log) -> None:
    from tqdm import tqdm

    by_key = {p.key: p for p in todo}
    show = cfg.progress if cfg.progress is not None else log.isatty()
    bar = tqdm(total=len(todo), unit="img", disable=not show, file=log, dynamic_ncols=True,
               smoothing=0.1, desc="desra-fast")
    # Bounded look-ahead: at most `depth` decode tasks and `depth` write tasks in flight, so
    # memory stays bounded however many pairs the job has.
    depth = 2 * cfg.workers + 1
    chunks = _chunks(todo, cfg)
    reads: Deque[cf.Future] = collections.deque()
    writes: set = set()

    def finish(rec: dict) -> None:
        manifest.append(rec)
        if rec.get("error") is not None:
            res.failed[rec["path"]] = rec["error"]
        else:
            res.written += 1
        bar.update(1)

    def collect_writes(block_until: int) -> None:
        nonlocal writes
        while len(writes) > block_until:
            done, writes = cf.wait(writes, return_when=cf.FIRST_COMPLETED)
            for f in done:
                for rec in f.result():
                    finish(rec)
        done = {f for f in writes if f.done()}
        writes -= done
        for f in done:
            for rec in f.result():
                finish(rec)

    def submit_read() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            reads.append(reader.submit(_read_task, chunk))

    # Decoding and writing run in threads of this process: OpenCV's decoders/encoders, numpy's
    # file reads and os.write/fsync release the GIL, so they run in parallel with each other and
    # with detect (whose C++ kernels release it too), and no image is pickled to or from another
    # process. (A process pool measured slower on 2 cores: pickling, start-up, worker processes
    # outliving a SIGKILLed job.)
    reader = cf.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="desra-read")
    writer = cf.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="desra-write")
    for _ in range(depth):
        submit_read()
    try:
        while reads:
            decoded = reads.popleft().result()
            submit_read()
            out_items = []
            ok = []
            for d in decoded:
                p = by_key[d["key"]]
                if "error" in d:
                    finish(_record(p, error=d["error"], seconds=round(d["seconds"], 6)))
                else:
                    ok.append(d)
            for group in _same_size_groups(ok):
                out_items.extend(_detect_group(group, by_key, cfg, detect_fn, finish))
            if out_items:
                collect_writes(depth - 1)
                writes.add(writer.submit(_write_task, out_items, str(out_dir), cfg.fsync))
            else:
                collect_writes(depth)
        collect_writes(0)
    finally:
        # Interrupted (Ctrl-C, error): let running writes finish and log them, so that a
        # restart does not need to recover their lines; queued ones are dropped.
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
        for f in writes:
            if f.done() and not f.cancelled() and f.exception() is None:
                for rec in f.result():
                    finish(rec)
        bar.close()


def _same_size_groups(decoded: List[dict]) -> List[List[dict]]:
    groups: Dict[tuple, List[dict]] = {}
    for d in decoded:
        k = (d["gan"].shape, d["gan"].dtype.str, d["seg"] is not None)
        groups.setdefault(k, []).append(d)
    return list(groups.values())


def _detect_group(group: List[dict], by_key: Dict[str, Pair], cfg: JobConfig, detect_fn: Callable,
                  finish: Callable[[dict], None]) -> List[dict]:
    """Run detection on same-size pairs (one batched call; one call per pair if that fails, so
    that a bad pair is isolated). detect_fn always gets batches (N, H, W, 3), N >= 1.
    Returns write items; failures go straight to ``finish``."""
    kw = dict(threshold=cfg.threshold, area_threshold=cfg.area_threshold, window=cfg.window,
              backend=cfg.backend, return_counts=True)
    t0 = time.perf_counter()
    results: List[Tuple[Optional[np.ndarray], Optional[int], Optional[str], float]] = []
    try:
        gan = np.stack([d["gan"] for d in group])
        mse = np.stack([d["mse"] for d in group])
        seg = np.stack([d["seg"] for d in group]) if group[0]["seg"] is not None else None
        masks, counts = detect_fn(gan, mse, seg, **kw)
        share = (time.perf_counter() - t0) / len(group)
        results = [(np.asarray(masks[i], dtype=bool), int(counts[i]), None, share) for i in range(len(group))]
    except Exception:
        for d in group:
            t1 = time.perf_counter()
            try:
                one = (lambda a: None if a is None else a[None])
                m, c = detect_fn(one(d["gan"]), one(d["mse"]), one(d["seg"]), **kw)
                results.append((np.asarray(m[0], dtype=bool), int(c[0]), None, time.perf_counter() - t1))
            except Exception as exc:
                results.append((None, None, _describe(exc), time.perf_counter() - t1))
    items = []
    for d, (mask, count, err, secs) in zip(group, results):
        p = by_key[d["key"]]
        h, w = d["gan"].shape[:2]
        seconds = d["seconds"] + secs
        if err is not None:
            finish(_record(p, size=[h, w], error=err, seconds=round(seconds, 6)))
            continue
        item = {"mask": mask, "record": _record(p, size=[h, w], artifact_fraction=None, regions=count,
                                                seconds=seconds, error=None)}
        if cfg.overlay:
            item.update(overlay=p.overlay, gan=d["gan"], mse=d["mse"])
        items.append(item)
    return items


def format_summary(cfg: JobConfig, res: JobResult, max_errors: int = 20) -> str:
    """Human-readable end-of-job summary."""
    rate = res.written / res.seconds if res.seconds > 0 else math.nan
    lines = [
        f"desra-fast detect: {res.pairs} pair(s): {res.written} written, {res.skipped} already done"
        + (f" ({res.recovered} manifest line(s) recovered)" if res.recovered else "")
        + f", {len(res.failed)} failed; {res.seconds:.1f} s ({rate:.1f} images/s)",
        f"  masks:    {cfg.out_dir}/<relative path>.png",
    ]
    if cfg.overlay:
        lines.append(f"  overlays: {os.path.join(cfg.out_dir, OVERLAY_DIR)}/<relative path>.jpg")
    lines.append(f"  manifest: {os.path.join(cfg.out_dir, MANIFEST)}")
    if res.failed:
        lines.append("  failed pairs:")
        for path, err in list(sorted(res.failed.items()))[:max_errors]:
            lines.append(f"    {path}: {err}")
        if len(res.failed) > max_errors:
            lines.append(f"    ... and {len(res.failed) - max_errors} more (see the manifest)")
        if res.not_retried:
            lines.append(f"  ({res.not_retried} failure(s) recorded by an earlier run were not retried; "
                         f"use --retry-failed to retry them)")
    return "\n".join(lines)


__all__ = ["JobConfig", "JobResult", "JobError", "Pair", "find_pairs", "read_manifest", "run_job",
           "format_summary", "MANIFEST", "OVERLAY_DIR"]
