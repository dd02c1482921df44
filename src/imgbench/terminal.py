"""Text for the terminal: lines wrapped to its width, tables whose last column wraps under itself, plurals.

The width is ``shutil.get_terminal_size``'s (the ``COLUMNS`` variable wins). Where there is no terminal
and no ``COLUMNS`` (a pipe, a log file, a CI job), lines are left whole: one message a line is what ``grep``
and log viewers want. Long words (paths, job ids) are never broken: a path cut in two cannot be copied.
"""

from __future__ import annotations

import shutil
import textwrap
from typing import Any, Mapping, Sequence

MIN_WIDTH = 40  # below this (COLUMNS=10, a tiny pane) wrapping would make more noise than it removes
MIN_LAST_COLUMN = 24  # a table's wrapped last column never gets narrower than this
GAP = "  "  # between table columns
CONTINUATION = "  "  # extra indent of a wrapped line's continuation
ELLIPSIS = "..."  # ASCII: a terminal or log in another encoding must not fail on it


def width() -> int | None:
    """The terminal's width in characters (at least ``MIN_WIDTH``), or None where there is no terminal."""
    columns = shutil.get_terminal_size(fallback=(0, 0)).columns
    return max(MIN_WIDTH, columns) if columns > 0 else None


def wrap(text: str, columns: int | None = None) -> str:
    """Every line of ``text`` wrapped to ``columns`` (default: the terminal's; none: left whole); a wrapped
    line's continuation keeps its indent plus two spaces."""
    columns = columns or width()
    if columns is None:
        return text
    lines = []
    for line in text.splitlines() or [""]:
        lead = line[:len(line) - len(line.lstrip())]
        lines += textwrap.wrap(line, width=columns, subsequent_indent=lead + CONTINUATION, break_long_words=False,
                               break_on_hyphens=False) or [line]
    return "\n".join(lines)


def truncate(text: str, columns: int) -> str:
    """``text`` cut to ``columns`` characters, ending in ``...`` when it was cut."""
    return text if len(text) <= columns else text[:max(columns - len(ELLIPSIS), 0)] + ELLIPSIS


def noun_form(n: float, noun: str) -> str:
    """``noun`` or its plural, as ``n`` asks: 1 job, 2 jobs, 0.5 cores ('y' -> 'ies' after a consonant)."""
    if n == 1:
        return noun
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def plural(count: float, noun: str, many: str = "") -> str:
    """``1 job``, ``2 jobs``, ``1,200 images``; ``many`` for an irregular plural."""
    return f"{count:,} {noun if count == 1 else many or noun_form(count, noun)}"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], columns_wide: int | None = None) -> str:
    """Rows under upper-case headers; the last column wraps under itself to fit the terminal (none: unwrapped)."""
    total = columns_wide or width()
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    start = sum(widths[:-1]) + len(GAP) * (len(columns) - 1)  # where the last column begins
    last = max(MIN_LAST_COLUMN, total - start) if total else max(widths[-1], 1)
    lines = [GAP.join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    for row in cells:
        head = "".join(cell.ljust(w) + GAP for cell, w in zip(row[:-1], widths))
        parts = textwrap.wrap(row[-1], width=last, break_long_words=False, break_on_hyphens=False) or [""]
        lines.append((head + parts[0]).rstrip())
        lines += [" " * start + part for part in parts[1:]]
    return "\n".join(lines)
