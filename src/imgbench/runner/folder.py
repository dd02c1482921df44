"""The results folder as storage: whether it can be written before a run starts, and what a run says when it
cannot write there any more (a full disk, a folder made read-only, a folder deleted or unmounted mid-run).

Such a failure stops the run with one :class:`ResultsFolderError`, whose message says what happened, what was
kept (every job with a finished record) and what to do; the command line prints it and exits
``WRITE_FAILED``. Nothing finished is lost: each job's record was complete before the next one started, and
results.csv is a view of those records that resume rebuilds.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Sequence

from imgbench import schema
from imgbench.runner.jobs import Job
from imgbench.runner.results import read_record
from imgbench.terminal import plural

MIN_FREE_MB = 10  # less than a small job's notebook, predictions and log: the run would stop at its first job
FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
MB = 1 << 20


class ResultsFolderError(Exception):
    """The run stopped because its results folder could not be written; the message says what was kept."""


def folder_problem(out_dir: Path) -> str:
    """Why a run could not write into ``out_dir`` (created when missing), or '': for the preflight."""
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    if existing == out_dir and not out_dir.is_dir():
        return f"--out {out_dir} is a file, not a folder; choose another --out"
    where = out_dir if existing == out_dir else f"{existing}, where {out_dir} would be created,"
    stats = os.statvfs(existing)
    if stats.f_flag & os.ST_RDONLY:
        return f"results folder: {where} is on a read-only file system; choose another --out"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"results folder: {where} is not writable by this user; choose another --out or fix its permissions"
    free_mb = stats.f_bavail * stats.f_frsize / MB
    if free_mb < MIN_FREE_MB:
        return (f"results folder: the disk holding {existing} has {free_mb:.1f} MB free, less than the "
                f"{MIN_FREE_MB} MB a job needs; free some space or choose another --out")
    return ""


class FolderWatch:
    """Notices, between jobs, that the results folder was deleted, moved or replaced, or that its disk filled.

    A folder recreated at the same path (a job's ``mkdir -p`` would do that silently) is another inode, and it
    lacks the run's ``run.json``.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.identity = _identity(out_dir)

    def vanished(self) -> bool:
        return _identity(self.out_dir) != self.identity or not (self.out_dir / schema.RUN_JSON).is_file()

    def check(self, jobs: Sequence[Job], more_to_run: bool = True) -> None:
        """Raise :class:`ResultsFolderError` when the folder vanished, or when jobs are left to run and too little
        space is left for one."""
        if self.vanished():
            raise stopped(self.out_dir, jobs, None, vanished=True)
        if not more_to_run:
            return
        stats = os.statvfs(self.out_dir)
        free_mb = stats.f_bavail * stats.f_frsize / MB
        if free_mb < MIN_FREE_MB:
            full = OSError(errno.ENOSPC, f"{free_mb:.1f} MB free, less than the {MIN_FREE_MB} MB a job needs")
            raise stopped(self.out_dir, jobs, full, vanished=False)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def write_failure(exc: OSError, out_dir: Path, jobs: Sequence[Job]) -> ResultsFolderError | None:
    """The :class:`ResultsFolderError` for an ``OSError`` that a write into the results folder raised, or None
    when it is no storage failure (then it is a bug, and its traceback is wanted)."""
    if exc.errno == errno.ENOENT and not out_dir.is_dir():
        return stopped(out_dir, jobs, exc, vanished=True)
    if exc.errno in (*FULL, *NOT_WRITABLE):
        return stopped(out_dir, jobs, exc, vanished=False)
    return None


def stopped(out_dir: Path, jobs: Sequence[Job], cause: OSError | None, *, vanished: bool) -> ResultsFolderError:
    """The error that stops a run whose folder failed: what happened, what was kept, what to do."""
    finished = [record for job in jobs if (record := read_record(out_dir, job)) is not None]
    ok = sum(record["row"].get("status") == schema.Status.OK for record in finished)
    left = len(jobs) - len(finished)
    what = f"{cause.strerror}: {cause.filename}" if cause and cause.filename else cause.strerror if cause else ""
    kept = (f"Kept: {plural(len(finished), 'finished job')} ({ok} ok) with {'its' if len(finished) == 1 else 'their'} "
            f"records in {out_dir / schema.JOBS_DIR} (resume rebuilds {schema.RESULTS_CSV} from them); a job that "
            f"was running when the run stopped has no record and runs again.")
    again = f"rerun the same command with --out {out_dir}: the finished jobs are skipped and the other {left} run"
    if vanished:
        return ResultsFolderError(
            f"the results folder {out_dir} was deleted, moved or unmounted while the run was going; the run "
            f"stopped. What the run had written there went with it"
            + (f"; {plural(len(finished), 'job record')} written since {'is' if len(finished) == 1 else 'are'} in "
               f"the folder now there" if finished else "")
            + f". To go on, {again}, into a folder that nothing else deletes.")
    if cause is not None and cause.errno in FULL:
        return ResultsFolderError(f"the disk holding {out_dir} is full ({what}); the run stopped. {kept} To go on, "
                                  f"free some space on that disk, then {again}.")
    return ResultsFolderError(f"{out_dir} can no longer be written ({what}); the run stopped. {kept} To go on, make "
                              f"it writable again (or remount its disk read-write), then {again}.")
