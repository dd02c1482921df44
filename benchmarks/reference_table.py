"""The "published vs measured" table of docs/reproducing.md, generated from the results of the ``reference`` suite.

Each grid of ``benchmarks/suites/reference.toml`` names the figure it reproduces (its ``published`` table, with
the source). A results row belongs to a grid when its ``config_hash`` is one of the grid's jobs (same model,
dataset, seed and full recipe), so nothing is matched by name and no measured number is typed in: run the
suite, then this script. Several results folders may be given (e.g. the MNIST grids run on a CPU, the
flowers grids on a GPU). With ``--page``, a row none of the folders has results for keeps the line the page
already shows for it, as long as that line names the same grid, model, dataset and recipe: grids measured at
different times, or on different machines, fill the table one run at a time, and a recipe change still
empties the row it made stale.

    imgbench run reference --out results/reference
    python benchmarks/reference_table.py results/reference                      # print the table
    python benchmarks/reference_table.py results/reference --page docs/reproducing.md   # fill the page's table
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from imgbench.engine import Recipe
from imgbench.paths import atomic_write_text
from imgbench.report.load import load_results
from imgbench.schema import Status
from imgbench.resources import suite_path
from imgbench.runner.suite import Suite, expand, load_suite

SUITE = "reference"
OUT = "results/reference"  # where the commands in the table write
START, END = "<!-- reference-table:start -->", "<!-- reference-table:end -->"
HEADER = ("| grid | model on dataset | recipe | published | measured (mean over seeds) | seeds | device | "
          "command |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
CELLS = HEADER.splitlines()[0].count(" | ") + 1
NOT_RUN = "not run yet"  # the measured cell of a row with no results


@dataclass(frozen=True)
class Row:
    grid: str
    model: str
    dataset: str
    recipe: str
    published: dict
    measured: list[float]  # test accuracy of each ok seed
    seeds: list[int]
    devices: list[str]
    planned_seeds: int

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.measured) if self.measured else None


def collect(suite: Suite, folders: list[Path], registry=None) -> list[Row]:
    """One Row per (grid, model, dataset) of the suite, with the ok results of its jobs found in ``folders``."""
    from imgbench.registry import get_registry

    registry = registry or get_registry()
    tables = [load_results(folder).table for folder in folders]
    rows = []
    for grid in suite.grids:
        jobs = expand(grid, registry)
        for model, dataset in dict.fromkeys((job.model, job.dataset) for job in jobs):
            mine = {job.config_hash: job for job in jobs if (job.model, job.dataset) == (model, dataset)}
            found = {}  # seed -> (accuracy, device); a job found in two folders counts once
            for table in tables:
                ok = table[(table["status"] == Status.OK) & table["config_hash"].isin(list(mine))]
                for _, result in ok.iterrows():
                    found.setdefault(mine[result["config_hash"]].seed, (float(result["accuracy"]), result["device"]))
            seeds = sorted(found)
            rows.append(Row(grid.name, model, dataset, _recipe(next(iter(mine.values())).recipe),
                            dict(grid.published), [found[s][0] for s in seeds], seeds,
                            sorted({found[s][1] for s in seeds}), len(grid.seeds)))
    return rows


def _recipe(recipe: Recipe) -> str:
    size = f"{recipe.image_size} px, " if recipe.image_size else ""
    return (f"{size}{recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer} "
            f"{recipe.lr:g} {recipe.schedule}, wd {recipe.weight_decay:g}, "
            f"smoothing {recipe.label_smoothing:g}, augment {recipe.augment}")


def _key(row: Row) -> tuple[str, str, str]:
    """The cells that say what a line measured: a kept line must match all three."""
    return row.grid, f"{row.model} on {row.dataset}", row.recipe


def measured_lines(table: str) -> dict[tuple[str, str, str], str]:
    """The lines of a generated table that hold a measured figure, by (grid, model on dataset, recipe)."""
    lines = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if len(cells) == CELLS and cells[4] != NOT_RUN:
            lines[tuple(cells[:3])] = line
    return lines


def markdown(rows: list[Row], kept: dict[tuple[str, str, str], str] | None = None) -> str:
    """The table; a row with no results takes its line from ``kept`` (see ``measured_lines``) when it is there."""
    lines = [HEADER]
    for row in rows:
        if row.mean is None and _key(row) in (kept or {}):
            lines.append(kept[_key(row)])
            continue
        pub = row.published
        ranged = "low" in pub  # a figure read off a plot: a range, its middle as the value
        shown = f"about {pub['low']:.0%}-{pub['high']:.0%}" if ranged else f"{pub['value']:.2%}"
        published = f"{shown} [source]({pub['source']})"
        if row.mean is None:
            measured, seeds = NOT_RUN, f"0 of {row.planned_seeds}"
        else:
            low, high = min(row.measured), max(row.measured)
            span = f" (seeds {low:.2%} to {high:.2%})" if len(row.measured) > 1 else ""
            measured = f"**{row.mean:.2%}**{span}, {_against(row.mean, pub)}"
            seeds = f"{len(row.seeds)} of {row.planned_seeds}: {' '.join(map(str, row.seeds))}"
        command = f"`imgbench run reference -m {row.model} -d {row.dataset} --out {OUT}`"
        lines.append(f"| {' | '.join(_key(row))} | {published} | {measured} | "
                     f"{seeds} | {', '.join(row.devices) or '-'} | {command} |")
    return "\n".join(lines)


def _against(mean: float, pub: dict) -> str:
    """How far the measured mean is from the published figure, in points (from a range's nearer end)."""
    if "low" not in pub:
        return f"{100 * (mean - pub['value']):+.2f} pt"
    if pub["low"] <= mean <= pub["high"]:
        return "within the range"
    edge = pub["low"] if mean < pub["low"] else pub["high"]
    return f"{100 * (mean - edge):+.2f} pt from the range"


def page_section(page: Path) -> tuple[str, str, str]:
    """The page's text before the table, the table, and the text after it."""
    text = page.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{page} has no {START} ... {END} section to fill")
    head, rest = text.split(START, 1)
    table, tail = rest.split(END, 1)
    return head, table.strip(), tail


def fill_page(page: Path, table: str) -> None:
    head, _, tail = page_section(page)
    atomic_write_text(page, f"{head}{START}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results folder(s) of `imgbench run reference`")
    parser.add_argument("--suite", default=SUITE, help="suite file or shipped name (default: reference)")
    parser.add_argument("--page", type=Path, help="replace this Markdown file's reference-table section "
                                                  "(docs/reproducing.md)")
    args = parser.parse_args(argv)
    suite = load_suite(suite_path(args.suite))
    kept = measured_lines(page_section(args.page)[1]) if args.page else None
    table = markdown(collect(suite, args.results), kept)
    if args.page:
        fill_page(args.page, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
