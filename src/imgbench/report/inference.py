"""The report's inference section, from ``OUT/inference.csv`` (``imgbench infer``), alone or beside a grid.

Per dataset: throughput against batch size (a panel per model, a line per runtime and precision); the
batch-1 latency table (p50/p90/p99); the agreement table against eager fp32, every runtime and precision below
``AGREEMENT_FLAG`` top-1 agreement flagged; accuracy against energy per image with its Pareto front when
energy was measured; and the rows that did not run, with why. Reads, draws and renders; the pages call
:func:`html_section` and :func:`markdown_lines`, ``build`` calls :func:`draw_figures`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable, cast

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from imgbench import schema
from imgbench.report.figures import THEME, WIDTH_INCHES, FigureFile, save_figure, slug
from imgbench.report.fmt import MISSING
from imgbench.report.tables import pareto_front

TITLE = "Inference"
AGREEMENT_FLAG = 0.99  # a runtime or precision whose top-1 agreement with eager fp32 is below this is flagged
GROUP = ["model", "runtime", "precision"]
LATENCY = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms"]
PANEL_INCHES = 4.2
MAX_PANELS_PER_ROW = 3


@dataclass
class InferenceFindings:
    """``inference.csv`` typed by the schema, and ``inference.json``."""

    out_dir: Path
    table: pd.DataFrame
    info: dict[str, Any]
    figures: list[FigureFile] = field(default_factory=list)

    @property
    def ok(self) -> pd.DataFrame:
        return self.table[self.table["status"] == schema.Status.OK]

    @property
    def datasets(self) -> list[str]:
        return sorted(set(self.table["dataset"]))

    def latency(self, dataset: str) -> pd.DataFrame:
        """Batch 1 on ``dataset``: one row per model, runtime and precision."""
        rows = self.ok[(self.ok["dataset"] == dataset) & (self.ok["batch_size"] == 1)]
        return rows[GROUP + LATENCY].sort_values(GROUP).reset_index(drop=True)

    def agreement(self, dataset: str) -> pd.DataFrame:
        """One row per model, runtime and precision that ran on ``dataset``, with ``flagged`` when its top-1
        agreement with eager fp32 is below ``AGREEMENT_FLAG``."""
        rows = self.ok[self.ok["dataset"] == dataset].dropna(subset=["agreement"])
        table = rows.groupby(GROUP, sort=True)[["agreement", "max_logit_diff", "accuracy",
                                                "agreement_samples"]].first().reset_index()
        table["flagged"] = table["agreement"] < AGREEMENT_FLAG
        return table

    def not_run(self, dataset: str) -> pd.DataFrame:
        """Rows that are not ok, one line per model, runtime, precision and error (their batch sizes joined)."""
        rows = self.table[(self.table["dataset"] == dataset) & (self.table["status"] != schema.Status.OK)]
        if rows.empty:
            return pd.DataFrame(columns=GROUP + ["batch_sizes", "status", "error"])
        grouped = rows.groupby(GROUP + ["status", "error"], sort=True)["batch_size"]
        out = grouped.apply(lambda sizes: ", ".join(str(int(s)) for s in sorted(sizes))).reset_index()
        return out.rename(columns={"batch_size": "batch_sizes"})[GROUP + ["batch_sizes", "status", "error"]]

    def energy_measured(self, dataset: str) -> bool:
        return bool(self.ok.loc[self.ok["dataset"] == dataset, "energy_per_image_j"].notna().any())

    def energy_note(self) -> str:
        notes = sorted({n for n in self.table["energy_note"] if n})
        return "; ".join(notes)

    def headline(self) -> str:
        n, ok = len(self.table), len(self.ok)
        info = self.info
        where = f" on {info.get('device_name') or info.get('device', '?')}" if info else ""
        return (f"{n} inference rows{where}: {ok} ok, {n - ok} not run (see below); "
                f"{self.table['model'].nunique()} model(s), runtimes {', '.join(sorted(set(self.table['runtime'])))}, "
                f"precisions {', '.join(sorted(set(self.table['precision'])))}.")


def load_inference(out_dir: str | Path) -> InferenceFindings | None:
    """The folder's inference results, or None when it has no inference.csv."""
    out_dir = Path(out_dir)
    path = out_dir / schema.INFERENCE_CSV
    if not path.is_file():
        return None
    text = [c.name for c in schema.INFERENCE_COLUMNS if not c.numeric]
    try:
        table = pd.read_csv(path, dtype={name: "string" for name in text}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=[c.name for c in schema.INFERENCE_COLUMNS])
    for column in schema.INFERENCE_COLUMNS:
        if column.numeric:
            table[column.name] = pd.to_numeric(table.get(column.name, pd.Series(dtype=float)), errors="coerce")
        else:
            table[column.name] = table.get(column.name, pd.Series(dtype="string")).astype("string").fillna("")
    info_path = out_dir / schema.INFERENCE_JSON
    try:
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    except (OSError, ValueError):
        info = {}
    return InferenceFindings(out_dir, table, info if isinstance(info, dict) else {})


# -- figures ------------------------------------------------------------------------------------------------------
def draw_figures(findings: InferenceFindings | None, directory: Path) -> list[FigureFile]:
    """Draw the section's figures into ``directory``; remembered on ``findings``."""
    if findings is None:
        return []
    files = []
    for dataset in findings.datasets:
        planned = [
            ("inference-throughput", "Throughput against batch size",
             "One panel per model; colour: runtime, dash: precision; both axes logarithmic.",
             throughput_figure(findings.ok, dataset)),
            ("inference-energy", "Accuracy against energy per image",
             "Every runtime, precision and batch size that ran; outlined: the Pareto front (no other point is both "
             "more accurate and cheaper).", energy_figure(findings.ok, dataset)),
        ]
        for key, title, caption, figure in planned:
            if figure is not None:
                png, svg = save_figure(figure, directory, f"{key}-{slug(dataset)}")
                files.append(FigureFile(key, dataset, title, caption, png, svg))
    findings.figures = files
    return files


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> Figure:
    sns.set_theme(**THEME)
    figure = Figure(figsize=(width, height), layout="constrained")
    figure.subplots(nrows, ncols, squeeze=False)
    return figure


def throughput_figure(ok: pd.DataFrame, dataset: str) -> Figure | None:
    rows = ok[ok["dataset"] == dataset].dropna(subset=["throughput"])
    if rows.empty:
        return None
    models = sorted(set(rows["model"]))
    ncols = min(len(models), MAX_PANELS_PER_ROW)
    nrows = -(-len(models) // ncols)
    figure = _figure(PANEL_INCHES * ncols + 1.5, 3.4 * nrows, nrows, ncols)
    runtimes = [r for r in schema.RUNTIMES if r in set(rows["runtime"])]
    colours = dict(zip(runtimes, sns.color_palette("tab10", len(runtimes))))
    dashes = dict(zip(schema.PRECISIONS, ("-", "--", ":")))
    for ax, model in zip(figure.axes, models):
        for (runtime, precision), line in rows[rows["model"] == model].groupby(["runtime", "precision"]):
            line = line.sort_values("batch_size")
            ax.plot(line["batch_size"], line["throughput"], marker="o", color=colours[runtime],
                    linestyle=dashes.get(precision, "-"), label=f"{runtime} {precision}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set(title=model, xlabel="Batch size", ylabel="Images per second")
        ax.legend(fontsize="x-small")
    for ax in figure.axes[len(models):]:
        ax.set_visible(False)
    return figure


def energy_figure(ok: pd.DataFrame, dataset: str) -> Figure | None:
    rows = ok[ok["dataset"] == dataset].dropna(subset=["energy_per_image_j", "accuracy"]).copy()
    if rows.empty:
        return None
    rows["saving"] = -rows["energy_per_image_j"]  # pareto_front wants both larger-is-better
    rows["front"] = pareto_front(rows, "saving", "accuracy")
    figure = _figure(WIDTH_INCHES, 4.2)
    ax = figure.axes[0]
    front = rows[rows["front"]].sort_values("energy_per_image_j")
    ax.step(front["energy_per_image_j"], front["accuracy"], where="pre", color="grey", linestyle="--",
            linewidth=1, label="Pareto front")
    sns.scatterplot(data=rows, x="energy_per_image_j", y="accuracy", hue="model", style="runtime",
                    size="front", ax=ax,
                    sizes=cast(Any, {True: 80, False: 35}))  # the stubs want str levels; seaborn takes any
    for _, row in front.iterrows():
        ax.annotate(f"{row['runtime']} {row['precision']} b{int(row['batch_size'])}",
                    (row["energy_per_image_j"], row["accuracy"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    ax.set_xscale("log")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax.set(xlabel="Energy per image (J, log scale)", ylabel="Test accuracy",
           title=f"Accuracy against energy per image on {dataset}")
    ax.legend(fontsize="x-small", loc="best")
    return figure


# -- the pages ----------------------------------------------------------------------------------------------------
def number(name: str, value: Any) -> str:
    """A cell of ``name`` in its unit: agreement and accuracy in %, times in ms or s, energy in J."""
    if value is None or pd.isna(value):
        return MISSING
    unit = schema.INFERENCE_BY_NAME[name].unit
    if unit == schema.FRACTION:
        return f"{100 * value:.2f} %"
    if unit == "img/s":
        return f"{value:,.1f}"
    if unit == "J":
        return f"{value:.3g} J"
    if unit in ("ms", "s"):
        return f"{value:.2f} {unit}"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _tables(findings: InferenceFindings, dataset: str) -> list[tuple[str, str, list[str], list[list[str]], list[bool]]]:
    """(id, heading, header, rows, flagged rows) of each table of ``dataset``, for both pages."""
    latency = findings.latency(dataset)
    agreement = findings.agreement(dataset)
    not_run = findings.not_run(dataset)
    return [
        ("latency", "Latency at batch 1", ["Model", "Runtime", "Precision", "p50", "p90", "p99"],
         [[r.model, r.runtime, r.precision, *(number(c, getattr(r, c)) for c in LATENCY)]
          for r in latency.itertuples()], [False] * len(latency)),
        ("agreement", "Agreement with eager fp32",
         ["Model", "Runtime", "Precision", "Top-1 agreement", "Largest logit difference", "Accuracy", "Test images",
          "Flag"],
         [[r["model"], r["runtime"], r["precision"], number("agreement", r["agreement"]),
           number("max_logit_diff", r["max_logit_diff"]), number("accuracy", r["accuracy"]),
           number("agreement_samples", r["agreement_samples"]), f"below {AGREEMENT_FLAG:.0%}" if r["flagged"] else ""]
          for r in agreement.to_dict("records")], list(agreement["flagged"])),
        ("not-run", "Not run", ["Model", "Runtime", "Precision", "Batch sizes", "Status", "Why"],
         [[r["model"], r["runtime"], r["precision"], r["batch_sizes"], r["status"], r["error"]]
          for r in not_run.to_dict("records")],
         [False] * len(not_run)),
    ]


def _notes(findings: InferenceFindings, dataset: str) -> list[str]:
    notes = []
    flagged = findings.agreement(dataset)
    flagged = flagged[flagged["flagged"]]
    if not flagged.empty:
        notes.append(f"Below {AGREEMENT_FLAG:.0%} top-1 agreement with eager fp32 (flagged): "
                     + "; ".join(f"{r.model} {r.runtime} {r.precision}" for r in flagged.itertuples()) + ".")
    if not findings.energy_measured(dataset):
        notes.append(f"No energy figure: {findings.energy_note() or 'not measured'}.")
    return notes


def html_section(findings: InferenceFindings | None) -> str:
    if findings is None:
        return ""
    parts = [f'<p class="meta">{escape(findings.headline())}</p>']
    for dataset in findings.datasets:
        parts.append(f"<h3>{escape(dataset)}</h3>")
        parts += [f'<p class="note">{escape(note)}</p>' for note in _notes(findings, dataset)]
        for figure in (f for f in findings.figures if f.dataset == dataset):
            data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
            parts.append(f'<figure data-key="{figure.key}"><img alt="{escape(figure.title)} on {escape(dataset)}" '
                         f'src="data:image/png;base64,{data}"><figcaption><b>{escape(figure.title)}.</b> '
                         f"{escape(figure.caption)}</figcaption></figure>")
        for key, heading, header, rows, flags in _tables(findings, dataset):
            if not rows:
                continue
            head = "".join(f"<th>{escape(h)}</th>" for h in header)
            names = len(header) if key == "not-run" else len(GROUP)  # text columns, left-aligned; numbers right
            body = "".join(_html_row(row, flag, names, error_last=key == "not-run") for row, flag in zip(rows, flags))
            parts.append(f'<h4>{escape(heading)}</h4><div class="wrap"><table id="inference-{key}-{slug(dataset)}">'
                         f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
    return f'<section id="inference"><h2>{TITLE}</h2>\n' + "\n".join(parts) + "\n</section>"


def _html_row(cells: list[str], flagged: bool, names: int, error_last: bool) -> str:
    """A row whose first ``names`` cells are text; a flagged row's last cell (its flag) in the page's red."""
    classes = ["text" if i < names else "" for i in range(len(cells))]
    if flagged:
        classes[-1] = "regression"
    elif error_last:
        classes[-1] = "error"
    tds = [f'<td class="{css}">{escape(str(c))}</td>' if css else f"<td>{escape(str(c))}</td>"
           for css, c in zip(classes, cells)]
    return f'<tr data-flagged="{str(flagged).lower()}">{"".join(tds)}</tr>'


def markdown_lines(findings: InferenceFindings | None, escape_md: Callable[[object], str]) -> list[str]:
    """The section as Markdown lines; ``escape_md`` is the page's escaping of text from the results."""
    if findings is None:
        return []
    lines = [f"## {TITLE}", "", escape_md(findings.headline()), ""]
    for dataset in findings.datasets:
        lines += [f"### {escape_md(dataset)}", ""]
        lines += [f"> {escape_md(note)}" for note in _notes(findings, dataset)]
        lines += [f"![{escape_md(f.title)} on {escape_md(dataset)}]({schema.FIGURES_DIR}/{f.png.name})"
                  for f in findings.figures if f.dataset == dataset]
        for _key, heading, header, rows, _flags in _tables(findings, dataset):
            if not rows:
                continue
            lines += ["", f"#### {escape_md(heading)}", "", "| " + " | ".join(header) + " |",
                      "| " + " | ".join("---" for _ in header) + " |"]
            lines += ["| " + " | ".join(escape_md(c) for c in row) + " |" for row in rows]
        lines.append("")
    return lines
