"""Accepting a trigger: map it, recognise a repeat, respect the bound, store it durably.

`store` is any queue's accepting (the queued tags' too): the outbox's refusals as the
route's errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .. import metrics
from ..errors import (
    IdempotencyConflict,
    TriggerQueueFull,
    TriggerStoreUnavailable,
    WalletProxyError,
)
from .outbox import Accepted, Dedupe, DedupeConflict, Outbox, OutboxError, OutboxFull, Queued
from .properties import build_trigger

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        outbox: Outbox,
        *,
        max_queued: int,
        set_email: bool,
        email_prioritization: Sequence[str],
        clock: Callable[[], float],
    ):
        self.outbox = outbox
        self.max_queued = max_queued
        self.set_email = set_email
        self.email_prioritization = tuple(email_prioritization)
        self.clock = clock

    def accept(self, body: dict, idempotency_key: str | None) -> Accepted:
        """The stored trigger (or the one this repeats); raises into the error tree."""
        trigger = build_trigger(
            body, set_email=self.set_email, prioritization=self.email_prioritization
        )
        accepted = store(
            self.outbox,
            trigger,
            Dedupe.of(trigger, idempotency_key),
            now=self.clock(),
            max_waiting=self.max_queued,
            full=TriggerQueueFull,
            unavailable=TriggerStoreUnavailable,
        )
        metrics.trigger_outcome("accepted" if accepted.created else "repeat")
        return accepted


def store(
    outbox: Outbox,
    item: Queued,
    dedupe: Dedupe | None,
    *,
    now: float,
    max_waiting: int,
    full: type[WalletProxyError],
    unavailable: type[WalletProxyError],
) -> Accepted:
    """`item` stored durably (or the one it repeats); raises `full` when its queue is at
    `max_waiting`, `unavailable` when the store failed (nothing was stored), and
    IdempotencyConflict for a key reused with another body."""
    try:
        return outbox.add(item, dedupe, now=now, max_waiting=max_waiting)
    except OutboxFull:
        raise full() from None
    except DedupeConflict:
        raise IdempotencyConflict() from None
    except OutboxError as exc:
        log.error("could not store an item of the %s queue: %s", outbox.queue.name, exc)
        raise unavailable() from None
