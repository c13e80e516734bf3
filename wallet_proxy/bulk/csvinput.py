"""Reading and validating a CSV of customers, a row at a time.

The whole file is checked before anything is sent, and every problem of it reported at
once; the rows are kept in the run's Scratch (scratch.py), not in memory, so that a file
of millions of rows takes no more memory than one of ten.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import InvalidRequest
from ..rules import check_customer_id, check_user_id, load_tags
from .formulas import restored, written_inert
from .scratch import Row, Scratch

MAX_LINE_BYTES = 64 * 1024
MAX_PROBLEMS = 20
EXTERNAL_ID_COLUMN = "external_id"
ID_COLUMNS = (EXTERNAL_ID_COLUMN, "user_id")
TAG_SEPARATORS = re.compile(r"[\s,;|]+")


class BadInput(click.ClickException):
    """The file, an option or the settings are wrong: exit 2, nothing sent."""

    exit_code = 2


# --- reading the CSV ------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    line: int
    cells: list[str]
    id: str


@dataclass(frozen=True)
class Table:
    """A CSV's header and id column; `records` reads its rows."""

    path: Path
    header: list[str]
    header_line: int
    id_index: int
    # Written by formulas.inert (FILE.failed.csv, or a copy): its cells are read restored.
    inert: bool

    @property
    def id_name(self) -> str:
        return self.header[self.id_index]

    @property
    def external_ids(self) -> bool:
        """Whether the id column's name says it holds SessionM external ids."""
        return self.id_name.strip().lower() == EXTERNAL_ID_COLUMN

    def column(self, name: str) -> int | None:
        names = [cell.strip().lower() for cell in self.header]
        return names.index(name) if name in names else None


class FirstLines:
    """Messages about lines: those of the first `size` lines, and how many there were."""

    def __init__(self, size: int = MAX_PROBLEMS):
        self.size = size
        self.count = 0
        self._kept: list[tuple[int, int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.count += 1
        self._kept.append((line, self.count, message))
        if len(self._kept) > self.size:
            self._kept.remove(max(self._kept))

    def also(self, count: int) -> None:
        """`count` more messages, about lines after any that `add` had."""
        self.count += count

    def messages(self) -> list[str]:
        return [f"line {line}: {message}" for line, _, message in sorted(self._kept)]


class Problems:
    """Every problem of a file, reported at once (the first MAX_PROBLEMS lines'), so one
    fix-up pass is enough."""

    def __init__(self, path: Path):
        self.path = path
        self.found = FirstLines()

    @property
    def count(self) -> int:
        return self.found.count

    def add(self, line: int, message: str) -> None:
        self.found.add(line, message)

    def fail(self, line: int, message: str) -> BadInput:
        self.add(line, message)
        return self.error()

    def error(self) -> BadInput:
        shown = self.found.messages()
        more = self.count - len(shown)
        lines = [f"{self.path} is not valid; nothing was sent:"]
        lines += [f"  {problem}" for problem in shown]
        if more:
            lines.append(f"  ... and {more} more problem{'s' if more > 1 else ''}")
        return BadInput("\n".join(lines))

    def check(self) -> None:
        if self.count:
            raise self.error()


def read_table(path: Path, id_column: str | None) -> Table:
    """Decode (UTF-8, BOM allowed), parse strictly, and pick the id column of the header."""
    problems = Problems(path)
    for line, cells in _rows(path, problems):
        inert = written_inert(cells)  # FILE.failed.csv: its cells as they were before writing
        header = restored(cells) if inert else cells
        names = [cell.strip().lower() for cell in header]
        return Table(path, header, line, _id_index(names, id_column, problems), inert)
    raise problems.fail(1, "the file is empty; expected a header line then one row per id")


def records(table: Table, problems: Problems) -> Iterator[Record]:
    """Each row after the header with as many fields as the header and an id; every other
    row is a problem."""
    rows = _rows(table.path, problems)
    next(rows)  # the header
    for line, cells in rows:
        if table.inert:
            cells = restored(cells)
        if len(cells) != len(table.header):
            problems.add(line, f"{len(cells)} fields where the header has {len(table.header)}")
            continue
        user_id = cells[table.id_index].strip()
        if not user_id:
            problems.add(line, f"empty id in column {table.header[table.id_index]!r}")
            continue
        yield Record(line, cells, user_id)


def _kept(table: Table, problems: Problems, scratch: Scratch, rows: Iterable[Row]) -> int:
    """`rows` kept in `scratch`, then checked together: ids on two lines, or no row at
    all. Raises with every problem of the file; else the number of rows."""
    count = scratch.add_rows(rows)
    repeated, total = scratch.duplicates(MAX_PROBLEMS)
    for line, user_id, first in repeated:
        problems.add(line, f"id {user_id!r} is already on line {first}")
    problems.found.also(total - len(repeated))
    if not count and not problems.count:
        problems.add(table.header_line, "a header but no rows")
    problems.check()
    return count


def _rows(path: Path, problems: Problems) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of every row that isn't blank, as the file is read."""
    with path.open("rb") as handle:
        reader = csv.reader(_decoded_lines(handle, problems), strict=True)
        yield from _parse(reader, problems)


def _decoded_lines(handle, problems: Problems) -> Iterator[str]:
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise problems.fail(number, f"longer than {MAX_LINE_BYTES // 1024} KiB")
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise problems.fail(
                number,
                f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "save or export the file as UTF-8",
            ) from None


def _parse(reader, problems: Problems) -> Iterator[tuple[int, list[str]]]:
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise problems.fail(reader.line_num, f"not valid CSV ({exc})") from None
        if cells and any(cell.strip() for cell in cells):
            if sum(len(cell) for cell in cells) > MAX_LINE_BYTES:
                raise problems.fail(line, f"a row longer than {MAX_LINE_BYTES // 1024} KiB")
            yield line, cells


def _id_index(names: list[str], id_column: str | None, problems: Problems) -> int:
    if id_column is not None:
        wanted = id_column.strip().lower()
        if wanted not in names:
            raise problems.fail(1, f"no column named {id_column!r} (columns: {', '.join(names)})")
        return names.index(wanted)
    return next((names.index(name) for name in ID_COLUMNS if name in names), 0)


# --- rows to tag ---------------------------------------------------------------------


@dataclass(frozen=True)
class TagRow:
    line: int
    id: str
    tags: tuple[str, ...]
    ttl: int | None
    external: bool

    @property
    def key(self) -> tuple:
        """What is sent, which is what the journal remembers."""
        return tag_key("external" if self.external else "user", self.id, self.tags, self.ttl)

    @classmethod
    def kept(cls, row: Row, *, external: bool) -> TagRow:
        """The row as `tag_rows` kept it in the run's Scratch."""
        line, user_id, tags, ttl, _ = row
        return cls(line, user_id, tuple(json.loads(tags or "[]")), ttl, external)


def tag_key(id_type: str, user_id: str, tags: Iterable[str], ttl: int | None) -> tuple:
    """A row's journal key: the same tags in another order are the same call."""
    return (id_type, user_id, tuple(sorted(tags)), ttl)


def key_text(key: tuple) -> str:
    """A journal key as the run's Scratch holds it."""
    return json.dumps(key, ensure_ascii=False, separators=(",", ":"))


def tag_rows(
    table: Table,
    tags: tuple[str, ...],
    ttl: int | None,
    *,
    external: bool,
    scratch: Scratch,
) -> int:
    """Each record's tags and ttl, from the options or else the `tags`/`ttl` columns, kept
    in `scratch`; the number of rows. Raises with every problem of the file."""
    problems = Problems(table.path)
    tags_index = None if tags else table.column("tags")
    ttl_index = None if ttl is not None else table.column("ttl")
    if not tags and tags_index is None:
        raise problems.fail(1, "no tags column: give --tag or add a 'tags' column")

    def checked(record: Record) -> Row:
        row_tags = (
            list(tags)
            if tags_index is None
            else TAG_SEPARATORS.split(record.cells[tags_index].strip())
        )
        body: dict[str, object] = {"tags": row_tags}
        if ttl is not None:
            body["ttl"] = ttl
        elif ttl_index is not None and record.cells[ttl_index].strip():
            cell = record.cells[ttl_index].strip()
            body["ttl"] = int(cell) if cell.isascii() and cell.isdecimal() else cell
        try:
            check_customer_id(record.id)
            loaded = load_tags(body)
        except InvalidRequest as error:
            problems.add(record.line, error.message)
            return record.line, record.id, None, None, None  # kept for the duplicate check
        row = TagRow(record.line, record.id, tuple(loaded["tags"]), loaded["ttl"], external)
        return row.line, row.id, json.dumps(row.tags), row.ttl, key_text(row.key)

    return _kept(table, problems, scratch, map(checked, records(table, problems)))


def wallet_ids(table: Table, scratch: Scratch) -> int:
    """Each record's id, checked as the wallet endpoint checks it, kept in `scratch`; the
    number of ids. Raises with every problem of the file."""
    if table.external_ids:
        raise BadInput(
            f"{table.path}: the ids would come from column {table.id_name!r}, but wallets are "
            "fetched by SessionM user id (Connect takes no external id): name the user-id "
            "column with --id-column, e.g. --id-column user_id"
        )
    problems = Problems(table.path)

    def checked(record: Record) -> Row:
        try:
            check_user_id(record.id)  # the wallet endpoint's own rule for ids
        except InvalidRequest as error:
            problems.add(record.line, f"{record.id[:64]!r}: {error.message}")
        return record.line, record.id, None, None, None

    return _kept(table, problems, scratch, map(checked, records(table, problems)))
