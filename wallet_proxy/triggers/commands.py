"""`wallet-proxy triggers`: see the outbox, run a deliverer, settle what needs a person.

`status` counts triggers by state and lists those waiting for a decision. `deliver` runs
this instance's deliverer in the foreground (when it isn't running inside the service).
`requeue --dead` sends dead letters again after the cause is fixed; `requeue --unknown`
settles triggers whose delivery may or may not have happened: check the customer in
Braze (the message log) first, then `resend` (it did not arrive) or `mark-done` (it did).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable

import click
from flask import Flask

from ..config import ConfigError
from ..container import services
from ..factory import create_app
from .model import DEAD, QUEUED, SENDING, SENT, UNKNOWN, Record
from .outbox import Outbox, OutboxError
from .redis_outbox import RedisOutbox, persistence_warnings
from .running import InstanceLock, deliver, deliverer_for, took_over
from .setup import triggers_of

LISTED = 20
BATCH = 1000
IDLE_GRACE = 2.0


def _app() -> Flask:
    try:
        app = create_app()
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from None
    if triggers_of(app) is None:
        raise click.ClickException(
            "triggers are not configured: set BRAZE_REST_URL, BRAZE_REST_API_KEY and "
            "WALLET_PROXY_TRIGGER_KEYS"
        )
    return app


def _outbox(app: Flask) -> Outbox:
    triggers = triggers_of(app)
    assert triggers is not None  # _app() checked
    return triggers.outbox


@click.group("triggers")
def triggers_group() -> None:
    """SessionM-triggered Braze messages: the outbox and its deliverer."""


@triggers_group.command("status")
def status() -> None:
    """Triggers by state, the oldest waiting, and those needing a decision."""
    show_status(_outbox(_app()), describe=_described, check_in="Braze")


def _described(record: Record) -> str:
    trigger = record.trigger
    who = trigger.recipient.describe() if trigger.recipient is not None else "(broadcast)"
    return f"{trigger.target}  {who}"


def show_status(
    outbox: Outbox,
    *,
    describe: Callable[[Record], str],
    check_in: str,
    word: Callable[[str], str] = str,
) -> None:
    """A queue's items by state (each state as `word` says it), the oldest waiting, and
    those needing a decision, each as `describe` says it; `check_in`: where an operator
    finds out whether an item whose outcome is unknown arrived."""
    try:
        counts = outbox.counts()
        oldest = outbox.oldest_queued()
        unknown = outbox.listed(UNKNOWN, limit=LISTED)
        dead = outbox.listed(DEAD, limit=LISTED)
    except OutboxError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("  ".join(f"{word(state)} {counts[state]}" for state in counts))
    if oldest is not None:
        click.echo(f"oldest queued: accepted {time.time() - oldest:.0f} s ago")
    if isinstance(outbox, RedisOutbox):
        for warning in persistence_warnings(outbox.client):
            click.echo(f"warning: {warning}", err=True)
    check = f"outcome unknown (check in {check_in}, then requeue --unknown ...)"
    _listing(check, unknown, counts, describe)
    _listing("dead letters (fix the cause, then requeue --dead)", dead, counts, describe)


def _listing(
    title: str, records: list[Record], counts: dict[str, int], describe: Callable[[Record], str]
) -> None:
    if not records:
        return
    total = counts[records[0].state]
    more = f", the {len(records)} latest" if total > len(records) else ""
    click.echo(f"\n{title}: {total}{more}")
    for record in records:
        click.echo(f"  {record.id}  {describe(record)}  {record.reason}")


@triggers_group.command("deliver")
@click.option(
    "--until-idle",
    is_flag=True,
    help="Stop once nothing is due (for a one-off run) instead of running until stopped.",
)
def deliver_command(until_idle: bool) -> None:
    """Run this instance's deliverer in the foreground until Ctrl-C or SIGTERM.

    Waits while another deliverer of this instance (a service worker) holds the lock.
    """
    app = _app()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if until_idle:
        _deliver_until_idle(app, stop)
        return
    click.echo("delivering triggers; Ctrl-C to stop", err=True)
    deliver(app, stop)


def _deliver_until_idle(app: Flask, stop: threading.Event) -> None:
    deliverer = deliverer_for(app)
    if deliverer is None:
        return
    lock = InstanceLock(services(app).settings.data_dir)
    try:
        if not lock.try_acquire():
            raise click.ClickException("another deliverer of this instance is running")
        took_over(deliverer)
        handled, idle_since = 0, time.monotonic()
        while not stop.is_set():
            done = deliverer.run_once()
            handled += done
            if done:
                idle_since = time.monotonic()
                continue
            # Nothing claimable now: finished, unless a batch window is still open. Retries
            # waiting for Braze, or claims of another instance, are left for later.
            quiet_for = time.monotonic() - idle_since
            if _waiting(deliverer.outbox) == 0 or quiet_for > deliverer.window + IDLE_GRACE:
                break
            stop.wait(0.05)
        click.echo(f"handled {handled} triggers", err=True)
    finally:
        lock.close()


def _waiting(outbox: Outbox) -> int:
    counts = outbox.counts()
    return counts[QUEUED] + counts[SENDING]


def settle_options(
    *, item: str, unknown: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A `requeue` command's options (`--dead`, `--unknown`, `--id`), for a queue whose items
    are `item`s; `unknown` says what its --unknown choices settle."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        options = (
            click.option("--dead", "dead", is_flag=True, help="Queue dead letters again."),
            click.option(
                "--unknown", "unknown", type=click.Choice(["resend", "mark-done"]), help=unknown
            ),
            click.option(
                "--id",
                "ids",
                multiple=True,
                help=f"Only this {item} (repeatable); default: all of them.",
            ),
        )
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@triggers_group.command("requeue")
@settle_options(
    item="trigger",
    unknown="Triggers whose outcome is unknown: send again, or record as delivered.",
)
def requeue(dead: bool, unknown: str | None, ids: tuple[str, ...]) -> None:
    """Settle dead letters or triggers whose outcome is unknown."""
    settle(_outbox(_app()), dead=dead, unknown=unknown, ids=ids, noun="triggers")


def settle(
    outbox: Outbox,
    *,
    dead: bool,
    unknown: str | None,
    ids: tuple[str, ...],
    noun: str,
    word: Callable[[str], str] = str,
) -> None:
    """`requeue` of a queue's dead letters (`dead`) or of its items whose outcome is
    unknown (`unknown`: resend or mark-done), all of them or `ids`."""
    if dead == (unknown is not None):
        raise click.UsageError("give exactly one of --dead and --unknown resend|mark-done")
    if dead:
        move, state, done = "requeue_dead", DEAD, "re-queued"
    elif unknown == "resend":
        move, state, done = "resend_unknown", UNKNOWN, "re-queued"
    else:
        move, state, done = "mark_done", UNKNOWN, f"marked {word(SENT)}"
    moved = 0
    try:
        if ids:
            moved = len(outbox.move(move, list(ids), now=time.time()))
        else:
            while batch := [r.id for r in outbox.listed(state, limit=BATCH)]:
                count = len(outbox.move(move, batch, now=time.time()))
                moved += count
                if count == 0:
                    break
    except OutboxError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{done} {moved} {noun}")
    if ids and moved < len(ids):
        click.echo(f"{len(ids) - moved} of the given ids were not {state}", err=True)
        sys.exit(1)
