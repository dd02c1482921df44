"""``OUT/tracking.json``: where each tracker recorded the grid and its jobs, and the report's section of links.

The launcher writes it (the one writer), merging what each lifecycle hook returned, so a resume keeps the
links of the jobs it skips. The report reads it and links every row to its run; nothing here contacts a
tracker. Shape: ``{"<tracker>": {"grid": {"url": ..., "note": ...}, "jobs": {"<job-id>": "<url>"}}}``.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from imgbench import schema
from imgbench.paths import atomic_write_json
from imgbench.specs import RunLink

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SECTION_TITLE = "Tracked runs"


def read(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every tracker's links in ``out_dir``; empty when there are none (or the file is unreadable)."""
    try:
        found = json.loads((Path(out_dir) / schema.TRACKING_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def record(out_dir: Path, tracker: str, links: Iterable[RunLink]) -> None:
    """Merge ``links`` into ``OUT/tracking.json`` under ``tracker`` (a job's newer link replaces its older)."""
    links = list(links)
    if not links:
        return
    known = read(out_dir)
    entry = known.setdefault(tracker, {"grid": None, "jobs": {}})
    for link in links:
        if link.job_id:
            entry["jobs"][link.job_id] = link.url
        else:
            entry["grid"] = {"url": link.url, "note": link.note}
    atomic_write_json(Path(out_dir) / schema.TRACKING_JSON, known)


def html_section(out_dir: Path, table: "pd.DataFrame") -> str:
    """The report's section linking each row of ``table`` (results.csv) to its runs; empty without links."""
    known = read(out_dir)
    if not known:
        return ""
    notes = "".join(f'<p class="note">{escape(name)}: <a href="{escape(entry["grid"]["url"])}">the grid\'s run</a>'
                    + (f" ({escape(entry['grid']['note'])})" if entry["grid"].get("note") else "") + "</p>"
                    for name, entry in known.items() if entry.get("grid"))
    head = '<tr><th class="text">Job</th><th class="text">Status</th>' + "".join(
        f'<th class="text">{escape(name)}</th>' for name in known) + "</tr>"
    rows = "".join(
        f'<tr><td class="text">{escape(str(job_id))}</td><td class="text">{escape(str(status))}</td>' + "".join(
            f'<td class="text"><a href="{escape(url)}">run</a></td>' if (url := entry["jobs"].get(job_id))
            else '<td class="text"></td>' for entry in known.values()) + "</tr>"
        for job_id, status in table[["job_id", "status"]].itertuples(index=False))
    return (f'<section id="tracking"><h2>{SECTION_TITLE}</h2>\n{notes}'
            f'<div class="wrap"><table>{head}{rows}</table></div>\n</section>')


def markdown_lines(out_dir: Path, table: "pd.DataFrame") -> list[str]:
    """The same section as Markdown lines; none without links."""
    known = read(out_dir)
    if not known:
        return []
    lines = ["", f"## {SECTION_TITLE}", ""]
    lines += [f"- {name}: [the grid's run]({entry['grid']['url']})"
              + (f" ({entry['grid']['note']})" if entry["grid"].get("note") else "")
              for name, entry in known.items() if entry.get("grid")]
    lines += ["", "| Job | Status | " + " | ".join(known) + " |", "|---|---|" + "---|" * len(known)]
    lines += [f"| `{job_id}` | {status} | " + " | ".join(
        f"[run]({url})" if (url := entry["jobs"].get(job_id)) else "" for entry in known.values()) + " |"
        for job_id, status in table[["job_id", "status"]].itertuples(index=False)]
    return lines
