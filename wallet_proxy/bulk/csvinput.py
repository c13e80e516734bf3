"""Reading and validating a CSV of customers: the whole file is checked before anything is sent."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import InvalidRequest
from ..rules import check_customer_id, check_user_id, load_tags
from .formulas import restored, written_inert

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
    """A CSV whose structure and ids are valid: header, id column, unique non-empty ids."""

    path: Path
    header: list[str]
    id_index: int
    records: list[Record]

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


class Problems:
    """Every problem of a file, reported at once (the first MAX_PROBLEMS), so one fix-up
    pass is enough."""

    def __init__(self, path: Path):
        self.path = path
        self.found: list[str] = []
        self.count = 0

    def add(self, line: int, message: str) -> None:
        self.count += 1
        if len(self.found) < MAX_PROBLEMS:
            self.found.append(f"line {line}: {message}")

    def fail(self, line: int, message: str) -> BadInput:
        self.add(line, message)
        return self.error()

    def error(self) -> BadInput:
        more = self.count - len(self.found)
        lines = [f"{self.path} is not valid; nothing was sent:"]
        lines += [f"  {problem}" for problem in self.found]
        if more:
            lines.append(f"  ... and {more} more problem{'s' if more > 1 else ''}")
        return BadInput("\n".join(lines))

    def check(self) -> None:
        if self.count:
            raise self.error()


def read_table(path: Path, id_column: str | None) -> Table:
    """Decode (UTF-8, BOM allowed), parse strictly, pick the id column, check the ids."""
    problems = Problems(path)
    with path.open("rb") as handle:
        reader = csv.reader(_decoded_lines(handle, problems), strict=True)
        rows = _parse(reader, problems)
    if not rows:
        raise problems.fail(1, "the file is empty; expected a header line then one row per id")
    (header_line, header), *body = rows
    if written_inert(header):  # FILE.failed.csv: its cells as they were before writing
        header, body = restored(header), [(line, restored(cells)) for line, cells in body]
    id_index = _id_index([cell.strip().lower() for cell in header], id_column, problems)
    records: list[Record] = []
    first_seen: dict[str, int] = {}
    for line, cells in body:
        if len(cells) != len(header):
            problems.add(line, f"{len(cells)} fields where the header has {len(header)}")
            continue
        user_id = cells[id_index].strip()
        if not user_id:
            problems.add(line, f"empty id in column {header[id_index]!r}")
        elif user_id in first_seen:
            problems.add(line, f"id {user_id!r} is already on line {first_seen[user_id]}")
        else:
            first_seen[user_id] = line
            records.append(Record(line, cells, user_id))
    if not body:
        problems.add(header_line, "a header but no rows")
    problems.check()
    return Table(path, header, id_index, records)


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


def _parse(reader, problems: Problems) -> list[tuple[int, list[str]]]:
    rows: list[tuple[int, list[str]]] = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return rows
        except csv.Error as exc:
            raise problems.fail(reader.line_num, f"not valid CSV ({exc})") from None
        if cells and any(cell.strip() for cell in cells):
            if sum(len(cell) for cell in cells) > MAX_LINE_BYTES:
                raise problems.fail(line, f"a row longer than {MAX_LINE_BYTES // 1024} KiB")
            rows.append((line, cells))


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


def tag_key(id_type: str, user_id: str, tags: Iterable[str], ttl: int | None) -> tuple:
    """A row's journal key: the same tags in another order are the same call."""
    return (id_type, user_id, tuple(sorted(tags)), ttl)


def tag_rows(
    table: Table, tags: tuple[str, ...], ttl: int | None, *, external: bool
) -> list[TagRow]:
    """Each record's tags and ttl, from the options or else the `tags`/`ttl` columns."""
    problems = Problems(table.path)
    tags_index = None if tags else table.column("tags")
    ttl_index = None if ttl is not None else table.column("ttl")
    if not tags and tags_index is None:
        raise problems.fail(1, "no tags column: give --tag or add a 'tags' column")
    rows = []
    for record in table.records:
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
            continue
        rows.append(TagRow(record.line, record.id, tuple(loaded["tags"]), loaded["ttl"], external))
    problems.check()
    return rows


def wallet_ids(table: Table) -> list[Record]:
    if table.external_ids:
        raise BadInput(
            f"{table.path}: the ids would come from column {table.id_name!r}, but wallets are "
            "fetched by SessionM user id (Connect takes no external id): name the user-id "
            "column with --id-column, e.g. --id-column user_id"
        )
    problems = Problems(table.path)
    for record in table.records:
        try:
            check_user_id(record.id)  # the wallet endpoint's own rule for ids
        except InvalidRequest as error:
            problems.add(record.line, f"{record.id[:64]!r}: {error.message}")
    problems.check()
    return table.records
