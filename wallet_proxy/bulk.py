"""Bulk work from a CSV of customers: `wallet-proxy tags import` and `wallet-proxy warm`.

Both read the same files (a Braze segment export or any CSV with a header), refuse a
malformed file before sending anything, pace themselves (`--rate`, `--concurrency`),
back off when SessionM pushes back, show progress, and end with a summary and an exit
code: 0 all done, 1 some rows failed, 2 nothing sent (bad file, options or settings),
130 interrupted.

`tags import` must tag each customer exactly once even if it is killed, because a tag
without `ttl` is a counter. It keeps a journal next to the file (FILE.journal), one
fsync'd JSON line per event, keyed by what is sent (id type, id, tags, ttl):

- `sending` is written, durably, before each call to SessionM;
- `accepted` after SessionM said yes; `not_applied` after an answer that says nothing
  was done (4xx, 429, 503, an error envelope).

A run skips `accepted` rows and sends `not_applied` and never-seen rows. A row left at
`sending` was in flight when a run died (or SessionM never answered): it may have been
applied. An expiring tag (`ttl`) is simply sent again, which only resets its expiry. A
counter tag is not re-sent blindly: it is reported as "outcome unknown" in
FILE.failed.csv, and the operator, after looking at the customer in SessionM, runs again
with `--unknown resend` or `--unknown mark-done`. For the same reason a counter tag is
not retried after a timeout or a 5xx other than 503; it is retried after 429 and 503.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import click

from .api import parse_query
from .config import CULTURE_RE, ConfigError, Settings
from .errors import (
    InvalidRequest,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UserNotFound,
    WalletProxyError,
)
from .sessionm import pooled_session
from .sessionm_core import CoreClient, maybe_applied
from .tags import MAX_TTL, TAG_RE, TAG_RULE, check_id, load_body

MAX_LINE_BYTES = 64 * 1024
MAX_PROBLEMS = 20
MAX_ATTEMPTS = 6
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
ID_COLUMNS = ("external_id", "user_id")
TAG_SEPARATORS = re.compile(r"[\s,;|]+")
# Transient failures worth another try: rate limits, 5xx, unreachable, timeouts.
TRANSIENT = (UpstreamServerError, UpstreamUnavailable, UpstreamTimeout)

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


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
    id_index = _id_index([cell.strip().lower() for cell in header], id_column, problems)
    records, first_seen = [], {}
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
    rows = []
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
        return ("external" if self.external else "user", self.id, self.tags, self.ttl)


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
        body: dict = {"tags": list(tags) or TAG_SEPARATORS.split(record.cells[tags_index].strip())}
        if ttl is not None:
            body["ttl"] = ttl
        elif ttl_index is not None and record.cells[ttl_index].strip():
            cell = record.cells[ttl_index].strip()
            body["ttl"] = int(cell) if cell.isascii() and cell.isdecimal() else cell
        try:
            check_id(record.id)
            loaded = load_body(body)
        except InvalidRequest as error:
            problems.add(record.line, error.message)
            continue
        rows.append(TagRow(record.line, record.id, tuple(loaded["tags"]), loaded["ttl"], external))
    problems.check()
    return rows


def wallet_ids(table: Table) -> list[Record]:
    problems = Problems(table.path)
    for record in table.records:
        try:
            parse_query(record.id, {})  # the wallet endpoint's own rule for ids
        except InvalidRequest as error:
            problems.add(record.line, f"{record.id[:64]!r}: {error.message}")
    problems.check()
    return table.records


# --- the journal ---------------------------------------------------------------------


SENDING, ACCEPTED, NOT_APPLIED = "sending", "accepted", "not_applied"
EVENTS = (SENDING, ACCEPTED, NOT_APPLIED)
FAILED, UNKNOWN = "failed", "unknown"  # row outcomes besides ACCEPTED


def read_journal(path: Path) -> tuple[dict[tuple, str], int]:
    """(last event per row key, bytes of whole lines): a torn last line is ignored."""
    states: dict[tuple, str] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return states, 0
    whole = data.rfind(b"\n") + 1
    for number, line in enumerate(data[:whole].split(b"\n")[:-1], 1):
        try:
            entry = json.loads(line)
            key = (entry["id_type"], entry["id"], tuple(entry["tags"]), entry["ttl"])
            if entry["event"] not in EVENTS:
                raise ValueError(entry["event"])
        except (ValueError, KeyError, TypeError):
            raise BadInput(
                f"{path} line {number} is not a journal record; the journal is damaged. "
                "Move it away only if you know which rows SessionM already has."
            ) from None
        states[key] = entry["event"]
    return states, whole


class Journal:
    """Append-only, one fsync'd line per event, locked against a second concurrent run.

    Workers share fsyncs (group commit): whoever syncs covers every line written so far,
    so concurrency doesn't turn into a queue of fsyncs.
    """

    def __init__(self, path: Path):
        self.path = path
        created = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise BadInput(f"another run is using {path}; wait for it to finish") from None
        try:
            self.states, whole = read_journal(path)
        except BadInput:
            os.close(self._fd)
            raise
        os.ftruncate(self._fd, whole)  # drop a line torn by a kill mid-write
        if created:
            _fsync_dir(path.parent)
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = self._synced = 0

    def record(self, event: str, row: TagRow) -> None:
        """Returns once the line is on disk."""
        id_type, user_id, tags, ttl = row.key
        line = json.dumps(
            {
                "event": event,
                "id_type": id_type,
                "id": user_id,
                "tags": list(tags),
                "ttl": ttl,
                "line": row.line,
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            },
            ensure_ascii=False,
        )
        with self._write_lock:
            os.write(self._fd, (line + "\n").encode())
            self._written += 1
            mine = self._written
            self.states[row.key] = event
        with self._sync_lock:
            if self._synced < mine:
                upto = self._written
                os.fsync(self._fd)
                self._synced = upto

    def close(self) -> None:
        os.close(self._fd)  # also releases the lock


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- pacing, retries, progress -------------------------------------------------------


class RateLimiter:
    """Call starts at least 1/`rate` apart, never a burst.

    A start is claimed when it happens, not booked ahead: a thread that wakes late can't
    leave a gap that the next ones then fill at once.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = clock()
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Block until this caller may start; False if `stop` was set meanwhile."""
        while not stop.is_set():
            with self._lock:
                now = self.clock()
                if now >= self._next:
                    self._next = now + self.interval
                    return True
                delay = self._next - now
            stop.wait(delay)
        return False

    def hold(self, seconds: float) -> None:
        """Nobody starts a call for `seconds` (SessionM asked us to wait)."""
        with self._lock:
            self._next = max(self._next, self.clock() + seconds)


def pause_before_retry(
    error: WalletProxyError, attempt: int, limiter: RateLimiter, stop: threading.Event
) -> bool:
    """Exponential backoff with jitter, at least SessionM's Retry-After (which then holds
    every worker, not just this one). False if stopped while waiting."""
    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
    if error.retry_after:
        delay = max(delay, float(error.retry_after))
        limiter.hold(delay)
    return not stop.wait(delay)


class Progress:
    """One line on stderr: redrawn in place on a terminal, printed every few seconds in logs."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.2 if self.tty else 5.0
        self.clock = clock
        self.started = self._drawn = clock()
        self.done = 0
        self._lock = threading.Lock()

    def advance(self) -> None:
        with self._lock:
            self.done += 1
            now = self.clock()
            if now - self._drawn >= self.every:
                self._drawn = now
                self._draw(now)

    def close(self) -> None:
        if not self.total:
            return
        with self._lock:
            self._draw(self.clock())
            if self.tty:
                self.stream.write("\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = _clock_time(left / rate) if rate > 0 else "--:--"
        percent = 100 * self.done // self.total if self.total else 100
        text = f"{self.label}: {self.done}/{self.total} ({percent}%) {rate:.1f}/s ETA {eta}"
        if self.tty:
            filled = 24 * self.done // self.total if self.total else 24
            text = f"[{'#' * filled}{'.' * (24 - filled)}] {text}"
        return text

    def _draw(self, now: float) -> None:
        if self.tty:
            self.stream.write(f"\r{self.line(now)}\x1b[K")
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()


def _clock_time(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def run_parallel(items: list, handle: Callable, concurrency: int, stop: threading.Event) -> None:
    """`handle(item)` for each item on `concurrency` threads, until done or `stop` is set.

    Ctrl-C and SIGTERM set `stop`: calls in flight finish and are journaled, so an
    interrupted run leaves nothing in doubt.
    """
    queue = iter(items)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while not stop.is_set():
            with lock:
                item = next(queue, None)
            if item is None:
                return
            try:
                handle(item)
            except BaseException as exc:  # a bug: stop everyone, report it in the main thread
                failures.append(exc)
                stop.set()

    threads = [
        threading.Thread(target=work, name=f"bulk-{n}", daemon=True) for n in range(concurrency)
    ]
    with _stop_on_signals(stop):
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    if failures:
        raise failures[0]


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def rate_option(default: float):
    return click.option(
        "--rate",
        default=default,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        help="SessionM calls started per second, at most.",
    )


def concurrency_option(default: int):
    return click.option(
        "--concurrency",
        default=default,
        show_default=True,
        type=click.IntRange(1, 64),
        help="SessionM calls in flight at once.",
    )


id_column_option = click.option(
    "--id-column",
    help="Column holding the ids (default: external_id, else user_id, else the first).",
)
file_argument = click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
)


def load_settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as error:
        raise BadInput(f"configuration error: {error}") from None


# --- tags import ---------------------------------------------------------------------


@dataclass
class ImportRun:
    """Counters and failures of one `tags import` run, shared by the workers."""

    done: int = 0
    marked: int = 0
    failed: list[tuple[TagRow, str]] = field(default_factory=list)
    unknown: list[tuple[TagRow, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, row: TagRow, reason: str = "") -> None:
        with self.lock:
            if outcome == ACCEPTED:
                self.done += 1
            elif outcome == UNKNOWN:
                self.unknown.append((row, reason))
            else:
                self.failed.append((row, reason))


@click.group("tags")
def tags_group() -> None:
    """SessionM customer tags in bulk."""


@tags_group.command("import")
@file_argument
@id_column_option
@click.option(
    "--id-type",
    type=click.Choice(["user", "external"]),
    default="user",
    show_default=True,
    help="SessionM user ids (Braze's ${user_id} on the partner page) or SessionM external ids.",
)
@click.option(
    "--tag", "tags", multiple=True, help="Tag for every row (repeatable); else the tags column."
)
@click.option(
    "--ttl",
    type=click.IntRange(1, MAX_TTL),
    help="Seconds the tags live; else the ttl column; neither: counter tags.",
)
@concurrency_option(4)
@rate_option(20.0)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.5, 120),
    help="Seconds to wait for each SessionM answer.",
)
@click.option(
    "--unknown",
    "unknown_policy",
    type=click.Choice(["report", "resend", "mark-done"]),
    default="report",
    show_default=True,
    help="Counter rows whose outcome is unknown: list them, send them again, or record "
    "them as done. Choose after checking those customers in SessionM.",
)
@click.option("--dry-run", is_flag=True, help="Validate and show what would be sent.")
def import_tags(
    file: Path,
    id_column: str | None,
    id_type: str,
    tags: tuple[str, ...],
    ttl: int | None,
    concurrency: int,
    rate: float,
    timeout: float,
    unknown_policy: str,
    dry_run: bool,
) -> None:
    """Tag every customer of FILE in SessionM, exactly once even across crashes.

    Progress is journaled in FILE.journal: run the same command again to finish an
    interrupted import. Rows that fail go to FILE.failed.csv with the reason.
    """
    for tag in tags:
        if not TAG_RE.match(tag):
            raise click.BadParameter(f"{tag!r} must be {TAG_RULE}", param_hint="--tag")
    table = read_table(file, id_column)
    rows = tag_rows(table, tags, ttl, external=id_type == "external")
    journal_file = sidecar(file, ".journal")
    if dry_run:
        _import_dry_run(table, rows, read_journal(journal_file)[0], id_type)
        return
    settings = load_settings()
    if not settings.core_configured:
        raise BadInput(
            "tags import needs SESSIONM_CORE_URL, SESSIONM_CORE_API_KEY and "
            "SESSIONM_CORE_API_SECRET"
        )
    client = CoreClient(
        settings.sessionm_core_url,
        settings.sessionm_core_api_key,
        settings.sessionm_core_api_secret,
        session=pooled_session(concurrency),
        connect_timeout=min(3.0, timeout),
        read_timeout=timeout,
    )
    started = time.monotonic()
    journal = Journal(journal_file)
    run = ImportRun()
    stop = threading.Event()
    try:
        to_send, skipped = [], 0
        for row in rows:
            state = journal.states.get(row.key)
            if state == ACCEPTED:
                skipped += 1
            elif state == SENDING and row.ttl is None and unknown_policy == "report":
                run.add(UNKNOWN, row, "sent by an earlier run that never learnt the outcome")
            elif state == SENDING and row.ttl is None and unknown_policy == "mark-done":
                journal.record(ACCEPTED, row)
                run.marked += 1
            else:
                to_send.append(row)
        if skipped:
            click.echo(f"skipping {skipped} rows already done ({journal_file})", err=True)
        limiter = RateLimiter(rate)
        progress = Progress("tags import", len(to_send))

        def handle(row: TagRow) -> None:
            outcome, reason = _send_row(row, client, journal, limiter, stop, timeout)
            if outcome is not None:
                run.add(outcome, row, reason)
                progress.advance()

        run_parallel(to_send, handle, concurrency, stop)
        progress.close()
    finally:
        journal.close()
    _write_failed(file, table.id_name, run)
    interrupted = progress.done < len(to_send)
    click.echo(_import_summary(run, skipped, time.monotonic() - started), err=True)
    _explain_and_exit(file, run, interrupted)


def _send_row(
    row: TagRow,
    client: CoreClient,
    journal: Journal,
    limiter: RateLimiter,
    stop: threading.Event,
    timeout: float,
) -> tuple[str | None, str]:
    """(outcome, reason); outcome None when stopped before SessionM said anything."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if not limiter.wait(stop):
            return None, ""
        journal.record(SENDING, row)
        try:
            client.add_tags(
                row.id,
                list(row.tags),
                row.ttl,
                external=row.external,
                deadline=time.monotonic() + timeout,
            )
        except WalletProxyError as error:
            if not maybe_applied(error):
                journal.record(NOT_APPLIED, row)
            elif row.ttl is None:
                return UNKNOWN, error.message
            if not isinstance(error, TRANSIENT) or attempt == MAX_ATTEMPTS:
                return FAILED, error.message
            if not pause_before_retry(error, attempt, limiter, stop):
                return None, ""
            continue
        journal.record(ACCEPTED, row)
        return ACCEPTED, ""
    raise AssertionError("unreachable")


def _import_dry_run(
    table: Table, rows: list[TagRow], states: dict[tuple, str], id_type: str
) -> None:
    done = sum(states.get(row.key) == ACCEPTED for row in rows)
    unknown = sum(states.get(row.key) == SENDING and row.ttl is None for row in rows)
    users = "external/users" if id_type == "external" else "users"
    click.echo(
        f"{table.path} is valid: {len(rows)} rows, ids from column {table.id_name!r} "
        f"as SessionM {id_type} ids."
    )
    click.echo(f"Already done (journal): {done}; outcome unknown: {unknown}.")
    click.echo(
        f"Would send {len(rows) - done - unknown} calls: "
        f"POST $SESSIONM_CORE_URL/priv/v1/apps/<core key>/{users}/<id>/tags, e.g.:"
    )
    for row in [row for row in rows if states.get(row.key) is None][:5]:
        body = {"tags": list(row.tags), **({"ttl": row.ttl} if row.ttl is not None else {})}
        kind = "counter" if row.ttl is None else f"expires after {row.ttl} s"
        click.echo(f"  line {row.line}: {row.id} {json.dumps(body)} ({kind})")
    click.echo("Nothing was sent (dry run).")


def _write_failed(file: Path, id_name: str, run: ImportRun) -> None:
    """FILE.failed.csv lists this run's failures; it is itself importable once fixed."""
    target = sidecar(file, ".failed.csv")
    failures = sorted(
        [(row, reason) for row, reason in run.failed]
        + [(row, f"outcome unknown: {reason}") for row, reason in run.unknown],
        key=lambda item: item[0].line,
    )
    if not failures:
        target.unlink(missing_ok=True)
        return
    scratch = sidecar(file, ".failed.csv.tmp")
    with scratch.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([id_name, "tags", "ttl", "line", "reason"])
        for row, reason in failures:
            ttl = "" if row.ttl is None else row.ttl
            writer.writerow([row.id, ";".join(row.tags), ttl, row.line, reason])
    scratch.replace(target)


def _import_summary(run: ImportRun, skipped: int, seconds: float) -> str:
    parts = [
        f"done {run.done}",
        f"skipped {skipped}",
        f"failed {len(run.failed)}",
        f"unknown {len(run.unknown)}",
    ]
    if run.marked:
        parts.append(f"marked done {run.marked}")
    rate = run.done / seconds if seconds > 0 else 0.0
    return f"tags import: {', '.join(parts)} in {seconds:.1f} s ({rate:.1f} rows/s)"


def _explain_and_exit(file: Path, run: ImportRun, interrupted: bool) -> None:
    failed_file = sidecar(file, ".failed.csv")
    if run.unknown:
        click.echo(
            f"{len(run.unknown)} counter rows may or may not have reached SessionM "
            f"(listed in {failed_file}). Check those customers' tags in SessionM, then run "
            "again with --unknown resend (not applied) or --unknown mark-done (applied).",
            err=True,
        )
    if run.failed:
        click.echo(f"{len(run.failed)} rows failed; reasons in {failed_file}.", err=True)
    if interrupted:
        click.echo("Interrupted: run the same command again to do the rest.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if run.failed or run.unknown:
        sys.exit(EXIT_FAILED)


# --- warm ----------------------------------------------------------------------------


@click.command("warm")
@file_argument
@id_column_option
@click.option("--culture", help="Culture of the offer texts (default: the service's).")
@concurrency_option(8)
@rate_option(50.0)
@click.option("--dry-run", is_flag=True, help="Validate and show what would be fetched.")
def warm_command(
    file: Path,
    id_column: str | None,
    culture: str | None,
    concurrency: int,
    rate: float,
    dry_run: bool,
) -> None:
    """Fetch each wallet of FILE from SessionM into the shared cache, before a send.

    Run it minutes before a Connected Content campaign: Braze's burst is then served
    from Redis instead of becoming a burst on SessionM.
    """
    if culture is not None and not CULTURE_RE.match(culture):
        raise click.BadParameter("must look like en, en-US, es-419", param_hint="--culture")
    records = wallet_ids(read_table(file, id_column))
    if dry_run:
        click.echo(
            f"{file} is valid: {len(records)} user ids. Would fetch each wallet "
            f"(culture {culture or 'default'}) into the shared cache. Nothing was fetched."
        )
        return
    settings = load_settings()
    if not settings.redis_url:
        raise BadInput(
            "warm needs WALLET_PROXY_REDIS_URL: without the shared cache the wallets "
            "would only land in this command's memory"
        )
    from . import create_app

    service = create_app().extensions["wallet_service"]
    culture = culture or settings.default_culture
    started = time.monotonic()
    counts = {"warmed": 0, "not found": 0, "failed": 0}
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    limiter = RateLimiter(rate)
    progress = Progress("warm", len(records))

    def handle(record: Record) -> None:
        outcome, reason = _warm_one(service, record.id, culture, limiter, stop)
        if outcome is None:
            return
        with lock:
            counts[outcome] += 1
            if reason:
                failures.append(f"line {record.line}: {record.id}: {reason}")
        progress.advance()

    run_parallel(records, handle, concurrency, stop)
    progress.close()
    seconds = time.monotonic() - started
    summary = ", ".join(f"{name} {count}" for name, count in counts.items())
    click.echo(f"warm: {summary} in {seconds:.1f} s ({progress.done / seconds:.1f}/s)", err=True)
    for failure in sorted(failures)[:MAX_PROBLEMS]:
        click.echo(f"  {failure}", err=True)
    if progress.done < len(records):
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if counts["failed"]:
        sys.exit(EXIT_FAILED)


def _warm_one(service, user_id: str, culture: str, limiter: RateLimiter, stop) -> tuple:
    """(outcome, reason); every fetch is safe to repeat, so every transient error is retried."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if not limiter.wait(stop):
            return None, ""
        try:
            lookup = service.lookup(user_id, culture, refresh=True)
            if not lookup.stale:
                return "warmed", ""
            error: WalletProxyError = UpstreamUnavailable(
                "SessionM did not answer; only a stale copy is cached."
            )
        except UserNotFound:
            return "not found", ""
        except WalletProxyError as exc:
            error = exc
        if not isinstance(error, TRANSIENT) or attempt == MAX_ATTEMPTS:
            return "failed", error.message
        if not pause_before_retry(error, attempt, limiter, stop):
            return None, ""
    raise AssertionError("unreachable")
