"""What every folder-job command does around :func:`desra_fast.jobs.run_job`: options from the
shared flags, one clear error line, the summary, and the exit code (1 when any input failed,
the job could not start, or there was nothing to do)."""
from __future__ import annotations

import sys
from typing import Callable


def add_job_arguments(parser, items: str = "images") -> None:
    """The flags every folder job shares (read back by :func:`run_options`)."""
    from ._args import positive_int

    parser.add_argument("--workers", type=positive_int, default=2,
                        help=f"threads decoding, and threads writing, {items} while the job computes (default 2)")
    parser.add_argument("--retry-failed", action="store_true",
                        help=f"retry {items} an earlier run recorded as failed (default: keep their error)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (default: bar on a terminal)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="do not fsync each file before renaming it into place (faster on slow disks; "
                        "still safe against killed jobs, but not against power loss)")


def run_options(args):
    """``RunOptions`` from ``--workers``, ``--retry-failed``, ``--no-progress``, ``--no-fsync``."""
    from ..jobs import RunOptions

    return RunOptions(workers=args.workers, retry_failed=args.retry_failed,
                      progress=False if args.no_progress else None, fsync=not args.no_fsync)


def run_and_report(job, start: Callable, empty: str) -> int:
    """Run ``start()`` (returns a JobResult), print the summary of ``job``; returns the exit code.
    ``empty`` is the error printed when the job found no inputs."""
    from ..jobs import JobError, format_summary
    from ..utils import ListFileError

    try:
        res = start()
    except (JobError, ListFileError) as exc:
        print(f"desra-fast {job.name}: error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(job, res), file=sys.stderr)
    if res.items == 0:
        print(f"desra-fast {job.name}: error: {empty}", file=sys.stderr)
        return 1
    return res.exit_code
