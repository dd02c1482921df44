"""The fixed cost per job of a grid, before and after a change: two imgbench checkouts, alternated.

    git worktree add /tmp/before <sha>          # the commit to compare against
    python benchmarks/bench_fixed_cost.py --data-dir /work/shared/data before=/tmp/before after=.
    python benchmarks/bench_fixed_cost.py --data-dir DIR --rounds 1 --train-samples 200 --test-samples 100 \\
        --epochs 1 --bench-seconds 0.1 -m keras/mnist_convnet after=.                      # a check

Each round runs the same grid once per checkout (what ``imgbench run -m ... -d DATASET -p train_samples=N
--no-report`` runs: ``run_grid`` with the quick suite's recipe unless overridden), the checkouts in turn,
alternating which goes first. A checkout runs with this Python, ``PYTHONPATH=<checkout>/src`` and its own
``notebooks/benchmark.ipynb``, so its own imgbench (launcher, notebook, engine) is what runs. Per round and
checkout:

- fixed cost per job = (wall time of ``imgbench run`` - the sum of the jobs' ``train_time_s``) / jobs: the
  issue's figure; the benchmark windows count in it (``bench_seconds`` is printed beside it);
- harness per job = the same less each job's ``benchmark`` phase, where metrics.json records its phases;
- a later job's own harness: the median, over the grid's jobs but the first, of the job's phases less its
  compute (train, evaluate, benchmark) and its ``wait`` for the job before it (time it overlapped with that
  job's end): what a job adds once the grid's one-off costs are paid (the launcher's start, the first
  kernel's imports);
- with ``--report``, the grid also builds its report, and ``after the last job`` is the launcher's time from
  the last job's end to its own exit: the report, ``run.json``, the fork servers' stop. The demo's grid:
  ``--report -m keras/mnist_convnet -m keras/flowers_cnn --dataset digits --seeds 2 --epochs 4
  --train-samples 0 --bench-seconds 0.5``.

The figures are the medians over rounds (min and max beside), with the load average of each round.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_overhead import timed

from imgbench.engine.phases import COMPUTE, WAIT

MODELS = ("keras/mnist_convnet", "timm/resnet18")  # the quick suite's


GRID = """
import json, sys
from imgbench.runner import run_grid
models, dataset, seeds, params, out, notebook, report = json.loads(sys.argv[1])
result = run_grid(None, models=models, datasets=[dataset], seeds=seeds, params=params, out=out, report=report,
                  notebook=notebook, progress=False)
sys.exit(result.exit_code)
"""


def run_grid(checkout: Path, args: argparse.Namespace, out: Path, env: dict[str, str]) -> dict[str, float]:
    """``imgbench run``'s grid through the checkout's own code and notebook: wall s, jobs, fixed and harness s."""
    shutil.rmtree(out, ignore_errors=True)
    params = {"train_samples": args.train_samples, **{key: getattr(args, key) for key in
                                                      ("epochs", "test_samples", "bench_seconds")
                                                      if getattr(args, key) is not None}}
    request = [args.models, args.dataset, list(range(args.seeds)), params, str(out),
               str(checkout / "notebooks" / "benchmark.ipynb"), args.report]
    started = time.time()
    wall, _cpu = timed([sys.executable, "-c", GRID, json.dumps(request)],
                       {**env, "PYTHONPATH": str(checkout / "src")})
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    train = sum(float(row["train_time_s"]) for row in rows)
    bench, own, last_end = 0.0, [], 0.0  # own: (start, each job's harness from its own phases)
    for row in rows:
        metrics = json.loads((out / "jobs" / row["job_id"] / "metrics.json").read_text(encoding="utf-8"))
        phases = metrics.get("phases") or {}
        bench += phases.get("benchmark", 0.0)
        last_end = max(last_end, metrics.get("wall", {}).get("ended_at", 0.0))
        if phases and "wall" in metrics:  # a checkout from before the phase breakdown has neither
            own.append((metrics["wall"]["started_at"],
                        sum(seconds for name, seconds in phases.items() if name not in (*COMPUTE, WAIT))))
    later = [harness for _, harness in sorted(own)[1:]]
    return {"wall_s": wall, "jobs": len(rows), "fixed_s": (wall - train) / len(rows),
            "harness_s": (wall - train - bench) / len(rows),
            "later_job_harness_s": statistics.median(later) if later else float("nan"),
            "after_last_job_s": started + wall - last_end if last_end else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", metavar="NAME=PATH", help="imgbench checkouts to compare")
    parser.add_argument("--data-dir", help="local dataset copies (else IMGBENCH_DATA_DIR, else a download)")
    parser.add_argument("-m", "--model", action="append", dest="models", help=f"default: {', '.join(MODELS)}")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--test-samples", type=int, help="default: the quick suite's")
    parser.add_argument("--epochs", type=int, help="default: the quick suite's")
    parser.add_argument("--bench-seconds", type=float, help="default: the quick suite's (1.0)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of each model (default 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="build the report too, and time what follows the "
                        "last job")
    parser.add_argument("--json", metavar="FILE", help="also write every round here")
    args = parser.parse_args()
    args.models = args.models or list(MODELS)
    checkouts = {name: Path(path).resolve() for name, _, path in (item.partition("=") for item in args.checkouts)}

    work = Path(tempfile.mkdtemp(prefix="imgbench-fixed-cost-"))
    env = {**os.environ, "KERAS_BACKEND": "torch",
           "IMGBENCH_CACHE_DIR": os.environ.get("IMGBENCH_CACHE_DIR", str(work / "cache"))}
    if args.data_dir:
        env["IMGBENCH_DATA_DIR"] = str(Path(args.data_dir).resolve())
    print(f"grid: {', '.join(args.models)} on {args.dataset}, train_samples={args.train_samples}, "
          f"bench_seconds={args.bench_seconds or 'the quick suite’s (1.0)'}; {args.rounds} rounds of "
          f"{', '.join(checkouts)} on {os.cpu_count()} cores", flush=True)
    warm = argparse.Namespace(**{**vars(args), "epochs": 0, "bench_seconds": 0.05, "test_samples": 100})
    for name, checkout in checkouts.items():  # untimed: decode the dataset into the cache, warm the file cache
        run_grid(checkout, warm, work / name, env)
    rounds: list[dict] = []
    for index in range(args.rounds):
        order = list(checkouts.items()) if index % 2 == 0 else list(checkouts.items())[::-1]
        for name, checkout in order:
            load = os.getloadavg()[0]
            figures = run_grid(checkout, args, work / name, env)
            rounds.append({"round": index + 1, "checkout": name, "load_average": load, **figures})
            print(f"round {index + 1} {name} (load {load:.1f}): wall {figures['wall_s']:.1f} s for "
                  f"{figures['jobs']} jobs; fixed cost {figures['fixed_s']:.2f} s/job, harness (without the "
                  f"benchmark phase) {figures['harness_s']:.2f} s/job; a later job's own harness "
                  f"{figures['later_job_harness_s']:.2f} s; after the last job {figures['after_last_job_s']:.2f} s",
                  flush=True)
    for name in checkouts:
        mine = [r for r in rounds if r["checkout"] == name]
        for key, label in (("wall_s", "wall time of the grid"), ("fixed_s", "fixed cost per job"),
                           ("harness_s", "harness per job"),
                           ("later_job_harness_s", "a later job's own harness (median over all jobs but the first)"),
                           ("after_last_job_s", "time after the last job")):
            values = [r[key] for r in mine]
            print(f"{name}: {label} {statistics.median(values):.2f} s (median of {len(values)}; "
                  f"{min(values):.2f}..{max(values):.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": rounds}, indent=2, default=str),
                                   encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
