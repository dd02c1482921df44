"""``imgbench infer``: arguments and entry point (registered in :data:`imgbench.cli.DELEGATED`).

Nothing heavy is imported here: the main CLI imports this module to build its parser for every command.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from imgbench import schema
from imgbench.engine.recipe import Recipe
from imgbench.errors import UsageError
from imgbench.inference.plan import (DEFAULT_BATCH_SIZES, DEFAULT_RUNTIMES, DEFAULT_TEST_SAMPLES, INFER_KEYS,
                                     RECIPE_KEYS, make_plan)
from imgbench.inference.table import read_rows
from imgbench.registry import registry_with
from imgbench.resources import suite_path
from imgbench.runner.grid import RESULTS_ROOT, TIMESTAMP_FORMAT
from imgbench.runner.suite import Suite, load_suite

OUT_PREFIX = "infer-"  # default --out: results/infer-<timestamp>/

EPILOG = """\
examples:
  imgbench infer -m timm/resnet18 -m keras/mnist_convnet -d cifar10 --runtimes eager,compile,onnxruntime \\
                 --precisions fp32,bf16 --batch-sizes 1,32,128
  imgbench infer inference                       # the shipped CPU suite (`imgbench suites` lists them)
  imgbench infer -d cifar10 --weights results/grid/jobs/<job-id>/model.safetensors   # a trained model
  imgbench infer -m timm/resnet50 -d flowers --weights pretrained --out results/grid  # beside a grid's results
One row per (model, dataset, runtime, precision, batch size) in OUT/inference.csv; `imgbench report OUT`
shows them. A batch that runs out of memory or a runtime that cannot run a model is a row saying why.
Exit status: 0 when at least one row is ok, 1 when none is, 2 on bad input (nothing is built).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Inference benchmark: throughput, latency, memory and energy per batch size, precision "
                          "and runtime, and agreement with eager fp32 on real test images.")
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("suite", nargs="?", metavar="SUITE.toml",
                        help="an inference suite (a file or a shipped name; its [infer] table); the options below "
                             "replace its values")
    parser.add_argument("-m", "--model", action="append", default=[], dest="models", metavar="MODEL",
                        help="a model name or glob (repeatable)")
    parser.add_argument("-d", "--dataset", action="append", default=[], dest="datasets", metavar="DATASET",
                        help="the dataset that gives the input shape and the test images (repeatable)")
    parser.add_argument("--batch-sizes", metavar="1,8,32",
                        help=f"comma-separated (default {','.join(map(str, DEFAULT_BATCH_SIZES))})")
    parser.add_argument("--precisions", metavar="fp32,bf16",
                        help="fp32, bf16, fp16 (default: each one the device computes in hardware)")
    parser.add_argument("--runtimes", metavar="eager,compile",
                        help=f"eager, compile (torch.compile), onnxruntime (default: {','.join(DEFAULT_RUNTIMES)})")
    parser.add_argument("--weights", action="append", default=[], metavar="PATH",
                        help="pretrained, a checkpoint from save_weights=true (its model is read from it), or "
                             "MODEL=PATH (repeatable; default: random weights)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: results/infer-<timestamp>/); a grid's "
                                                     "folder keeps its results beside")
    parser.add_argument("--device", metavar="NAME", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default 0: every core)")
    parser.add_argument("--bench-seconds", type=float, metavar="S",
                        help=f"seconds of each throughput and latency measurement (default {Recipe.bench_seconds:g})")
    parser.add_argument("--test-samples", type=int, metavar="N",
                        help=f"test images compared with eager fp32 (default {DEFAULT_TEST_SAMPLES}; 0: the whole "
                             f"test split)")
    parser.add_argument("--image-size", type=int, metavar="PX", help="load the images at this size (default: "
                                                                     "the dataset's, or the weights')")
    parser.add_argument("--quiet", action="store_true", help="no line per row while measuring")


def main(args: argparse.Namespace) -> int:
    from imgbench.inference.sweep import run_inference

    registry = registry_with(args.plugins_dir, args.block_plugin, strict=args.strict)
    suite, infer = _suite(args.suite)
    options = {"bench_seconds": args.bench_seconds, "test_samples": args.test_samples, "threads": args.threads,
               "device": args.device, "image_size": args.image_size}
    params = {**{k: infer[k] for k in RECIPE_KEYS if k in infer}, **{k: v for k, v in options.items() if v is not None}}
    plan = make_plan(
        registry, models=args.models or list(suite.models), datasets=args.datasets or list(suite.datasets),
        runtimes=args.runtimes or infer.get("runtimes", DEFAULT_RUNTIMES), precisions=args.precisions or
        infer.get("precisions"), batch=args.batch_sizes or infer.get("batch_sizes", DEFAULT_BATCH_SIZES),
        weights=args.weights or infer.get("weights", []), out_dir=Path(args.out) if args.out else _default_out(),
        data_dir=args.data_dir, params=params, suite=suite.source)
    path = run_inference(plan, registry, command=sys.argv, progress=not args.quiet)
    rows = read_rows(path)
    ours = [r for r in rows if (r["model"], r["dataset"]) in {(run.model, run.dataset) for run in plan.runs}]
    counts = {status: sum(r["status"] == status for r in ours) for status in schema.INFERENCE_STATUSES}
    print(f"{path}: {len(ours)} rows, " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    print(f"report: imgbench report {path.parent}")
    return 0 if counts[schema.Status.OK] else 1


def _suite(name: str | None) -> tuple[Any, dict[str, Any]]:
    """The inference suite named (its grid and its [infer] table), or an empty one."""
    if not name:
        return Suite(), {}
    suite = load_suite(suite_path(name))
    if not suite.infer:
        raise UsageError(f"suite {suite.source} has no [infer] table: it is a training grid, for `imgbench run`")
    unknown = sorted(set(suite.infer) - set(INFER_KEYS))
    if unknown:
        raise UsageError(f"suite {suite.source}: [infer] does not take {', '.join(unknown)}; it may set "
                         f"{', '.join(INFER_KEYS)}")
    return suite, dict(suite.infer)


def _default_out() -> Path:
    return Path.cwd() / RESULTS_ROOT / f"{OUT_PREFIX}{datetime.now().strftime(TIMESTAMP_FORMAT)}"
