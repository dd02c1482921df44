"""``imgbench infer`` against timm's own ``benchmark.py``, run unchanged, in paired interleaved rounds.

    python benchmarks/bench_infer_peers.py --timm-benchmark ../pytorch-image-models/benchmark.py \\
        --data-dir ../shared/data --rounds 7 --threads $(nproc)
    python benchmarks/bench_infer_peers.py --timm-benchmark PATH --precision bf16 --batch 32

timm ships ``benchmark.py`` at the root of its repository (https://github.com/huggingface/pytorch-image-models),
not in its wheel: pass the path of a checkout's copy; nothing of it is copied here. Each round starts three
fresh processes, in an order that flips every round so neither side always runs warmer:

- ``timm``: timm's script as its users run it (``--model resnet18 --num-classes 10 --img-size 32 -b 128
  --device cpu --bench inference``; bf16 and fp16 as ``--amp --amp-dtype``: autocast, as imgbench's are);
- ``timm_pinned``: the same script, unchanged, with glibc's malloc thresholds set through glibc's own
  environment variables to what ``imgbench infer`` pins (``imgbench.inference.allocator.GLIBC_ENV``);
- ``infer``: ``imgbench infer -m timm/<model> -d <dataset> --runtimes eager`` at the same batch, size and
  precision; its throughput is read from inference.csv.

Both sides get the same threads (``OMP_NUM_THREADS``; ``imgbench infer --threads``). The ratios are taken
within each round and their medians printed: ``infer / timm_pinned`` is the gate (within ``AGREEMENT``: the
same model, batch, precision and allocator state); ``infer / timm`` shows what a fresh process's page faults
cost timm's script on a CPU (docs/inference.md). Exits 1 when the gate fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from imgbench import schema
from imgbench.inference.allocator import GLIBC_ENV

AGREEMENT = 0.03  # |infer / timm_pinned - 1|
TIMM_PRECISION = {"fp32": [], "bf16": ["--amp", "--amp-dtype", "bfloat16"], "fp16": ["--amp"]}
RATIOS = {"infer / timm_pinned (gated)": ("infer", "timm_pinned"), "infer / timm (as users run it)": ("infer", "timm"),
          "timm_pinned / timm": ("timm_pinned", "timm")}
GATED = "infer / timm_pinned (gated)"


def timm_figure(args: argparse.Namespace, pinned: bool) -> float:
    """Images per second that timm's benchmark.py prints (its ``--result`` JSON)."""
    command = [sys.executable, str(args.timm_benchmark), "--model", args.model.removeprefix("timm/"),
               "--num-classes", str(args.classes), "--img-size", str(args.size), "-b", str(args.batch),
               "--device", args.device, "--bench", "inference", *TIMM_PRECISION[args.precision]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), **(GLIBC_ENV if pinned else {})}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode or "--result" not in done.stdout:
        raise SystemExit(f"timm's benchmark.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.split("--result", 1)[1])
    if "error" in result:
        raise SystemExit(f"timm's benchmark.py: {result['error']}")
    return float(result["infer_samples_per_sec"])


def infer_figure(args: argparse.Namespace, out: Path) -> float:
    """The throughput row ``imgbench infer`` writes for the same model, batch, size and precision."""
    command = [sys.executable, "-m", "imgbench", "infer", "-m", args.model, "-d", args.dataset, "--runtimes", "eager",
               "--precisions", args.precision, "--batch-sizes", str(args.batch), "--image-size", str(args.size),
               "--device", args.device, "--threads", str(args.threads), "--bench-seconds", str(args.bench_seconds),
               "--test-samples", str(args.test_samples), "--out", str(out), "--quiet"]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "KERAS_BACKEND": "torch"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"imgbench infer failed ({done.returncode}):\n{done.stderr[-2000:]}")
    with (out / schema.INFERENCE_CSV).open(newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if int(r["batch_size"]) == args.batch)
    if row["status"] != schema.Status.OK:
        raise SystemExit(f"imgbench infer: {row['status']}: {row['error']}")
    return float(row["throughput"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm-benchmark", type=Path, required=True, help="timm's benchmark.py (a checkout's)")
    parser.add_argument("--model", default="timm/resnet18", help="a timm/... model")
    parser.add_argument("--dataset", default="cifar10", help="imgbench's test images (its class count: --classes)")
    parser.add_argument("--classes", type=int, default=10, help="timm's --num-classes: the dataset's classes")
    parser.add_argument("--data-dir", help="imgbench's --data-dir")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--precision", choices=tuple(TIMM_PRECISION), default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bench-seconds", type=float, default=2.0, help="imgbench infer's --bench-seconds")
    parser.add_argument("--test-samples", type=int, default=100, help="imgbench infer's agreement images (untimed)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure here")
    args = parser.parse_args(argv)
    if not args.timm_benchmark.is_file():
        parser.error(f"--timm-benchmark {args.timm_benchmark}: no such file (timm's repository has it at its root)")
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-infer-peers-") as folder:
        cases = {"timm": lambda: timm_figure(args, pinned=False), "timm_pinned": lambda: timm_figure(args, pinned=True),
                 "infer": lambda: infer_figure(args, Path(folder) / f"round{len(rounds)}")}
        for index in range(args.rounds):
            order = list(cases) if index % 2 == 0 else list(cases)[::-1]
            figures = {name: cases[name]() for name in order}
            figures["load_average"] = os.getloadavg()[0]
            rounds.append(figures)
            print(f"round {index + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()) + "; "
                  + "; ".join(f"{name} {figures[a] / figures[b]:.3f}" for name, (a, b) in RATIOS.items()), flush=True)
    ratios = {name: statistics.median(r[a] / r[b] for r in rounds) for name, (a, b) in RATIOS.items()}
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds, "median_paired_ratios": ratios}
    print(json.dumps(ratios, indent=2))
    if args.json:
        from imgbench.paths import atomic_write_json

        atomic_write_json(args.json, result)
    passed = abs(ratios[GATED] - 1) <= AGREEMENT
    print(f"agreement within {AGREEMENT:.0%} ({GATED}): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
