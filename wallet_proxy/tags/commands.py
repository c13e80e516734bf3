"""`wallet-proxy tags status` and `tags requeue`: the queued webhooks' tags, for operators.

`status` counts taggings by state and lists those waiting for a decision; `requeue --dead`
queues dead letters again once the cause is fixed (a customer now known to SessionM, say);
`requeue --unknown` settles taggings SessionM may or may not have applied: look at the
customer's tags in SessionM first, then `resend` (not applied) or `mark-done` (applied).
They share the triggers' commands (triggers/commands.py), on the outbox's tags queue.
"""

from __future__ import annotations

import click
from flask import Flask

from ..config import ConfigError
from ..factory import create_app
from ..triggers.commands import settle, settle_options, show_status
from ..triggers.model import Record
from ..triggers.outbox import Outbox
from .model import Tagging, state_word
from .setup import queued_tags_of


def _queue() -> Outbox:
    try:
        app: Flask = create_app()
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from None
    queued = queued_tags_of(app)
    if queued is None:
        raise click.ClickException(
            "the tags are not queued: set SESSIONM_CORE_URL, SESSIONM_CORE_API_KEY and "
            "SESSIONM_CORE_API_SECRET, with WALLET_PROXY_TAGS_MODE=queued (the default)"
        )
    return queued.queue


def _described(record: Record[Tagging]) -> str:
    tagging = record.item
    ttl = "counter" if tagging.ttl is None else f"ttl {tagging.ttl}"
    return f"{tagging.id_type} {tagging.user_id}  {','.join(tagging.tags)} ({ttl})"


@click.command("status")
def tags_status() -> None:
    """Queued webhooks' tags by state, the oldest waiting, the tags worker's last sign of
    life, and those needing a decision. Exits 1 when the tags are stalled (no worker runs)."""
    show_status(
        _queue(),
        describe=_described,
        check_in="SessionM",
        word=state_word,
        worker="tags worker",
        meanwhile="`wallet-proxy serve` runs one in each instance",
    )


@click.command("requeue")
@settle_options(
    item="tagging",
    unknown="Taggings SessionM may or may not have applied: send again, or record as applied.",
)
def tags_requeue(dead: bool, unknown: str | None, ids: tuple[str, ...]) -> None:
    """Settle dead letters or taggings whose outcome is unknown."""
    settle(_queue(), dead=dead, unknown=unknown, ids=ids, noun="taggings", word=state_word)
