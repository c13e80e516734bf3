"""`wallet-proxy attributes sync FILE`: each customer's loyalty attributes in their Braze profile.

For each row of a Braze export (`external_id`, and the SessionM user id under `user_id`
when the two differ, else the external id serves both) the wallet comes through the wallet
service: the cache first (with WALLET_PROXY_REDIS_URL the shared one, so a customer `warm`
left fresh costs no SessionM call), else SessionM at the budget's bulk share. Its
attributes (attributes/values.py) are compared with what was last written to that profile
(attributes/written.py), and only what changed goes to Braze, in `/users/track` requests
of WALLET_PROXY_BRAZE_TRACK_BATCH objects started at most WALLET_PROXY_BRAZE_TRACK_RATE a
second. The rows are checked, then kept in the run's Scratch (scratch.py) with their
journal states, and read back as they are sent: what is held at once is a batch per
worker, whatever the file's length.

A request Braze did not take goes again, as writing the same values twice only
overwrites them: after a 429 once Braze's window resets (Retry-After, else
X-RateLimit-Reset), holding every worker; after a 5xx, a refused connection or an answer
that never came, with exponential backoff and jitter; after a 400, one object at a time,
so one bad profile fails alone. An answer saying no request is left before the reset
holds every worker until then. A refused key or URL (401, 403, 404) stops the run.

Resumable: FILE.sync.journal (journal.py) gets a line for each customer whose
attributes Braze took, who had nothing new, or whom SessionM doesn't know; a rerun after
an interruption (Ctrl-C, SIGTERM, kill -9) skips them and does the rest, and a customer
whose request was in flight is simply sent again. A run that went through the whole file
removes its journal, so the next scheduled run starts afresh. Rows that failed go to
FILE.sync.failed.csv with the reason (a file this command reads again).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import click

from ..attributes.track import TrackClient, Tracked, attribute_object
from ..attributes.values import Attributes, attributes_of, changed, loyalty_of
from ..attributes.written import SYNC, Written, WrittenStore, WrittenStoreError, written_store
from ..braze_rest import (
    WRONG_SETUP,
    BrazeFailure,
    BrazeNotProcessed,
    BrazeOutcomeUnknown,
    BrazeRejected,
    RateLimit,
)
from ..braze_users import EXTERNAL_ID, BrazeUser
from ..budget import Priority, paced_rate
from ..config import BRAZE_TRACK, CONNECT, Settings
from ..container import build_services
from ..errors import InvalidRequest, UserNotFound, WalletProxyError
from ..rules import check_braze_user, check_user_id
from ..wallet import Wallet
from ..wallet_service import WalletService
from .commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    concurrency_option,
    file_argument,
    load_settings,
    rate_option,
    sidecar,
)
from .csvinput import (
    EXTERNAL_ID_COLUMN,
    BadInput,
    Problems,
    Record,
    Table,
    key_text,
    read_table,
    records,
    tag_key,
)
from .durations import spoken
from .formulas import FAILED_FILE_LAST_COLUMNS, inert
from .journal import ACCEPTED, Journal, read_journal
from .runner import (
    MAX_ATTEMPTS,
    TRANSIENT,
    Progress,
    RateLimiter,
    pause_before_retry,
    run_parallel,
)
from .scratch import Scratch
from .sidecars import check_replaceable, replace_with

JOURNAL, FAILED_FILE = ".sync.journal", ".sync.failed.csv"
USER_ID_COLUMN = "user_id"  # SessionM user ids, as `warm` reads them
RATE_OPTION = 50.0  # --rate's default: SessionM calls started per second, at most
SHOWN = 5  # rows a dry run shows


class Stopped(Exception):
    """The run was stopped (a signal, or an abort) while this row waited."""


@dataclass(frozen=True, slots=True)
class SyncRow:
    """One customer: their Braze profile (by external id) and their SessionM user id."""

    line: int
    user: BrazeUser
    sessionm_user_id: str

    @property
    def key(self) -> tuple:
        """What the journal remembers of the row: the profile."""
        return tag_key(EXTERNAL_ID, self.user.id, (), None)


@dataclass(frozen=True)
class SyncFile:
    """A checked file: where the ids are, how many rows it has, and the run's Scratch that
    keeps them."""

    table: Table
    user_index: int | None  # the SessionM user-id column; None: the external id serves both
    count: int
    scratch: Scratch

    @property
    def user_column(self) -> str:
        return self.table.header[self.user_index] if self.user_index is not None else ""

    def rows(self) -> Iterator[tuple[SyncRow, str | None]]:
        """The rows in line order, read back as they are sent, each with the last event of
        its profile in the journal."""
        for (line, external_id, user_id, _, _), state in self.scratch.rows():
            user = check_braze_user(EXTERNAL_ID, external_id)  # checked: it passes
            yield SyncRow(line, user, user_id or external_id), state


def _row(record: Record, id_index: int, user_index: int | None) -> SyncRow:
    """InvalidRequest when an id breaks its column's rule."""
    external_id = record.cells[id_index].strip()
    user = check_braze_user(EXTERNAL_ID, external_id)
    user_id = external_id if user_index is None else record.cells[user_index].strip()
    try:
        check_user_id(user_id)
    except InvalidRequest as error:
        raise InvalidRequest(f"{user_id[:64]!r}: {error.message}") from None
    return SyncRow(record.line, user, user_id)


def sync_file(
    path: Path, id_column: str | None, user_id_column: str | None, scratch: Scratch
) -> SyncFile:
    """The file, checked whole before anything is sent (every bad id listed at once), its
    rows kept in `scratch`."""
    table = read_table(path, id_column or EXTERNAL_ID_COLUMN)
    wanted = user_id_column or USER_ID_COLUMN
    user_index = table.column(wanted.strip().lower())
    if user_index is None and user_id_column is not None:
        names = ", ".join(table.header)
        raise BadInput(f"{path}: no column named {user_id_column!r} (columns: {names})")
    if user_index == table.id_index:
        user_index = None
    problems = Problems(path)

    def checked(record: Record) -> tuple[int, str, str | None, None, str]:
        try:
            row = _row(record, table.id_index, user_index)
        except InvalidRequest as error:
            problems.add(record.line, error.message)
            return record.line, "", None, None, ""
        user_id = None if user_index is None else row.sessionm_user_id
        return row.line, row.user.id, user_id, None, key_text(row.key)

    count = scratch.add_rows(map(checked, records(table, problems)))
    problems.check()
    return SyncFile(table, user_index, count, scratch)


# --- one run -------------------------------------------------------------------------


@dataclass
class SyncRun:
    """Counters of one run, shared by the workers."""

    written: int = 0  # customers whose changes Braze took
    attributes: int = 0  # attributes Braze took: the data points billed
    requests: int = 0  # /users/track requests Braze took
    unchanged: int = 0
    not_found: int = 0  # SessionM doesn't know the customer
    failed: int = 0
    skipped: int = 0  # done by an interrupted run (the journal)
    from_cache: int = 0
    from_sessionm: int = 0
    aborted: str = ""  # why the run stopped before the end, when it did
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, **amounts: int) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def summary(self, seconds: float) -> str:
        return (
            f"attributes sync: written {self.written} ({self.attributes} attributes in "
            f"{self.requests} requests), unchanged {self.unchanged}, not in SessionM "
            f"{self.not_found}, failed {self.failed}, skipped (done before) {self.skipped}; "
            f"wallets from the cache {self.from_cache}, from SessionM {self.from_sessionm}; "
            f"in {seconds:.1f} s"
        )


@dataclass(frozen=True, slots=True)
class Pending:
    """A customer waiting for a request: what changed, and every attribute after it."""

    row: SyncRow
    changes: Attributes
    attributes: Attributes


class Failures:
    """Failed rows, spooled to an unnamed file as they come (memory stays flat), then
    written to FILE.sync.failed.csv at the end. A run killed meanwhile leaves no spool."""

    def __init__(self, spool: TextIO):
        self.count = 0
        self._lock = threading.Lock()
        self._spool = spool
        self._writer = csv.writer(spool)

    def add(self, row: SyncRow, reason: str) -> None:
        with self._lock:
            self._writer.writerow([row.user.id, row.sessionm_user_id, row.line, reason])
            self.count += 1

    def write(self, target: Path, sync: SyncFile) -> None:
        """FILE.sync.failed.csv with this run's failures, in the file's own columns; none:
        an older one is removed."""
        with self._lock:
            self._spool.seek(0)
            rows = csv.reader(self._spool)
            if not self.count:
                target.unlink(missing_ok=True)
            else:
                replace_with(target, lambda handle: self._copy(handle, rows, sync))

    @staticmethod
    def _copy(handle: TextIO, rows: Iterator[list[str]], sync: SyncFile) -> None:
        writer = csv.writer(handle)
        columns = [sync.table.id_name] + ([sync.user_column] if sync.user_column else [])
        writer.writerow(inert([*columns, *FAILED_FILE_LAST_COLUMNS]))
        for external_id, user_id, line, reason in rows:
            ids = [external_id] + ([user_id] if sync.user_column else [])
            writer.writerow(inert([*ids, line, reason]))


class Batches:
    """Customers waiting for a request: a full batch goes to the worker that completed it."""

    def __init__(self, size: int):
        self.size = size
        self._pending: list[Pending] = []
        self._lock = threading.Lock()

    def add(self, pending: Pending) -> list[Pending] | None:
        with self._lock:
            self._pending.append(pending)
            if len(self._pending) < self.size:
                return None
            batch, self._pending = self._pending, []
            return batch

    def rest(self) -> list[Pending]:
        with self._lock:
            batch, self._pending = self._pending, []
            return batch


class Sync:
    """One run over a file's rows: `handle` each on a worker, then `finish`."""

    def __init__(
        self,
        *,
        service: WalletService,
        culture: str,
        store: WrittenStore,
        client: TrackClient,
        journal: Journal,
        failures: Failures,
        progress: Progress,
        batch_size: int,
        track_rate: float,
        sessionm_rate: float,
        full: bool,
        stamp: bool,
        stop: threading.Event,
    ):
        self.service = service
        self.culture = culture
        self.store = store
        self.client = client
        self.journal = journal
        self.failures = failures
        self.progress = progress
        self.batches = Batches(batch_size)
        self.braze = RateLimiter(track_rate or math.inf)  # 0: Braze's own limits alone
        self.sessionm = RateLimiter(sessionm_rate)
        self.full = full
        self.stamp = stamp
        self.stop = stop
        self.run = SyncRun()

    def handle(self, row_and_state: tuple[SyncRow, str | None]) -> None:
        row, state = row_and_state
        if state == ACCEPTED:
            self._done(row, skipped=1)
            return
        try:
            wallet = self._wallet(row.sessionm_user_id)
        except Stopped:
            return
        except UserNotFound:
            self._done(row, not_found=1)
            return
        except WalletProxyError as error:
            self._fail([row], error.message)
            return
        stamp = wallet.fetched_at if self.stamp else None
        attributes = attributes_of(loyalty_of(wallet, self.service.clock()), synced_at=stamp)
        try:
            last = self.store.get(row.user)
        except WrittenStoreError as error:
            self._abort(f"the store of what was written to Braze failed ({error})")
            return
        changes = changed(attributes, None if self.full or last is None else last.attributes)
        if not changes:
            self._done(row, unchanged=1)
            return
        batch = self.batches.add(Pending(row, changes, attributes))
        if batch is not None:
            self.send(batch)

    def finish(self) -> None:
        """Send what waits for a batch to fill, unless the run was stopped."""
        rest = self.batches.rest()
        if rest and not self.stop.is_set():
            self.send(rest)

    def _wallet(self, user_id: str) -> Wallet:
        """A fresh cached copy, else SessionM at the bulk share; transient failures retried."""
        hit = self.service.hit(user_id, self.culture)
        if hit is not None:
            self.run.count(from_cache=1)
            return hit.wallet
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not self.sessionm.wait(self.stop):
                raise Stopped()
            try:
                lookup = self.service.lookup(user_id, self.culture, priority=Priority.BULK)
            except UserNotFound:
                raise
            except WalletProxyError as error:
                if not isinstance(error, TRANSIENT) or attempt == MAX_ATTEMPTS:
                    raise
                if not pause_before_retry(error, attempt, self.sessionm, self.stop):
                    raise Stopped() from None
                continue
            self.run.count(from_sessionm=1)
            return lookup.wallet
        raise AssertionError("unreachable")

    def send(self, batch: list[Pending]) -> None:
        """One request until Braze takes it, the run stops, or retries run out."""
        objects = [attribute_object(p.row.user, p.changes) for p in batch]
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not self.braze.wait(self.stop):
                return  # not journaled: a rerun sends them
            failure: BrazeFailure
            try:
                tracked = self.client.track(objects)
            except BrazeNotProcessed as refused:
                if refused.status in WRONG_SETUP or 300 <= (refused.status or 0) < 400:
                    self._abort(f"{refused.reason}: check BRAZE_REST_URL and BRAZE_TRACK_API_KEY")
                    return
                failure = refused
            except BrazeOutcomeUnknown as unknown:
                failure = unknown  # the same values again only overwrite them
            except BrazeRejected as rejected:
                self._note(rejected.rate)
                if len(batch) > 1:
                    for pending in batch:
                        self.send([pending])
                else:
                    self._fail([p.row for p in batch], rejected.reason)
                return
            else:
                self._note(tracked.rate)
                self._written(batch, tracked)
                return
            self._note(failure.rate)
            if attempt == MAX_ATTEMPTS:
                self._fail([p.row for p in batch], failure.reason)
                return
            if not pause_before_retry(failure, attempt, self.braze, self.stop):
                return

    def _note(self, rate: RateLimit) -> None:
        """No request left before Braze's reset: nobody sends until then."""
        now = time.time()
        until = rate.exhausted_until(now)
        if until is not None:
            self.braze.hold(until - now)

    def _written(self, batch: list[Pending], tracked: Tracked) -> None:
        taken = [p for index, p in enumerate(batch) if index not in tracked.refused]
        at = self.service.clock().timestamp()
        writes = [
            Written(p.row.user, p.row.sessionm_user_id, p.attributes, at, SYNC) for p in taken
        ]
        try:
            self.store.put_many(writes)
        except WrittenStoreError as error:
            self._abort(f"the store of what was written to Braze failed ({error})")
            return
        self.run.count(
            requests=1, written=len(taken), attributes=sum(len(p.changes) for p in taken)
        )
        for pending in taken:
            self.journal.record(ACCEPTED, pending.row)
            self.progress.advance()
        for index, reason in tracked.refused.items():
            self._fail([batch[index].row], f"Braze: {reason}")

    def _done(self, row: SyncRow, **outcome: int) -> None:
        if "skipped" not in outcome:
            self.journal.record(ACCEPTED, row)
        self.run.count(**outcome)
        self.progress.advance()

    def _fail(self, rows: list[SyncRow], reason: str) -> None:
        for row in rows:
            self.failures.add(row, reason)
            self.progress.advance()
        self.run.count(failed=len(rows))

    def _abort(self, reason: str) -> None:
        with self.run.lock:
            self.run.aborted = self.run.aborted or reason
        self.stop.set()


# --- the command ---------------------------------------------------------------------


@click.group("attributes")
def attributes_group() -> None:
    """SessionM loyalty data in Braze profiles."""


@attributes_group.command("sync")
@file_argument
@click.option(
    "--id-column",
    help="Column of the Braze external ids  [default: external_id]",
)
@click.option(
    "--user-id-column",
    help="Column of the SessionM user ids  [default: user_id if there is one, else the "
    "external ids are the SessionM user ids too]",
)
@click.option("--full", is_flag=True, help="Send every attribute, not only what changed.")
@click.option(
    "--stamp",
    is_flag=True,
    help="Also send sessionm_synced_at, when SessionM gave the wallet (a data point each).",
)
@concurrency_option(8)
@rate_option(RATE_OPTION)
@click.option("--dry-run", is_flag=True, help="Validate and say what would be done.")
def sync_command(
    file: Path,
    id_column: str | None,
    user_id_column: str | None,
    full: bool,
    stamp: bool,
    concurrency: int,
    rate: float,
    dry_run: bool,
) -> None:
    """Write each customer's SessionM points and offers to their Braze profile as custom
    attributes, sending only what changed since the last write.

    Progress is journaled in FILE.sync.journal: run the same command again to finish an
    interrupted sync. Rows that fail go to FILE.sync.failed.csv with the reason.
    """
    with Scratch() as scratch:
        sync = sync_file(file, id_column, user_id_column, scratch)
        journal_file = sidecar(file, JOURNAL)
        if dry_run:
            read_journal(journal_file, scratch)
            _dry_run(sync, load_settings(), full, stamp)
            return
        settings = load_settings(CONNECT, BRAZE_TRACK)
        assert settings.braze_rest_url and settings.track_api_key, "BRAZE_TRACK requires them"
        check_replaceable(sidecar(file, FAILED_FILE))
        started = time.monotonic()
        with contextlib.ExitStack() as closing:
            services = build_services(settings, lambda: datetime.now(UTC))
            closing.callback(services.close)
            try:
                store = written_store(services.redis, settings.data_dir, services.unix_time)
            except WrittenStoreError as error:
                raise BadInput(
                    f"WALLET_PROXY_DATA_DIR: can't keep what is written to Braze there ({error})"
                ) from None
            client = TrackClient(
                settings.braze_rest_url, settings.track_api_key, pool_size=concurrency
            )
            closing.callback(client.close)
            journal = Journal(journal_file, scratch)
            closing.callback(journal.close)  # after the unlink below: the lock is held till then
            spool = closing.enter_context(
                tempfile.TemporaryFile("w+", newline="", encoding="utf-8", dir=file.parent)
            )
            failures = Failures(spool)
            stop = threading.Event()
            worker = Sync(
                service=services.wallet_service,
                culture=settings.default_culture,
                store=store,
                client=client,
                journal=journal,
                failures=failures,
                progress=Progress("attributes sync", sync.count),
                batch_size=settings.braze_track_batch,
                track_rate=settings.braze_track_rate,
                sessionm_rate=_sessionm_rate(settings, rate),
                full=full,
                stamp=stamp,
                stop=stop,
            )
            run_parallel(sync.rows(), worker.handle, concurrency, stop)
            worker.finish()
            worker.progress.close()
            complete = worker.progress.done == sync.count
            if complete:  # the next run starts afresh
                journal_file.unlink(missing_ok=True)
            _write_failures(failures, sidecar(file, FAILED_FILE), sync)
        click.echo(worker.run.summary(time.monotonic() - started), err=True)
        _explain_and_exit(file, worker.run, complete)


def _sessionm_rate(settings: Settings, rate: float) -> float:
    """`--rate`, within what the budget lets bulk work have (as `plan` counts it)."""
    if settings.sessionm_rate:
        return min(rate, paced_rate(settings.sessionm_rate) * settings.bulk_share)
    return rate


def _write_failures(failures: Failures, target: Path, sync: SyncFile) -> None:
    try:
        failures.write(target, sync)
    except OSError as error:
        raise click.ClickException(f"could not write {target}: {error.strerror}") from None


def _explain_and_exit(file: Path, run: SyncRun, complete: bool) -> None:
    if run.failed:
        click.echo(f"{run.failed} rows failed; reasons in {sidecar(file, FAILED_FILE)}.", err=True)
    if run.aborted:
        raise click.ClickException(
            f"stopped: {run.aborted}. Run the same command again to do the rest."
        )
    if not complete:
        click.echo("Interrupted: run the same command again to do the rest.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if run.failed:
        sys.exit(EXIT_FAILED)


def _dry_run(sync: SyncFile, settings: Settings, full: bool, stamp: bool) -> None:
    rows = [row for row, _ in itertools.islice(sync.rows(), SHOWN)]
    done = sum(state == ACCEPTED for _, state in sync.rows())
    left = sync.count - done
    users = (
        f"SessionM user ids from column {sync.user_column!r}"
        if sync.user_column
        else "the external ids are the SessionM user ids too (--user-id-column to name another)"
    )
    requests = math.ceil(left / settings.braze_track_batch)
    rate = settings.braze_track_rate
    pace = f", started at most {rate:g}/s" if rate else ""
    if rate and requests / rate >= 1:
        pace += f" (at least {spoken(requests / rate)})"
    click.echo(
        f"{sync.table.path} is valid: {sync.count} rows, Braze external ids from column "
        f"{sync.table.id_name!r}, {users}."
    )
    click.echo(f"Already done (journal): {done}.")
    what = "every attribute" if full else "only the attributes that changed"
    click.echo(
        f"Would read {left} wallets (the cache first, else SessionM) and send {what}"
        f"{' and sessionm_synced_at' if stamp else ''} to Braze's /users/track: at most "
        f"{requests} requests of {settings.braze_track_batch}{pace}. For example:"
    )
    for row in rows:
        click.echo(f"  line {row.line}: {row.user.id} <- SessionM user {row.sessionm_user_id}")
    click.echo("Nothing was read or sent (dry run).")
