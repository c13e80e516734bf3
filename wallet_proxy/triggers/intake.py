"""Accepting a trigger: map it, recognise a repeat, respect the bound, store it durably."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .. import metrics
from ..errors import (
    IdempotencyConflict,
    TriggerQueueFull,
    TriggerStoreUnavailable,
)
from .outbox import Accepted, Dedupe, DedupeConflict, Outbox, OutboxError, OutboxFull
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
        dedupe = Dedupe.of(trigger, idempotency_key)
        try:
            accepted = self.outbox.add(
                trigger, dedupe, now=self.clock(), max_waiting=self.max_queued
            )
        except OutboxFull:
            raise TriggerQueueFull() from None
        except DedupeConflict:
            raise IdempotencyConflict() from None
        except OutboxError as exc:
            log.error("could not store a trigger: %s", exc)
            raise TriggerStoreUnavailable() from None
        metrics.trigger_outcome("accepted" if accepted.created else "repeat")
        return accepted
