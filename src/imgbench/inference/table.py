"""``inference.csv``: one row per (model, dataset, runtime, precision, batch size), its columns those of
``schema.INFERENCE_COLUMNS``, rewritten atomically after every row so an interrupted sweep keeps what it
measured. Rows already in the file for keys this run does not measure are kept."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

from imgbench import schema
from imgbench.paths import atomic_write_text

Row = dict[str, Any]


def row_key(row: Row) -> tuple[str, ...]:
    return tuple(str(row.get(name, "")) for name in schema.INFERENCE_KEYS)


class InferenceTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple[str, ...], Row] = {row_key(r): r for r in read_rows(path)} if path.is_file() else {}

    def put(self, row: Row) -> None:
        unknown = set(row) - set(schema.INFERENCE_BY_NAME)
        if unknown:
            raise KeyError(f"not inference.csv columns: {', '.join(sorted(unknown))}")
        self.rows[row_key(row)] = row
        self.write()

    def update(self, rows: Iterable[Row], values: Row) -> None:
        """Fill ``values`` into ``rows`` (already put), then write once."""
        for row in rows:
            row.update(values)
            self.rows[row_key(row)] = row
        self.write()

    def write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[c.name for c in schema.INFERENCE_COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows({name: _cell(row.get(name)) for name in writer.fieldnames} for row in self.rows.values())
        atomic_write_text(self.path, buffer.getvalue())


def _cell(value: Any) -> Any:
    return "" if value is None else value  # inf stays "inf": an fp16 logit that overflowed is a finding


def read_rows(path: Path) -> list[Row]:
    """The rows of an ``inference.csv`` as text cells (the report's reader types them with pandas)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
