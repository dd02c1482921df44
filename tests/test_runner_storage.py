"""The results folder as storage, and resume, through `imgbench run` as a user meets them: a full disk, a folder
made read-only, a folder deleted mid-run, and job records that resume must not trust. Each test checks the
message, the exit status, and that nothing finished was lost.

Full disks and read-only folders are real, so ENOSPC and EROFS come from the kernel's write path: a small tmpfs
mounted for the test and filled, and a folder bind-mounted onto itself read-only (as a disk that fails and is
remounted read-only; the run's own open lock file keeps a plain remount from happening mid-run). The tests
skip where this process may not mount. Most grids here run "instant"
jobs: an executor that writes each job's files as ``execute_job`` does (clear the folder, atomic writes,
``job.json`` last), without a kernel, so the faults land between and inside real writes in seconds. One slow
test fills the disk under real kernels.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from imgbench import cli, schema
from imgbench.paths import atomic_write_json, atomic_write_text
from imgbench.runner import grid as grid_module
from imgbench.specs import Executor
from imgbench.runner.cli import WRITE_FAILED
from imgbench.runner.folder import MIN_FREE_MB
from imgbench.runner.jobs import Job
from imgbench.runner.machine import MachineLoad
from imgbench.runner.results import REQUIRED_FILES, check_finished, make_row, write_record

TESTKIT = Path(__file__).parent / "fixtures" / "runner_plugins"
DISK_MB = 32  # room for a few instant jobs above MIN_FREE_MB
GRID = ["-m", "testkit/linear", "-d", "tinygray", "--seeds", "0,1,2", "-p", "epochs=1"]
QUIET = MachineLoad(load_average=0.0, free_cores=2.0, cores=2)


class InstantExecutor(Executor[Any]):
    """Runs each job as execute_job leaves it, without a kernel; ``after(number, task)`` runs between jobs."""

    def __init__(self, after: Callable[[int, Any], None]) -> None:
        self.after = after

    def run(self, tasks, on_result, on_start=None) -> None:
        for number, task in enumerate(tasks, 1):
            if on_start is not None:
                on_start(task)
            on_result(task, instant_job(task))
            self.after(number, task)


def instant_job(task) -> dict[str, Any]:
    folder = task.job_dir
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    metrics = {"accuracy": 0.9, "status": schema.Status.OK, "did_not_learn": ""}
    for name in REQUIRED_FILES:
        atomic_write_text(folder / name, f"{name} of {task.job.job_id}\n" * 100)
    atomic_write_json(folder / schema.METRICS_JSON, metrics)
    row = make_row(task.job, status=schema.Status.OK, error="", metrics=metrics, duration_s=0.01,
                   notebook=schema.job_file(task.job.job_id, schema.NOTEBOOK), load=QUIET.columns())
    write_record(folder, task.job, row)
    return row


@pytest.fixture
def instant(monkeypatch):
    """``imgbench run`` with instant jobs; returns run(out, after=...) -> (exit status, stderr, stdout)."""
    monkeypatch.setattr(grid_module, "measure_load", lambda: QUIET)

    def run(out: Path, *extra: str, after: Callable[[int, Any], None] = lambda number, task: None):
        monkeypatch.setattr(grid_module, "_create_executor", lambda *args: InstantExecutor(after))
        return cli.main(["run", "--plugins-dir", str(TESTKIT), "--out", str(out), "--no-report", *GRID, *extra])

    return run


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); these tests need root with CAP_SYS_ADMIN")


@pytest.fixture
def disk(tmp_path):
    """A tmpfs of DISK_MB, mounted for the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mount("-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def read_only():
    """read_only(folder): bind-mount ``folder`` onto itself read-only; undone by the returned function and at
    the end of the test."""
    mounted: list[Path] = []

    def undo(folder: Path) -> None:
        subprocess.run(["umount", str(folder)], check=True)
        mounted.remove(folder)

    def make(folder: Path) -> Callable[[Path], None]:
        mount("--bind", str(folder), str(folder))
        mounted.append(folder)
        mount("-o", "remount,bind,ro", str(folder))
        return undo

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path, leave_mb: float = 0) -> Path:
    """Write a filler file until the disk holding ``folder`` is full (or has only ``leave_mb`` MB left)."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: ENOSPC comes from this write, not a close
        try:
            while not leave_mb or os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave_mb * (1 << 20):
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def records(out: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(out.glob("jobs/*/job.json"))}


def assert_kept(out: Path, kept: dict[str, str]) -> None:
    """The finished jobs' records are intact, their files check out, and results.csv lists them."""
    assert records(out) == kept
    frame = pd.read_csv(out / schema.RESULTS_CSV)
    assert set(frame.job_id) == set(kept)
    for job_id in kept:
        job = Job.from_dict(json.loads(kept[job_id])["job"])
        assert check_finished(out, job).skip


# -- a full disk -----------------------------------------------------------------------------------------------

def test_a_full_disk_mid_run_stops_with_one_message_keeps_the_finished_job_and_resumes(disk, instant, capsys):
    out = disk / "out"
    fillers = []
    code = instant(out, after=lambda number, task: number == 1 and fillers.append(fill(disk)))
    err = capsys.readouterr().err
    assert code == WRITE_FAILED == 74
    assert f"imgbench run: error: the disk holding {out} is full (No space left on device: {out}/" in err, err
    assert "Kept: 1 finished job (1 ok)" in err and "free some space on that disk, then rerun the same command " \
                                                  f"with --out {out}" in err
    assert "Traceback" not in err and err.count("error:") == 1
    kept = records(out)
    assert len(kept) == 1
    assert_kept(out, kept)

    fillers[0].unlink()
    assert instant(out) == 0
    captured = capsys.readouterr()
    assert "resuming: 1 of 3 jobs already succeeded" in captured.err
    assert "3 jobs: 3 ok (1 skipped: already succeeded)" in captured.out
    assert {k: v for k, v in records(out).items() if k in kept} == kept  # not run again


def test_a_disk_left_too_small_for_the_next_job_stops_the_run_before_it(disk, instant, capsys):
    out = disk / "out"
    code = instant(out, after=lambda number, task: number == 1 and fill(disk, leave_mb=MIN_FREE_MB / 2))
    err = capsys.readouterr().err
    assert code == WRITE_FAILED
    assert f"the disk holding {out} is full (" in err and f"MB free, less than the {MIN_FREE_MB} MB a job needs)" in err
    assert "Kept: 2 finished jobs (2 ok)" in err and "the other 1 run" in err
    assert len(records(out)) == 2


def test_a_disk_that_fills_during_the_last_job_does_not_fail_the_run(disk, instant, capsys):
    out = disk / "out"
    assert instant(out, after=lambda number, task: number == 2 and fill(disk, leave_mb=MIN_FREE_MB / 2)) == 0
    assert len(pd.read_csv(out / schema.RESULTS_CSV)) == 3


def test_a_disk_with_too_little_room_is_refused_before_anything_is_written(disk, instant, capsys):
    fill(disk, leave_mb=MIN_FREE_MB / 2)
    out = disk / "out"
    assert instant(out) == 2
    err = capsys.readouterr().err
    assert f"results folder: the disk holding {disk} has" in err
    assert f"less than the {MIN_FREE_MB} MB a job needs" in err
    assert not out.exists()


# -- a read-only folder ------------------------------------------------------------------------------------------

def test_a_folder_made_read_only_mid_run_stops_keeps_the_finished_job_and_resumes(tmp_path, instant, read_only,
                                                                                  capsys):
    out = tmp_path / "out"
    undo = []
    code = instant(out, after=lambda number, task: number == 1 and undo.append(read_only(out)))
    err = capsys.readouterr().err
    assert code == WRITE_FAILED
    assert f"imgbench run: error: {out} can no longer be written (Read-only file system: {out}/" in err
    assert "Kept: 1 finished job (1 ok)" in err and "make it writable again" in err and "Traceback" not in err
    kept = records(out)
    assert_kept(out, kept)

    undo[0](out)
    assert instant(out) == 0
    assert "1 skipped: already succeeded" in capsys.readouterr().out
    assert {k: v for k, v in records(out).items() if k in kept} == kept


def test_a_read_only_results_folder_is_refused_before_anything_starts(tmp_path, instant, read_only, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(folder)
    assert instant(folder / "out") == 2
    err = capsys.readouterr().err
    assert f"results folder: {folder}, where {folder / 'out'} would be created, is on a read-only file system" in err
    assert not (folder / "out").exists()


# -- a folder deleted mid-run ----------------------------------------------------------------------------------

def test_a_results_folder_deleted_mid_run_stops_and_says_what_went_with_it(tmp_path, instant, capsys):
    out = tmp_path / "out"
    code = instant(out, after=lambda number, task: number == 1 and shutil.rmtree(out))
    err = capsys.readouterr().err
    assert code == WRITE_FAILED
    assert f"the results folder {out} was deleted, moved or unmounted while the run was going" in err
    assert "1 job record written since is in the folder now there" in err and "Traceback" not in err
    assert len(records(out)) == 1  # the job that ran after the deletion, and nothing claims more


# -- resume checks what it trusts -------------------------------------------------------------------------------

def _damage_predictions(folder: Path) -> None:
    path = folder / schema.PREDICTIONS_CSV
    path.write_text(path.read_text()[:-10])  # torn by a crash or a full disk


def _delete_history(folder: Path) -> None:
    (folder / schema.HISTORY_CSV).unlink()


def _tear_record(folder: Path) -> None:
    path = folder / schema.JOB_RECORD
    path.write_text(path.read_text()[:40])


def _drop_checksums(folder: Path) -> None:
    path = folder / schema.JOB_RECORD
    record = json.loads(path.read_text())
    del record["files"]
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("damage, why", [
    (_damage_predictions, "predictions.csv changed or damaged since it was written"),
    (_delete_history, "history.csv missing"),
    (_tear_record, "its job.json cannot be read"),
    (_drop_checksums, "its job.json holds no checksums of its files"),
])
def test_resume_runs_a_job_again_whose_record_is_damaged_and_says_so(tmp_path, instant, capsys, damage, why):
    out = tmp_path / "out"
    assert instant(out) == 0
    first = records(out)
    damaged, *intact = sorted(first)
    damage(out / "jobs" / damaged)
    capsys.readouterr()

    assert instant(out) == 0
    captured = capsys.readouterr()
    assert f"running again: {damaged} succeeded before, but its record cannot be trusted ({why}" in captured.err
    assert "resuming: 2 of 3 jobs already succeeded" in captured.err
    assert "3 jobs: 3 ok (2 skipped: already succeeded; 1 run again: record damaged)" in captured.out
    again = records(out)
    assert {k: again[k] for k in intact} == {k: first[k] for k in intact}  # the sound ones were not rerun
    job = Job.from_dict(json.loads(again[damaged])["job"])
    assert check_finished(out, job).skip  # rerun, whole again
    run = json.loads((out / schema.RUN_JSON).read_text())
    assert run["skipped"] == intact and list(run["rerun"]) == [damaged] and why in run["rerun"][damaged]


# -- the machine's load ----------------------------------------------------------------------------------------

def test_a_busy_machine_is_named_before_the_first_job_and_recorded(tmp_path, instant, monkeypatch, capsys):
    busy = MachineLoad(load_average=4.1, free_cores=0.2, cores=2)
    out = tmp_path / "out"
    assert instant(out) == 0
    assert "busy" not in capsys.readouterr().err
    monkeypatch.setattr(grid_module, "measure_load", lambda: busy)
    assert instant(tmp_path / "busy") == 0
    err = capsys.readouterr().err
    assert "warning: this machine is busy before the first job: load average 4.1 over the last minute, and " \
           "other processes keep 1.8 of its 2 cores busy (0.2 free)" in err.replace("\n  ", " ")
    assert json.loads((tmp_path / "busy" / schema.RUN_JSON).read_text())["load_at_start"] == busy.to_dict()


# -- real kernels on a disk that fills -----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.notebook
def test_real_jobs_on_a_disk_that_fills_mid_run(disk, monkeypatch, capsys):
    """The disk fills as job 1's row arrives, while job 2 may already run: whichever write meets ENOSPC (the
    kernel's notebook, the job's files, job.json or results.csv) the run stops with the message, job 1 stays."""
    from imgbench.runner.progress import GridProgress

    out = disk / "out"
    argv = ["run", "--plugins-dir", str(TESTKIT), "--out", str(out), "--no-report", "-m", "testkit/linear",
            "-d", "tinygray", "--seeds", "0,1", "-p", "epochs=1", "-p", "bench_seconds=0.05", "-p", "amp=false"]
    finished = GridProgress.finished
    fillers = []

    def finished_then_fill(self, row):
        finished(self, row)
        if not fillers:
            fillers.append(fill(disk))

    monkeypatch.setattr(GridProgress, "finished", finished_then_fill)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == WRITE_FAILED, err
    assert f"the disk holding {out} is full" in err and "Kept: 1 finished job (1 ok)" in err
    assert "Traceback" not in err
    kept = records(out)
    assert_kept(out, kept)
    [row] = pd.read_csv(out / schema.RESULTS_CSV).to_dict("records")
    assert row["load_average"] >= 0 and 0 <= row["free_cores"] <= os.cpu_count()  # measured as the job started

    fillers[0].unlink()
    monkeypatch.setattr(GridProgress, "finished", finished)
    assert cli.main(argv) == 0
    assert "1 skipped: already succeeded" in capsys.readouterr().out
    assert {k: v for k, v in records(out).items() if k in kept} == kept
