"""Cells a spreadsheet would run as formulas: made inert in FILE.failed.csv, restored on import.

The docs tell operators to open FILE.failed.csv and to import it, or a copy, again. A
customer id is whatever SessionM takes, `=HYPERLINK(...)` too, and a spreadsheet runs a
cell that starts with = + - @, a tab or a carriage return (OWASP's CSV injection rule).
Such a cell is written with a `'` in front, which spreadsheets take as "text"; so is a
cell that really starts with `'`. Reading takes exactly that one `'` off again, so every
id imports as it was, `'=x` (a real quote) included.

Only a file written this way is read this way: one whose last two columns are `line` and
`reason`, as FILE.failed.csv's are. Any other file (a Braze export) is read as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MARK = "'"
MARKED = (*FORMULA_STARTS, MARK)
FAILED_FILE_LAST_COLUMNS = ["line", "reason"]


def inert(cells: Sequence[object]) -> list[str]:
    """A row to write: each cell a spreadsheet would run gets the mark."""
    return [MARK + text if text.startswith(MARKED) else text for text in map(str, cells)]


def restored(cells: Sequence[str]) -> list[str]:
    """A row `inert` wrote, as it was before."""
    return [
        cell[1:] if cell[:1] == MARK and cell[1:].startswith(MARKED) else cell for cell in cells
    ]


def written_inert(header: Sequence[str]) -> bool:
    """Whether a file with this header is one `inert` wrote (FILE.failed.csv, or a copy)."""
    return [name.strip().lower() for name in header[-2:]] == FAILED_FILE_LAST_COLUMNS
