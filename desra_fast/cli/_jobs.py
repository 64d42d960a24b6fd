"""What every folder-job command does around :func:`desra_fast.jobs.run_job`: options from the
shared flags, one clear error line, the summary, and the exit code (1 when any input failed,
the job could not start, or there was nothing to do)."""
from __future__ import annotations

import sys
from typing import Callable


def run_options(args):
    """``RunOptions`` from ``--workers``, ``--retry-failed``, ``--no-progress``, ``--no-fsync``."""
    from ..jobs import RunOptions

    return RunOptions(workers=args.workers, retry_failed=args.retry_failed,
                      progress=False if args.no_progress else None, fsync=not args.no_fsync)


def run_and_report(job, start: Callable, empty: str) -> int:
    """Run ``start()`` (returns a JobResult), print the summary of ``job``; returns the exit code.
    ``empty`` is the error printed when the job found no inputs."""
    from ..jobs import JobError, format_summary

    try:
        res = start()
    except JobError as exc:
        print(f"desra-fast {job.name}: error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(job, res), file=sys.stderr)
    if res.items == 0:
        print(f"desra-fast {job.name}: error: {empty}", file=sys.stderr)
        return 1
    return res.exit_code
