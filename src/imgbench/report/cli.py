"""``imgbench report OUT [--baseline OTHER_OUT]``: build the comparison report of a results folder.

Nothing heavy is imported here: the main CLI imports this module to build its parser for every command.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="results folder written by `imgbench run` (holds results.csv)")
    parser.add_argument("--baseline", metavar="OTHER_OUT",
                        help="an earlier results folder: show each metric's change and flag regressions")
    parser.add_argument("--no-notebook", action="store_true",
                        help="build in this process instead of executing notebooks/report.ipynb (no kernel)")


def main(args: argparse.Namespace) -> int:
    from imgbench.report import build_report, render

    html = render(args.out, args.baseline) if args.no_notebook else build_report(args.out, args.baseline)
    print(f"report: {html}")
    print(f"        {html.with_suffix('.md')}, {html.parent / 'figures'}/, {html.parent / 'summary.csv'}")
    return 0
