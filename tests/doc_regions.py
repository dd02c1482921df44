"""The generated regions of the documentation: tables that are the output of a function of imgbench.

A region names its function and holds what it returned when it was last written::

    <!-- generated: imgbench.schema:markdown_table -->
    | column | type | meaning |
    ...
    <!-- end generated -->

``tests/test_docs.py`` fails when a region differs from what its function returns now; ``python
tests/doc_regions.py`` rewrites every region of every page from its function.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REGION = re.compile(r"(?P<start><!-- generated: (?P<source>[\w.]+:\w+) -->\n)(?P<body>.*?)(?P<end>\n<!-- end generated -->)",
                    re.S)


def pages() -> list[Path]:
    return sorted((REPO / "docs").rglob("*.md"))


def generated(source: str) -> str:
    """What the function ``module:name`` returns now, without surrounding blank lines."""
    module, name = source.split(":")
    return getattr(importlib.import_module(module), name)().strip()


def regions(text: str) -> list[tuple[str, str]]:
    """Each region of ``text`` as (its function, what it holds)."""
    return [(m["source"], m["body"]) for m in REGION.finditer(text)]


def regenerate(text: str) -> str:
    return REGION.sub(lambda m: m["start"] + generated(m["source"]) + m["end"], text)


def main() -> int:
    from imgbench.paths import atomic_write_text

    for page in pages():
        text = page.read_text(encoding="utf-8")
        if regions(text) and (new := regenerate(text)) != text:
            atomic_write_text(page, new)
            print(f"rewrote {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
