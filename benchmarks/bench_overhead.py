"""What the notebook machinery costs per job: a grid through ``imgbench run`` against the same jobs as fresh
Python processes that call ``run_job``.

    python benchmarks/bench_overhead.py --data-dir /work/shared/data            # the figure (4 jobs, 3 rounds)
    python benchmarks/bench_overhead.py --data-dir DIR --rounds 1 --train-samples 200 --test-samples 100  # a check

Both arms run the same ``--jobs-per-arm`` jobs (keras/mnist_convnet on MNIST, seeds 0..N-1, one epoch on
``--train-samples`` images, the same recipe) one after the other, from a warm dataset cache:

- grid arm: one ``imgbench run none -m MODEL -d DATASET --seeds 0,..,N-1 -p ... --no-report`` process, its
  wall time from start to exit (the launcher's start and checks, every job's ``python -m
  imgbench.jobrecord.child`` process, kernel start and shutdown, the notebook's cells, figures and saves).
  The report is left out (``--no-report``): the other arm has none.
- fresh arm: N processes ``python -c "run_job(...)"``, one per job, each timed from start to exit; their
  walls are summed.

Per-job overhead = (grid wall - sum of fresh walls) / N, per round. Rounds are interleaved and alternate which
arm goes first, so load that drifts hits both; the median over rounds is the figure, min and max show the
noise. CPU seconds (user + sys of the arm's processes and all their children) are reported the same way:
on a busy machine they are steadier than wall time. One untimed warm-up round first decodes the dataset into
the cache and warms the OS file cache. Exits 1 when the median wall overhead is above ``--target`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 1.0  # the most notebook overhead per job we accept
MODEL = "keras/mnist_convnet"
DATASET = "mnist"

FRESH_JOB = """
import sys
from imgbench.engine import run_job
result = run_job({model!r}, {dataset!r}, seed={seed}, out_dir=sys.argv[1], progress=False, **{params!r})
sys.exit(0 if result.status == "ok" else 1)
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, cpu s) of one process and its descendants."""
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, children_cpu() - cpu


def grid_arm(args, params: dict, work: Path, env: dict[str, str]) -> tuple[float, float]:
    out = work / "grid"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "imgbench", "run", "none", "-m", args.model, "-d", args.dataset,
               "--seeds", ",".join(map(str, range(args.jobs_per_arm))), "--out", str(out), "--no-report"]
    for key, value in params.items():
        command += ["-p", f"{key}={json.dumps(value)}"]
    return timed(command, env)


def fresh_arm(args, params: dict, work: Path, env: dict[str, str]) -> tuple[float, float]:
    wall = cpu = 0.0
    for seed in range(args.jobs_per_arm):
        out = work / f"fresh-{seed}"
        shutil.rmtree(out, ignore_errors=True)
        code = FRESH_JOB.format(model=args.model, dataset=args.dataset, seed=seed, params=params)
        job_wall, job_cpu = timed([sys.executable, "-c", code, str(out)], env)
        wall, cpu = wall + job_wall, cpu + job_cpu
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="local dataset copies (else IMGBENCH_DATA_DIR, else a download)")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument("--jobs-per-arm", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--bench-seconds", type=float, default=0.5)
    parser.add_argument("--target", type=float, default=TARGET_S, help="seconds per job (default %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the per-round figures here")
    args = parser.parse_args()

    params = {"epochs": args.epochs, "train_samples": args.train_samples, "test_samples": args.test_samples,
              "bench_seconds": args.bench_seconds, "device": "cpu"}
    work = Path(tempfile.mkdtemp(prefix="imgbench-overhead-"))
    env = {**os.environ, "KERAS_BACKEND": "torch", "IMGBENCH_CACHE_DIR": os.environ.get("IMGBENCH_CACHE_DIR",
                                                                                       str(work / "cache"))}
    if args.data_dir:
        env["IMGBENCH_DATA_DIR"] = str(Path(args.data_dir).resolve())
    print(f"{args.jobs_per_arm} jobs per arm: {args.model} on {args.dataset}, {params}; {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for arm in (fresh_arm, grid_arm):  # warm-up: decode into the cache, warm the OS file cache
        arm(args, {**params, "epochs": 0}, work, env)

    rounds = []
    for index in range(args.rounds):
        arms = [("grid", grid_arm), ("fresh", fresh_arm)]
        measured = {name: arm(args, params, work, env) for name, arm in (arms if index % 2 == 0 else arms[::-1])}
        (grid_wall, grid_cpu), (fresh_wall, fresh_cpu) = measured["grid"], measured["fresh"]
        row = {"grid_wall_s": grid_wall, "fresh_wall_s": fresh_wall, "grid_cpu_s": grid_cpu, "fresh_cpu_s": fresh_cpu,
               "overhead_wall_s": (grid_wall - fresh_wall) / args.jobs_per_arm,
               "overhead_cpu_s": (grid_cpu - fresh_cpu) / args.jobs_per_arm}
        rounds.append(row)
        print(f"round {index + 1}: grid {grid_wall:6.1f} s wall ({grid_cpu:6.1f} s cpu), fresh {fresh_wall:6.1f} s "
              f"({fresh_cpu:6.1f} s cpu): {row['overhead_wall_s']:+.2f} s wall, {row['overhead_cpu_s']:+.2f} s cpu "
              f"per job", flush=True)

    summary = {}
    for key in ("overhead_wall_s", "overhead_cpu_s"):
        values = [r[key] for r in rounds]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    wall, cpu = summary["overhead_wall_s"], summary["overhead_cpu_s"]
    print(f"notebook overhead per job: {wall['median']:.2f} s wall (median of {len(rounds)} rounds; "
          f"{wall['min']:.2f}..{wall['max']:.2f}), {cpu['median']:.2f} s cpu ({cpu['min']:.2f}..{cpu['max']:.2f}); "
          f"target <= {args.target:g} s; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"params": params, "rounds": rounds, "summary": summary}, indent=2),
                                   encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if wall["median"] <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
