"""Accepting a trigger: map it, recognise a repeat, respect the bounds, store it durably,
and answer the truth within the outbox's ADD_BOUND: stored, not stored, or maybe stored.

`store` is any queue's accepting (the queued tags' too): the outbox's refusals as the
route's errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .. import metrics
from ..errors import (
    IdempotencyConflict,
    QueueDiskFull,
    QueueMaybeStored,
    TriggerDiskFull,
    TriggerMaybeStored,
    TriggerQueueFull,
    TriggerStoreUnavailable,
    WalletProxyError,
)
from .outbox import (
    Accepted,
    Dedupe,
    DedupeConflict,
    DiskFull,
    Outbox,
    OutboxError,
    OutboxFull,
    OutcomeUnknown,
    Queued,
)
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
            disk_full=TriggerDiskFull,
            maybe_stored=TriggerMaybeStored,
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
    disk_full: type[QueueDiskFull],
    maybe_stored: type[QueueMaybeStored],
) -> Accepted:
    """`item` stored durably (or the one it repeats); raises `full` when its queue is at
    `max_waiting` or the store's byte bound, `unavailable` when the store failed and
    `disk_full` when its disk is (nothing was stored in either case), `maybe_stored` when
    the store did not confirm in time, and IdempotencyConflict for a key reused with
    another body. Kept items pruned to make room are counted."""
    queue = outbox.queue.name
    try:
        accepted = outbox.add(item, dedupe, now=now, max_waiting=max_waiting)
    except OutboxFull:
        raise full() from None
    except DedupeConflict:
        raise IdempotencyConflict() from None
    except DiskFull as exc:
        log.error("refused an item of the %s queue: %s", queue, exc)
        raise disk_full() from None
    except OutboxError as exc:
        log.error("could not store an item of the %s queue: %s", queue, exc)
        raise unavailable() from None
    except OutcomeUnknown:
        log.error("an item of the %s queue may be stored: the store did not confirm", queue)
        raise maybe_stored() from None
    if accepted.pruned:
        metrics.outbox_pruned(accepted.pruned)
    return accepted
