"""On-disk state of a folder job: manifest, lock, settings file, output scan, atomic output writes.

Everything here is safe against a job killed at any moment (SIGKILL included): outputs reach
their final names only complete (:func:`write_outputs`), the manifest is append-only and a torn
last line is cut off (:func:`read_manifest`), and the files of an interrupted run are found and
cleaned by :func:`scan_outputs`.
"""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Tuple

from ..utils import scan_files, write_bytes_atomic

MANIFEST = "manifest.jsonl"
LOCK_FILE = ".desra-fast.lock"
JOB_FILE = ".desra-fast-job.json"
MANIFEST_FSYNC_SECONDS = 1.0


class JobError(RuntimeError):
    """The job cannot run at all (bad folders, another job running, settings changed)."""


def read_manifest(path: Path) -> Dict[str, dict]:
    """Last record per ``path`` field of an existing manifest.

    A torn last line (the job was killed while appending it) is cut off the file, so that the
    next append starts on a fresh line. Unparsable complete lines are ignored."""
    records: Dict[str, dict] = {}
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return records
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
        data = data[:end]
    for line in data.splitlines():
        rec = parse_manifest_line(line)
        if rec is not None:
            records[rec["path"]] = rec
    return records


def parse_manifest_line(line: bytes) -> Optional[dict]:
    """The record of one manifest line, or None when the line is not a JSON object with a
    string ``path`` (a corrupt line: readers skip it)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("path"), str) else None


def iter_manifest(path: Path) -> Iterator[Tuple[int, Optional[dict]]]:
    """Stream a manifest without changing it: ``(byte offset, record or None)`` per complete
    line (None: corrupt, see :func:`parse_manifest_line`; blank lines are not yielded), in
    file order, so memory does not grow with the file. A torn last line (no newline) is not
    yielded. For readers only; a job's restart uses :func:`read_manifest`."""
    with open(path, "rb") as fh:
        offset = 0
        for line in fh:
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                break
            if line.strip():
                yield start, parse_manifest_line(line)


class Manifest:
    """Append-only JSON lines; one ``os.write`` per line on an O_APPEND descriptor, fsync'ed at
    most every :data:`MANIFEST_FSYNC_SECONDS` and on :meth:`close`."""

    def __init__(self, path: Path, fsync: bool = True):
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


def lock(out_dir: Path) -> int:
    """Take the job lock of ``out_dir`` (flock on OUT_DIR/.desra-fast.lock); returns its fd.

    Waits up to 5 s (a job that is just exiting may hold it a moment longer), then raises
    JobError."""
    import fcntl

    fd = os.open(Path(out_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + 5.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                os.close(fd)
                raise JobError(f"another desra-fast job is writing to {out_dir} "
                               f"(lock {Path(out_dir) / LOCK_FILE} is held)") from exc
            time.sleep(0.1)


def check_settings(out_dir: Path, settings: Dict[str, object]) -> None:
    """Record ``settings`` in OUT_DIR/.desra-fast-job.json, or refuse (JobError) if the folder
    holds outputs made with other settings."""
    path = Path(out_dir) / JOB_FILE
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples -> lists...)
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old is not None and old != settings:
            raise JobError(
                f"{out_dir} holds outputs made with other settings {old}; this run asks for {settings}. "
                f"Use another output folder (or delete {path} together with the old outputs)."
            )
        if old is not None:
            return
    write_bytes_atomic(path, (json.dumps(settings) + "\n").encode())


def scan_outputs(out_dir: Path) -> Tuple[set, int]:
    """(set of '/'-separated relative paths of the files under out_dir, number of stale
    ``*.desra-tmp`` files of an interrupted run removed)."""
    return scan_files(out_dir)


def write_outputs(out_dir: str, files: Iterable[Tuple[str, bytes]], commit: str, fsync: bool = True) -> None:
    """Atomically write ``files`` ((relative path, bytes) pairs) under ``out_dir``, the
    ``commit`` file (the item's completion marker) last, so that its presence under its final
    name implies that every other file of the item is complete."""
    last = None
    for rel, data in files:
        if rel == commit:
            last = data
            continue
        write_bytes_atomic(os.path.join(out_dir, rel), data, fsync=fsync)
    if last is None:
        raise RuntimeError(f"internal error: the job did not produce its output {commit}")
    write_bytes_atomic(os.path.join(out_dir, commit), last, fsync=fsync)
