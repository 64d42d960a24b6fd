"""The resumable folder job behind ``desra-fast detect`` (kept for existing imports).

The job now lives in :mod:`desra_fast.jobs.detect` on the shared crash-safe engine
:mod:`desra_fast.jobs`; see there for the outputs, the manifest and the crash-safety rules.
"""
from __future__ import annotations

from .jobs.detect import (OVERLAY_DIR, DetectJob, JobConfig, Pair, find_pairs, format_summary,
                          make_detector, run_job)
from .jobs.engine import JobResult
from .jobs.store import MANIFEST, JobError, read_manifest

__all__ = ["JobConfig", "JobResult", "JobError", "Pair", "find_pairs", "read_manifest", "run_job",
           "format_summary", "make_detector", "DetectJob", "MANIFEST", "OVERLAY_DIR"]
