"""``imgbench run``: arguments and entry point (registered in :data:`imgbench.cli.DELEGATED`)."""

from __future__ import annotations

import argparse
import sys

from imgbench.errors import UsageError
from imgbench.registry import get_registry, registry_with
from imgbench.resources import DEFAULT_SUITE, NO_SUITE
from imgbench.runner.folder import ResultsFolderError
from imgbench.runner.grid import run_grid
from imgbench.runner.suite import parse_param
from imgbench.terminal import wrap

INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C
WRITE_FAILED = 74  # sysexits' EX_IOERR: the results folder could not be written any more, the run stopped

EPILOG = """\
examples:
  imgbench run                                   # the default suite (benchmarks/suites/quick.toml)
  imgbench run benchmarks/suites/standard.toml --jobs 2 --out results/standard
  imgbench run demo                              # 4 small jobs on the bundled digits: no download
  imgbench run demo --track mlflow               # ... and every job as a run in MLflow (`mlflow ui` shows them)
  imgbench run -m timm/resnet18 -m keras/mnist_convnet -d mnist --seeds 0,1,2 -p epochs=3 -p lr=1e-3
  imgbench run none -m timm/resnet18 -d cifar10  # no suite: cifar10's full default recipe
-m/-d without a suite inherit the default suite's parameters (quick: short runs on subsets), and say so;
the suite `none` gives the datasets' full default recipes instead (`imgbench params DATASET` lists them).
Rerunning into the same --out skips jobs that already succeeded with the same configuration and whose
files still match their record; a job whose record is missing files or damaged runs again.
Exit status: 0 when every job is ok, 1 when any is not, 2 on bad input (nothing is started), 74 when the
results folder could not be written any more (full disk, read-only, deleted: finished jobs are kept),
130 when interrupted. docs/troubleshooting.md says what each error means.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Run a benchmark grid (model x dataset x seed), one papermill-executed notebook per job."
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("suite", nargs="?", metavar="SUITE.toml",
                        help=f"a suite file or shipped suite name (`imgbench suites`; default: {DEFAULT_SUITE}; "
                             f"{NO_SUITE}: no suite); -m/-d/--seeds replace its grid, -p goes on top of its "
                             f"parameters")
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
    _add_executor_options(parser)
    parser.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    parser.add_argument("--track", action="append", metavar="NAME[,NAME]",
                        help="record the grid and every job in these experiment trackers, e.g. mlflow (pip install "
                             "\"imgbench[mlflow]\"); default: $IMGBENCH_TRACK")
    parser.add_argument("--track-uri", metavar="URI", help="where the trackers record: the MLflow tracking URI "
                                                           "(default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--log-output", action="store_true",
                        help="stream every job's cell output (prints, warnings) to this terminal, each line "
                             "prefixed with [job id]; with --executor dask it goes to the worker's log")


def main(args: argparse.Namespace) -> int:
    params = dict(parse_param(text) for text in args.params)
    registry = registry_with(args.plugins_dir, args.block_plugin, strict=args.strict)
    executor_options = _executor_options(args, registry.executors())
    try:
        result = run_grid(
            args.suite, models=args.models, datasets=args.datasets, seeds=args.seeds, params=params, out=args.out,
            slots=args.jobs, timeout=args.timeout, executor=args.executor,
            executor_options=executor_options, report=not args.no_report, registry=registry, data_dir=args.data_dir, command=sys.argv, log_output=args.log_output,
            track=args.track, track_uri=args.track_uri,
        )
    except KeyboardInterrupt:
        print(wrap("imgbench run: interrupted; finished jobs are kept, rerun the same command with the same --out "
                   "to run the rest"), file=sys.stderr)
        return INTERRUPTED
    except ResultsFolderError as exc:
        print(wrap(f"imgbench run: error: {exc}"), file=sys.stderr)
        return WRITE_FAILED
    print(result.summary())
    return result.exit_code


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Each executor's declared options (``ExecutorSpec.options``), in a group of their own."""
    for spec in get_registry().executors():
        if spec.options:
            group = parser.add_argument_group(f"--executor {spec.name}")
            for option in spec.options:
                group.add_argument(option.flag, dest=_dest(option), metavar=option.metavar, help=option.help)


def _executor_options(args: argparse.Namespace, specs) -> dict[str, str]:
    """The options given for ``--executor``; one meant for another executor is an error."""
    chosen = {}
    for spec in specs:
        for option in spec.options:
            value = getattr(args, _dest(option), None)
            if value is None:
                continue
            if spec.name != args.executor:
                raise UsageError(f"{option.flag} only applies to --executor {spec.name}")
            chosen[option.name] = value
    return chosen


def _dest(option) -> str:
    return f"executor_option_{option.name}"
