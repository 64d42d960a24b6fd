"""The small file helpers every layer shares: one atomic writer, one file hash, one cache folder,
one list-file format.

This module is the bottom of the package: it imports nothing from ``desra_fast`` so that any
layer (detection core, models, runtime, jobs, pipeline, train, cli) may use it.
"""
from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Iterable, List, Set, Tuple, Union

PathLike = Union[str, os.PathLike]

#: Suffix of temporary files; only files ending with it are ever deleted as stale
#: (:func:`scan_files`).
TMP_SUFFIX = ".desra-tmp"

#: File name endings read as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")

_tmp_counter = itertools.count()


class ListFileError(ValueError):
    """A list file (``--only``, ``--list``) cannot be read or decoded."""


def write_bytes_atomic(path: PathLike, data, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent/old or complete, never partial.

    The temporary file lives in the destination directory (a rename across filesystems would not
    be atomic) and is named ``.<name>.<pid>.<n>.desra-tmp``, so that a killed writer leaves only a
    file that :func:`scan_files` recognises. With ``fsync`` the
    data reach the disk before the rename, so even a power loss cannot expose a truncated file
    under its name.

    Args:
        path: destination file; its parent folders are created.
        data: bytes-like (``bytes``, ``bytearray``, ``memoryview``, a buffer).
        fsync: flush the data to the disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{next(_tmp_counter)}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def scan_files(root: PathLike) -> Tuple[Set[str], int]:
    """Walk ``root``: the files there, with the stale temporary files of killed writers removed.

    Returns:
        (set of '/'-separated paths relative to ``root`` of every file except ``*.desra-tmp``
        ones, number of ``*.desra-tmp`` files deleted). A missing ``root`` gives ``(set(), 0)``.
    """
    present, removed = set(), 0
    for dirpath, _dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in files:
            if name.endswith(TMP_SUFFIX):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            present.add(rel.replace(os.sep, "/"))
    return present, removed


def file_sha256(*paths: PathLike) -> str:
    """Hex SHA-256 (64 lowercase hex digits) of the bytes of one file, or of several files read
    one after the other in the given order (an ncnn ``.param`` with its ``.bin``; no file: the
    hash of no bytes).

    Raises:
        OSError: a file cannot be read (callers add what the file was for).
    """
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def cache_dir(*parts: str) -> Path:
    """The cache folder (exported ONNX files, TensorRT engines, VGG19 weights...), or a
    sub-folder of it named by ``parts``; not created.

    ``$DESRA_FAST_CACHE`` if set, else ``$XDG_CACHE_HOME/desra_fast``, else
    ``~/.cache/desra_fast``.
    """
    env = os.environ.get("DESRA_FAST_CACHE")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "desra_fast"
    return base.joinpath(*parts)


def _list_key(line: str) -> str:
    """A list line as an image key: posix separators, no leading ``./``, and an image extension
    (:data:`IMAGE_EXTENSIONS`) dropped; other dots stay (``n01.x`` names the key ``n01.x``)."""
    name = line.replace(os.sep, "/")
    while name.startswith("./"):
        name = name[2:]
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name


def read_list(path: PathLike) -> List[str]:
    """The image keys of a list file (``desra-fast select``'s ``train.txt``/``val.txt``, read by
    ``run --only``, ``finetune --list``, ``evaluate-finetune --list``).

    Format: UTF-8 text, one image a line, named by its path relative to the LR folder with or
    without its extension; blank lines and lines starting with ``#`` are skipped. Every line is
    returned as a *key*: the relative path with posix separators and without its image extension,
    which is how every folder job pairs files, so a list written with extensions and one written
    without select the same images.

    Returns:
        keys in file order, duplicates kept (possibly empty).

    Raises:
        ListFileError: the file is missing, unreadable, or not UTF-8 text.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ListFileError(f"cannot read list {os.fspath(path)}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ListFileError(f"list {os.fspath(path)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(_list_key(line))
    return keys


def write_list(path: PathLike, names: Iterable[str], *, fsync: bool = True) -> None:
    """Write a list file (see :func:`read_list`) atomically: one name a line, as given.

    Raises:
        ListFileError: a name is empty, starts with ``#``, or holds a line break (it would not
            read back as itself).
    """
    lines = []
    for name in names:
        name = str(name)
        if name.strip() != name or not name or name.startswith("#") or name.splitlines() != [name]:
            raise ListFileError(f"cannot write {name!r} to the list {os.fspath(path)}: it would not read back")
        lines.append(name + "\n")
    write_bytes_atomic(path, "".join(lines).encode("utf-8"), fsync=fsync)


__all__ = ["write_bytes_atomic", "file_sha256", "cache_dir", "read_list", "write_list", "ListFileError",
           "TMP_SUFFIX", "IMAGE_EXTENSIONS"]
