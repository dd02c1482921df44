"""How much faster a grid of small jobs finishes on a Dask LocalCluster of 2 workers than of 1 (and more).

    python benchmarks/bench_dask.py                       # 6 jobs on 1 and on 2 workers
    python benchmarks/bench_dask.py --grid-jobs 8 --workers 1 2 4 --json bench_dask.json

Each job is a real imgbench job (a papermill kernel that imports torch and trains tinycnn/small from the
repo's plugins/ on the runner test kit's synthetic tinyrgb dataset), so the figure includes what dominates
small jobs: kernel start and imports. The clusters start before the clock does; the time measured is the
whole run_grid call (validation, sending, running, collecting, results.csv), without the report.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

import imgbench
from imgbench.registry import get_registry
from imgbench.runner import dask_executor
from imgbench.schema import Status

CHECKOUT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = [CHECKOUT / "plugins", CHECKOUT / "tests" / "fixtures" / "runner_plugins"]
MODEL = "tinycnn/small"
DATASET = "tinyrgb"
PARAMS = {"epochs": 3, "device": "cpu", "deterministic": True, "bench_seconds": 0.1}
DEFAULT_GRID_JOBS = 6
DEFAULT_WORKERS = (1, 2)


def time_grid(workers: int, grid_jobs: int, scratch: Path) -> dict:
    """Run the grid on a fresh LocalCluster of ``workers`` workers; the seconds it took and its statuses."""
    out = scratch / f"out-{workers}"
    with dask_executor.start_local_cluster(workers, local_directory=str(scratch / f"workers-{workers}")) as cluster:
        os.environ[dask_executor.SCHEDULER_ENV] = cluster.scheduler_address
        started = time.perf_counter()
        result = imgbench.run_grid(models=[MODEL], datasets=[DATASET], seeds=list(range(grid_jobs)), params=PARAMS,
                                   out=out, registry=get_registry(PLUGIN_DIRS), executor="dask", report=False, progress=False)
        wall_s = time.perf_counter() - started
        del os.environ[dask_executor.SCHEDULER_ENV]
    frame = pd.read_csv(result.results_csv)
    return {"workers": workers, "jobs": len(frame), "ok": int((frame["status"] == Status.OK).sum()),
            "wall_s": round(wall_s, 1), "mean_job_s": round(float(frame["duration_s"].mean()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-jobs", type=int, default=DEFAULT_GRID_JOBS, help="jobs in the grid (seeds)")
    parser.add_argument("--workers", type=int, nargs="+", default=list(DEFAULT_WORKERS), help="cluster sizes")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-dask-") as scratch:
        rows = [time_grid(n, args.grid_jobs, Path(scratch)) for n in args.workers]
    baseline = rows[0]["wall_s"]
    for row in rows:
        row["speedup"] = round(baseline / row["wall_s"], 2)
    table = pd.DataFrame(rows)
    print(f"{args.grid_jobs} jobs of {MODEL} on {DATASET} ({PARAMS}), {os.cpu_count()} CPU cores")
    print(table.to_string(index=False))
    if args.json:
        args.json.write_text(json.dumps({"grid_jobs": args.grid_jobs, "params": PARAMS, "cpu_count": os.cpu_count(),
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
