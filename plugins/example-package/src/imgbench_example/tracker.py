"""A third-party experiment tracker in a few lines: ``imgbench run --track jsonl`` appends one JSON line per
lifecycle event to ``OUT/runs.jsonl``. A real tracker would send the same records to its service.

The launcher calls these methods (the hooks of ``imgbench.hookspecs``) with read-only records; whatever one
raises is reported once and costs no job and no row.
"""

import json
from pathlib import Path
from typing import Any

from imgbench import GridInfo, GridOutcome, JobInfo, JobOutcome, RunLink, hookimpl

FILE_NAME = "runs.jsonl"


class JsonLinesTracker:
    def __init__(self, uri: str | None = None) -> None:
        self.path: Path | None = None  # OUT/runs.jsonl, known once the grid starts; the URI is MLflow's, not ours

    def write(self, event: str, **fields: Any) -> None:
        assert self.path is not None, "imgbench_grid_started comes first"
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps({"event": event, **fields}, default=str) + "\n")

    @hookimpl
    def imgbench_grid_started(self, grid: GridInfo) -> list[RunLink]:
        self.path = grid.out_dir / FILE_NAME
        self.write("grid_started", out_dir=grid.out_dir, jobs=[job.job_id for job in grid.jobs],
                   skipped=sorted(grid.done))
        return [RunLink(self.path.as_uri())]

    @hookimpl
    def imgbench_job_finished(self, job: JobInfo, record: JobOutcome) -> None:
        self.write("job_finished", job_id=job.job_id, params=dict(job.params), row=dict(record.row))

    @hookimpl
    def imgbench_grid_finished(self, grid: GridInfo, results: GridOutcome) -> None:
        self.write("grid_finished", rows=len(results.rows), exit_code=results.exit_code, report=results.report)
