"""The model arguments of folder jobs: a file or a packaged model name, and the fingerprint a
job stores in its settings so that a restart with other weights under the same name is refused."""
from __future__ import annotations

import os
from pathlib import Path

from ..utils import file_sha256
from .store import JobError


def file_fingerprint(path: str) -> str:
    """Hex sha256 of a model file (with the ``.bin`` of an ncnn ``.param``; every file of a
    Hugging Face folder, sorted by path), so that a restart with other weights under the same
    name is refused.

    Raises:
        JobError: a file cannot be read.
    """
    paths = [path]
    if os.path.isdir(path):
        paths = sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
    elif str(path).endswith(".param"):
        paths.append(str(Path(path).with_suffix(".bin")))
    try:
        return file_sha256(*paths)
    except OSError as exc:
        raise JobError(f"cannot read model {exc.filename or path}: {exc.strerror or exc}") from exc


def resolve_model(source: str, flag: str) -> str:
    """A model file path, or the path of a packaged model name (``realesrgan-x4plus``, ``srmd-x4``:
    :mod:`desra_fast.models.zoo`); JobError when it is neither."""
    if os.path.exists(source):
        return source
    from ..models import zoo

    if source in zoo.MODELS:
        try:
            return str(zoo.packaged_model(source))
        except FileNotFoundError as exc:
            raise JobError(f"{flag} {source}: {exc}") from exc
    raise JobError(f"{flag} {source}: no such file (nor a packaged model name: {', '.join(zoo.available_models())})")
