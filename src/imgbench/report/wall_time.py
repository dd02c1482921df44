"""The report's "Where the time went" section: per job and for the grid, the model's compute (training,
evaluation, benchmarks) against the harness around it (process and kernel start, imports, data, model build,
figures, files), from each job's metrics.json ``phases`` and ``wall`` (:mod:`imgbench.engine.phases`)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any, Callable

from imgbench.engine.phases import COMPUTE, MEANINGS, ORDER, compute_seconds, covered
from imgbench.report import fmt

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.report.findings import Report

KEY = "time"
TITLE = "Where the time went"
TOP_HARNESS = 3  # harness phases named per job


@dataclass(frozen=True)
class JobTime:
    """One job's wall time, split into phases."""

    label: str  # model on dataset, seed
    wall_s: float
    phases: dict[str, float]
    span: tuple[float, float] | None  # wall-clock start and end, when the launcher recorded them

    @property
    def compute_s(self) -> float:
        return compute_seconds(self.phases)

    @property
    def harness_s(self) -> float:
        return self.wall_s - self.compute_s

    def top_harness(self) -> list[tuple[str, float]]:
        harness = [(name, seconds) for name, seconds in self.phases.items() if name not in COMPUTE]
        return sorted(harness, key=lambda item: -item[1])[:TOP_HARNESS]


@dataclass(frozen=True)
class GridTime:
    """Every job's time, and the grid's: the span from the first job's launch to the last one's end."""

    jobs: list[JobTime]

    @property
    def span_s(self) -> float:
        """The jobs' wall time together, jobs that overlapped counted once (the sum when times are missing)."""
        spans = [job.span for job in self.jobs if job.span is not None]
        return covered(spans) if len(spans) == len(self.jobs) else sum(job.wall_s for job in self.jobs)

    @property
    def compute_s(self) -> float:
        return sum(job.compute_s for job in self.jobs)

    def phase_totals(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for job in self.jobs:
            for name, seconds in job.phases.items():
                totals[name] = totals.get(name, 0.0) + seconds
        known = [name for name in ORDER if name in totals]
        return {name: totals[name] for name in known + sorted(set(totals) - set(known))}


def grid_time(report: Report) -> GridTime:
    """The jobs whose metrics.json records phases, in results.csv's order."""
    jobs = []
    for row in report.results.table.itertuples():
        metrics: dict[str, Any] = report.results.metrics(str(row.job_id)) or {}
        phases = {name: float(seconds) for name, seconds in (metrics.get("phases") or {}).items()}
        if not phases:
            continue
        wall = metrics.get("wall") or {}
        span = (wall["started_at"], wall["ended_at"]) if "started_at" in wall and "ended_at" in wall else None
        jobs.append(JobTime(f"{row.model} on {row.dataset}, seed {row.seed}",
                            float(wall.get("seconds") or sum(phases.values())), phases, span))
    return GridTime(jobs)


def summary(grid: GridTime) -> str:
    """One paragraph: the grid's span, its compute and its harness, per job."""
    n, span, compute = len(grid.jobs), grid.span_s, grid.compute_s
    harness = max(0.0, span - compute)
    return (f"The {fmt.plural(n, 'job')} took {span:.1f} s from the first one's start to the last one's end. "
            f"The models computed (training, evaluation, benchmarks) for {compute:.1f} s "
            f"({_share(compute, span)}); the "
            f"harness around them took {harness:.1f} s ({_share(harness, span)}), {harness / n:.1f} s per job. "
            f"A job started while the one before it finished counts once.")


def render_html(report: Report) -> str:
    grid = grid_time(report)
    title = f'<section id="{KEY}"><h2>{TITLE}</h2>\n'
    if not grid.jobs:
        return title + "<p>No job recorded its phases.</p>\n</section>"
    totals = grid.phase_totals()
    walls = sum(job.wall_s for job in grid.jobs)
    phase_rows = "".join(
        f'<tr data-phase="{escape(name)}"><td class="text">{escape(name)}</td><td>{seconds:.1f}</td>'
        f'<td>{_share(seconds, walls)}</td><td class="text">{"compute" if name in COMPUTE else "harness"}</td>'
        f'<td class="text">{escape(MEANINGS.get(name, ""))}</td></tr>' for name, seconds in totals.items())
    job_rows = "".join(
        f'<tr><td class="text">{escape(job.label)}</td><td>{job.wall_s:.1f}</td><td>{job.compute_s:.1f}</td>'
        f'<td>{job.harness_s:.1f}</td><td>{_share(job.harness_s, job.wall_s)}</td>'
        f'<td class="text">{escape(_named(job.top_harness()))}</td></tr>' for job in grid.jobs)
    return (title + f'<p>{escape(summary(grid))}</p>'
            '<div class="wrap"><table id="phases"><thead><tr><th class="text">Phase</th><th>Seconds, all jobs</th>'
            '<th>Share</th><th class="text">Kind</th><th class="text">What</th></tr></thead>'
            f"<tbody>{phase_rows}</tbody></table></div>"
            '<div class="wrap"><table id="job-times"><thead><tr><th class="text">Job</th><th>Wall s</th>'
            '<th>Compute s</th><th>Harness s</th><th>Harness share</th><th class="text">Largest harness phases</th>'
            f"</tr></thead><tbody>{job_rows}</tbody></table></div>\n</section>")


def render_markdown(report: Report, md: Callable[[object], str]) -> list[str]:
    """The section's lines for report.md; ``md`` escapes text as the page escapes it."""
    grid = grid_time(report)
    lines = ["", f"## {TITLE}", ""]
    if not grid.jobs:
        return lines + ["No job recorded its phases."]
    totals = grid.phase_totals()
    walls = sum(job.wall_s for job in grid.jobs)
    lines += [md(summary(grid)), "", "| Phase | Seconds, all jobs | Share | Kind |", "| --- | --- | --- | --- |"]
    lines += [f"| {md(name)} | {seconds:.1f} | {_share(seconds, walls)} | "
              f"{'compute' if name in COMPUTE else 'harness'} |" for name, seconds in totals.items()]
    lines += ["", "| Job | Wall s | Compute s | Harness s | Largest harness phases |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {md(job.label)} | {job.wall_s:.1f} | {job.compute_s:.1f} | {job.harness_s:.1f} | "
              f"{md(_named(job.top_harness()))} |" for job in grid.jobs]
    return lines


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "-"


def _named(phases: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases)
