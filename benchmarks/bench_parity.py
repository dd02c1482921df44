"""Does the notebook path measure what a plain process measures? The same job through ``imgbench run`` (a job
process, a kernel, the notebook around ``run_job``) and through ``run_job`` in a plain Python process.

    python benchmarks/bench_parity.py --data-dir /work/shared/data                  # the figure: 5 rounds
    python benchmarks/bench_parity.py --data-dir DIR --rounds 1 --train-samples 300 --bench-seconds 0.1  # a check

The default job is launch-bound, where any harness cost shows most: keras/mnist_convnet on MNIST at batch 16,
one epoch on ``--train-samples`` images, ``--bench-seconds`` per speed figure, on the CPU (``--device``).
Each round runs both arms once, one after the other, alternating which goes first, so that load drifting on
the machine hits both; each arm is a fresh process. The paired ratio notebook / plain of ``train_throughput``
and of ``infer_throughput`` is taken per round; the figure is the median over rounds, with the min and max,
and the machine's load average beside each round. Exits 1 when a median ratio is off 1 by more than
``--target`` (3%).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_overhead import timed

TARGET = 0.03  # the most a notebook-path speed figure may differ from the plain process's
FIGURES = ("train_throughput", "infer_throughput")

PLAIN_JOB = """
import sys
from imgbench.engine import run_job
result = run_job({model!r}, {dataset!r}, seed=0, out_dir=sys.argv[1], **{params!r})
sys.exit(0 if result.status == "ok" else 1)
"""


def notebook_arm(args: argparse.Namespace, params: dict, out: Path, env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "imgbench", "run", "none", "-m", args.model, "-d", args.dataset, "--seeds", "0",
               "--out", str(out), "--no-report"]
    for key, value in params.items():
        command += ["-p", f"{key}={json.dumps(value)}"]
    timed(command, env)
    (job,) = (out / "jobs").iterdir()
    return json.loads((job / "metrics.json").read_text(encoding="utf-8"))


def plain_arm(args: argparse.Namespace, params: dict, out: Path, env: dict[str, str]) -> dict:
    """A fresh Python calling run_job, with the thread settings the local executor gives a job alone."""
    from imgbench.engine.threads import thread_env

    shutil.rmtree(out, ignore_errors=True)
    code = PLAIN_JOB.format(model=args.model, dataset=args.dataset, params=params)
    timed([sys.executable, "-c", code, str(out)], {**env, **thread_env(0, 1)})
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="local dataset copies (else IMGBENCH_DATA_DIR, else a download)")
    parser.add_argument("--model", default="keras/mnist_convnet")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--test-samples", type=int, default=500)
    parser.add_argument("--bench-seconds", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--json", metavar="FILE", help="also write the rounds and the medians here")
    args = parser.parse_args()

    params = {"epochs": 1, "batch_size": args.batch_size, "train_samples": args.train_samples,
              "test_samples": args.test_samples, "val_size": 0.1, "bench_seconds": args.bench_seconds,
              "device": args.device}
    work = Path(tempfile.mkdtemp(prefix="imgbench-parity-"))
    env = {**os.environ, "KERAS_BACKEND": "torch",
           "IMGBENCH_CACHE_DIR": os.environ.get("IMGBENCH_CACHE_DIR", str(work / "cache"))}
    if args.data_dir:
        env["IMGBENCH_DATA_DIR"] = str(Path(args.data_dir).resolve())
    print(f"{args.model} on {args.dataset}, {params}; {args.rounds} paired rounds on {os.cpu_count()} cores",
          flush=True)
    plain_arm(args, {**params, "epochs": 0}, work / "warm", env)  # decode into the cache, warm the file cache

    rounds = []
    for index in range(args.rounds):
        arms = [("notebook", notebook_arm), ("plain", plain_arm)]
        load = os.getloadavg()[0]
        measured = {name: arm(args, params, work / name, env) for name, arm in (arms if index % 2 == 0 else arms[::-1])}
        row = {f"{figure}_ratio": measured["notebook"][figure] / measured["plain"][figure] for figure in FIGURES}
        row |= {f"{arm}_{figure}": measured[arm][figure] for arm in measured for figure in FIGURES}
        row["load_average"] = load
        rounds.append(row)
        print(f"round {index + 1} (load {load:.1f}): " + ", ".join(
            f"{figure} notebook/plain {row[f'{figure}_ratio']:.3f}" for figure in FIGURES), flush=True)

    summary = {}
    for figure in FIGURES:
        ratios = [r[f"{figure}_ratio"] for r in rounds]
        summary[figure] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    for figure, s in summary.items():
        print(f"{figure}: notebook / plain {s['median']:.3f} (median of {len(rounds)} paired rounds; "
              f"{s['min']:.3f}..{s['max']:.3f}); target within {args.target:.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"params": params, "rounds": rounds, "summary": summary}, indent=2),
                                   encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(abs(s["median"] - 1) <= args.target for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
