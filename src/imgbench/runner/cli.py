"""``imgbench run``: arguments and entry point (registered in :data:`imgbench.cli.DELEGATED`)."""

from __future__ import annotations

import argparse
import sys

from imgbench.resources import DEFAULT_SUITE

INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C

EPILOG = """\
examples:
  imgbench run                                   # the default suite (benchmarks/suites/quick.toml)
  imgbench run benchmarks/suites/standard.toml --jobs 2 --out results/standard
  imgbench run -m timm/resnet18 -m keras/mnist_convnet -d mnist --seeds 0,1,2 -p epochs=3 -p lr=1e-3
Rerunning into the same --out skips jobs that already succeeded with the same configuration.
Exit status: 0 when every job is ok, 1 when any is not, 2 on bad input (nothing is started).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Run a benchmark grid (model x dataset x seed), one papermill-executed notebook per job."
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("suite", nargs="?", metavar="SUITE.toml",
                        help=f"a suite file or shipped suite name (default: {DEFAULT_SUITE}); "
                             f"-m/-d/--seeds replace its grid, -p goes on top of its parameters")
    parser.add_argument("-m", "--model", action="append", default=[], dest="models", metavar="MODEL",
                        help="a model name or glob (repeatable)")
    parser.add_argument("-d", "--dataset", action="append", default=[], dest="datasets", metavar="DATASET",
                        help="a dataset name, e.g. mnist or imagefolder:/path (repeatable)")
    parser.add_argument("--seeds", metavar="0,1,2", help="comma-separated seeds")
    parser.add_argument("-p", "--param", action="append", default=[], dest="params", metavar="KEY=VALUE",
                        help="a recipe parameter as a TOML literal: epochs=3, lr=1e-3, amp=false (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: results/<timestamp>/); "
                                                     "reuse one to resume")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="jobs at once (default 1); they share the CPU cores equally (recorded as threads, "
                             "concurrency); GPU jobs need one GPU each")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="kill a job after this long")
    parser.add_argument("--executor", default="local", metavar="NAME", help="how to run jobs (default: local)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="Dask scheduler for --executor dask, e.g. tcp://HOST:8786 (default: "
                             "$IMGBENCH_DASK_SCHEDULER, else a LocalCluster on this machine)")
    parser.add_argument("--no-report", action="store_true", help="do not build the report at the end")


def main(args: argparse.Namespace) -> int:
    from imgbench.cli import registry_from_args
    from imgbench.runner.grid import run_grid
    from imgbench.runner.suite import parse_param

    from imgbench.errors import UsageError

    params = dict(parse_param(text) for text in args.params)
    if args.scheduler and args.executor != "dask":
        raise UsageError("--scheduler only applies to --executor dask")
    try:
        result = run_grid(
            args.suite, models=args.models, datasets=args.datasets, seeds=args.seeds, params=params, out=args.out,
            jobs=args.jobs, timeout=args.timeout, executor=args.executor,
            executor_options={"scheduler": args.scheduler} if args.scheduler else {}, report=not args.no_report,
            registry=registry_from_args(args), data_dir=args.data_dir, command=sys.argv,
        )
    except KeyboardInterrupt:
        print("imgbench run: interrupted; finished jobs are kept, rerun the same command with the same --out "
              "to run the rest", file=sys.stderr)
        return INTERRUPTED
    print(result.summary())
    return result.exit_code
