"""Bulk work from a CSV of customers: `wallet-proxy tags import` and `wallet-proxy warm`.

Both read the same files (a Braze segment export or any CSV with a header), refuse a
malformed file before sending anything, take the bulk share of the fleet's SessionM
budget (budget.py) and pace themselves further (`--rate`, `--concurrency`), back off
when SessionM pushes back, show progress, and end with a summary and an exit
code: 0 all done, 1 some rows failed, 2 nothing sent (bad file, options or settings),
130 interrupted.

`tags import` must tag each customer exactly once even if it is killed, because a tag
without `ttl` is a counter. It keeps a journal next to the file (FILE.journal), one
fsync'd JSON line per event, keyed by what is sent (id type, id, tags in any order, ttl):

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

import csv
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import click

from ..budget import Budget, Claim, Priority, paced_rate
from ..config import CONNECT, CORE, SHARED_CACHE, ConfigError, Part, Settings
from ..container import build_services, sessionm_budgets, shared_redis
from ..errors import UserNotFound, WalletProxyError
from ..rules import CULTURE_RULE, MAX_TTL, TAG_RE, TAG_RULE, canonical_culture
from ..sessionm_core import CoreClient, core_client, maybe_applied
from ..wallet_service import BULK_PATIENCE, WalletService
from .csvinput import (
    BadInput,
    FirstLines,
    Table,
    TagRow,
    read_table,
    tag_rows,
    wallet_ids,
)
from .durations import Duration, spoken
from .formulas import FAILED_FILE_LAST_COLUMNS, inert
from .journal import ACCEPTED, NOT_APPLIED, SENDING, Journal, read_journal
from .runner import (
    MAX_ATTEMPTS,
    TRANSIENT,
    Progress,
    RateLimiter,
    pause_before_retry,
    run_parallel,
)
from .scratch import Row, Scratch
from .sidecars import check_replaceable, replace_with

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
MIN_FRESH_FOR, MAX_FRESH_FOR = 60.0, 4 * 3600.0
WARM_SKIP = 0.9  # warm skips a wallet already fresh for this share of --fresh-for
FAILED, UNKNOWN = "failed", "unknown"  # row outcomes besides ACCEPTED
SKIP, MARK, SEND = "skip", "mark", "send"  # what a run does with a row, besides UNKNOWN
DRY_RUN_EXAMPLES = 5


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


def load_settings(*needs: Part) -> Settings:
    """The settings a command uses: `needs` are the parts it can't run without."""
    try:
        return Settings.from_env(os.environ, needs)
    except ConfigError as error:
        raise BadInput(error.report()) from None


# --- tags import ---------------------------------------------------------------------


@dataclass
class ImportRun:
    """Counters of one `tags import` run, shared by the workers; the failed rows themselves
    are in the run's Scratch."""

    scratch: Scratch
    done: int = 0
    marked: int = 0
    failed: int = 0
    unknown: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, row: TagRow, reason: str = "") -> None:
        with self.lock:
            if outcome == ACCEPTED:
                self.done += 1
                return
            if outcome == UNKNOWN:
                self.unknown += 1
            else:
                self.failed += 1
        self.scratch.fail(row.line, reason, unknown=outcome == UNKNOWN)


def _planned(scratch: Scratch, unknown_policy: str) -> Iterator[tuple[str, Row]]:
    """What the run does with each row of the file, in line order, by the last event of its
    key in the journal: SKIP, UNKNOWN (report it), MARK (as done) or SEND."""
    for row, state in scratch.rows():
        _, _, _, ttl, _ = row
        if state == ACCEPTED:
            yield SKIP, row
        elif state == SENDING and ttl is None and unknown_policy == "report":
            yield UNKNOWN, row
        elif state == SENDING and ttl is None and unknown_policy == "mark-done":
            yield MARK, row
        else:
            yield SEND, row


@click.group("tags")
def tags_group() -> None:
    """SessionM customer tags: in bulk from a CSV, and the queued webhooks' tags."""


@tags_group.command("import")
@file_argument
@id_column_option
@click.option(
    "--id-type",
    type=click.Choice(["user", "external"]),
    help="SessionM user ids (Braze's ${user_id} on the partner page) or SessionM external "
    "ids  [default: external for a column named external_id, else user]",
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
    id_type: str | None,
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
    with Scratch() as scratch:
        table = read_table(file, id_column)
        id_type = id_type or ("external" if table.external_ids else "user")
        external = id_type == "external"
        count = tag_rows(table, tags, ttl, external=external, scratch=scratch)
        journal_file = sidecar(file, ".journal")
        if dry_run:
            read_journal(journal_file, scratch)
            _import_dry_run(table, count, scratch, id_type)
            return
        settings = load_settings(CORE)
        _, budget = sessionm_budgets(settings, *shared_redis(settings), closers=[])
        client = core_client(
            settings,
            budget,
            pool_size=concurrency,
            connect_timeout=min(3.0, timeout),
            read_timeout=timeout,
        )
        assert client is not None, "load_settings(CORE) requires every Core setting"
        check_replaceable(sidecar(file, ".failed.csv"))
        started = time.monotonic()
        journal = Journal(journal_file, scratch)
        run = ImportRun(scratch)
        stop = threading.Event()
        try:
            to_send, skipped = 0, 0
            for todo, kept in _planned(scratch, unknown_policy):
                if todo == SKIP:
                    skipped += 1
                elif todo == SEND:
                    to_send += 1
                elif todo == UNKNOWN:
                    row = TagRow.kept(kept, external=external)
                    run.add(UNKNOWN, row, "sent by an earlier run that never learnt the outcome")
                else:
                    journal.record(ACCEPTED, TagRow.kept(kept, external=external))
                    run.marked += 1
            if skipped:
                click.echo(f"skipping {skipped} rows already done ({journal_file})", err=True)
            limiter = RateLimiter(rate)
            progress = Progress("tags import", to_send)

            def handle(row: TagRow) -> None:
                outcome, reason = _send_row(row, client, budget, journal, limiter, stop, timeout)
                if outcome is not None:
                    run.add(outcome, row, reason)
                    progress.advance()

            # What to send is read again, as the rows were when the run began (a row
            # marked done above is still "sending" in the run's Scratch: MARK, not SEND).
            sending = (
                TagRow.kept(kept, external=external)
                for todo, kept in _planned(scratch, unknown_policy)
                if todo == SEND
            )
            run_parallel(sending, handle, concurrency, stop)
            progress.close()
        finally:
            journal.close()
        _write_failed(file, table.id_name, run)
    interrupted = progress.done < to_send
    click.echo(_import_summary(run, skipped, time.monotonic() - started), err=True)
    _explain_and_exit(file, run, interrupted)


def _send_row(
    row: TagRow,
    client: CoreClient,
    budget: Budget,
    journal: Journal,
    limiter: RateLimiter,
    stop: threading.Event,
    timeout: float,
) -> tuple[str | None, str]:
    """(outcome, reason); outcome None when stopped before SessionM said anything."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if not limiter.wait(stop):
            return None, ""
        try:
            # Core's budget before the journal: a row refused for budget was never sent.
            budget.acquire(Claim(Priority.BULK, time.monotonic() + BULK_PATIENCE))
            journal.record(SENDING, row)
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


def _import_dry_run(table: Table, count: int, scratch: Scratch, id_type: str) -> None:
    done = unknown = 0
    examples: list[TagRow] = []
    for kept, state in scratch.rows():
        _, _, _, ttl, _ = kept
        done += state == ACCEPTED
        unknown += state == SENDING and ttl is None
        if state is None and len(examples) < DRY_RUN_EXAMPLES:
            examples.append(TagRow.kept(kept, external=id_type == "external"))
    users = "external/users" if id_type == "external" else "users"
    click.echo(
        f"{table.path} is valid: {count} rows, ids from column {table.id_name!r} "
        f"as SessionM {id_type} ids (--id-type to change)."
    )
    click.echo(f"Already done (journal): {done}; outcome unknown: {unknown}.")
    click.echo(
        f"Would send {count - done - unknown} calls: "
        f"POST $SESSIONM_CORE_URL/priv/v1/apps/<core key>/{users}/<id>/tags, e.g.:"
    )
    for row in examples:
        body = {"tags": list(row.tags), **({"ttl": row.ttl} if row.ttl is not None else {})}
        kind = "counter" if row.ttl is None else f"expires after {row.ttl} s"
        click.echo(f"  line {row.line}: {row.id} {json.dumps(body)} ({kind})")
    click.echo("Nothing was sent (dry run).")


def _write_failed(file: Path, id_name: str, run: ImportRun) -> None:
    """FILE.failed.csv lists this run's failures; it is itself importable once fixed."""
    target = sidecar(file, ".failed.csv")
    if not run.failed and not run.unknown:
        target.unlink(missing_ok=True)
        return

    def write(handle: TextIO) -> None:
        writer = csv.writer(handle)
        writer.writerow(inert([id_name, "tags", "ttl", *FAILED_FILE_LAST_COLUMNS]))
        for kept, reason, unknown in run.scratch.failures():
            row = TagRow.kept(kept, external=False)
            reason = f"outcome unknown: {reason}" if unknown else reason
            ttl = "" if row.ttl is None else row.ttl
            writer.writerow(inert([row.id, ";".join(row.tags), ttl, row.line, reason]))

    try:
        replace_with(target, write)
    except OSError as error:
        raise click.ClickException(f"could not write {target}: {error.strerror}") from None


def _import_summary(run: ImportRun, skipped: int, seconds: float) -> str:
    parts = [
        f"done {run.done}",
        f"skipped {skipped}",
        f"failed {run.failed}",
        f"unknown {run.unknown}",
    ]
    if run.marked:
        parts.append(f"marked done {run.marked}")
    rate = run.done / seconds if seconds > 0 else 0.0
    return f"tags import: {', '.join(parts)} in {seconds:.1f} s ({rate:.1f} rows/s)"


def _explain_and_exit(file: Path, run: ImportRun, interrupted: bool) -> None:
    failed_file = sidecar(file, ".failed.csv")
    if run.unknown:
        click.echo(
            f"{run.unknown} counter rows may or may not have reached SessionM "
            f"(listed in {failed_file}). Check those customers' tags in SessionM, then run "
            "again with --unknown resend (not applied) or --unknown mark-done (applied).",
            err=True,
        )
    if run.failed:
        click.echo(f"{run.failed} rows failed; reasons in {failed_file}.", err=True)
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
@click.option(
    "--fresh-for",
    type=Duration(MIN_FRESH_FOR, MAX_FRESH_FOR),
    default="1h",
    show_default=True,
    help="How long each warmed wallet stays fresh (at most 4h; the longer, the likelier a "
    "customer sees an offer redeemed since). Wallets already fresh for 90 % of it are skipped.",
)
@concurrency_option(8)
@rate_option(50.0)
@click.option("--dry-run", is_flag=True, help="Validate and show what would be fetched.")
def warm_command(
    file: Path,
    id_column: str | None,
    culture: str | None,
    fresh_for: float,
    concurrency: int,
    rate: float,
    dry_run: bool,
) -> None:
    """Fetch each wallet of FILE from SessionM into the shared cache, before a send.

    The wallets stay fresh for --fresh-for, so a Connected Content campaign inside that
    window is served from Redis without a SessionM call. It takes warm's share of the
    fleet's SessionM budget, so it can run while the service serves; a rerun skips what
    is already warm. `wallet-proxy plan` says how long it will take.
    """
    if culture is not None:
        culture = canonical_culture(culture)  # as the API spells it, so the cache keys match
        if culture is None:
            raise click.BadParameter(f"must look {CULTURE_RULE}", param_hint="--culture")
    with Scratch() as scratch:
        count = wallet_ids(read_table(file, id_column), scratch)
        if dry_run:
            click.echo(
                f"{file} is valid: {count} user ids. Would fetch each wallet "
                f"(culture {culture or 'default'}) into the shared cache, fresh for "
                f"{spoken(fresh_for)}. Nothing was fetched."
            )
            return
        settings = load_settings(CONNECT, SHARED_CACHE)
        service = build_services(settings, lambda: datetime.now(UTC)).wallet_service
        if settings.sessionm_rate:  # what the budget lets warm have, as `plan` counts it
            rate = min(rate, paced_rate(settings.sessionm_rate) * settings.bulk_share)
        click.echo(
            f"warm: {count:,} wallets at up to {rate:g}/s, fresh for {spoken(fresh_for)}",
            err=True,
        )
        ids = ((line, user_id) for (line, user_id, *_), _ in scratch.rows())
        counts = warm_all(
            service,
            ids,
            count,
            culture or settings.default_culture,
            fresh_for=fresh_for,
            concurrency=concurrency,
            rate=rate,
        )
    if counts.interrupted:
        click.echo("Interrupted: run the same command again to do the rest.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if counts.failed:
        sys.exit(EXIT_FAILED)


@dataclass
class WarmRun:
    """Outcomes of one `warm` run, shared by the workers."""

    warmed: int = 0
    not_found: int = 0
    failed: int = 0
    skipped: int = 0  # already fresh for long enough
    interrupted: bool = False
    failures: FirstLines = field(default_factory=FirstLines)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> str:
        return (
            f"warmed {self.warmed}, not found {self.not_found}, failed {self.failed}, "
            f"skipped (already fresh) {self.skipped}"
        )


def warm_all(
    service: WalletService,
    ids: Iterable[tuple[int, str]],
    count: int,
    culture: str,
    *,
    fresh_for: float,
    concurrency: int,
    rate: float,
) -> WarmRun:
    """Warm the wallet of each (line, user id) of `ids`, `count` of them; progress and the
    summary go to stderr."""
    started = time.monotonic()
    run = WarmRun()
    stop = threading.Event()
    limiter = RateLimiter(rate)
    progress = Progress("warm", count)

    def handle(line_and_id: tuple[int, str]) -> None:
        line, user_id = line_and_id
        outcome, reason = _warm_one(service, user_id, culture, fresh_for, limiter, stop)
        if outcome is None:
            return
        with run.lock:
            setattr(run, outcome, getattr(run, outcome) + 1)
            if reason:
                run.failures.add(line, f"{user_id}: {reason}")
        progress.advance()

    run_parallel(ids, handle, concurrency, stop)
    progress.close()
    seconds = time.monotonic() - started
    click.echo(
        f"warm: {run.summary()} in {seconds:.1f} s ({progress.done / seconds:.1f}/s)", err=True
    )
    for failure in run.failures.messages():
        click.echo(f"  {failure}", err=True)
    run.interrupted = progress.done < count
    return run


def _warm_one(
    service: WalletService,
    user_id: str,
    culture: str,
    fresh_for: float,
    limiter: RateLimiter,
    stop: threading.Event,
) -> tuple[str | None, str]:
    """(outcome, reason); every fetch is safe to repeat, so every transient error is retried.

    A wallet already fresh for WARM_SKIP of `fresh_for` is skipped before the rate
    limiter, so a rerun after an interruption goes through what was done at once.
    """
    if service.freshness_left(user_id, culture) >= WARM_SKIP * fresh_for:
        return "skipped", ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if not limiter.wait(stop):
            return None, ""
        try:
            service.warm(user_id, culture, fresh_for=fresh_for)
            return "warmed", ""
        except UserNotFound:
            return "not_found", ""
        except WalletProxyError as error:
            if not isinstance(error, TRANSIENT) or attempt == MAX_ATTEMPTS:
                return "failed", error.message
            if not pause_before_retry(error, attempt, limiter, stop):
                return None, ""
    raise AssertionError("unreachable")
