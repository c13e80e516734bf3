"""Accepting a webhook into the tags queue: recognise a repeat, respect the bound, store it.

An Idempotency-Key is scoped as the direct relay scopes it (route, customer, key) and
recognised for 24 hours (idempotency.WINDOW); without one, every webhook is a tagging of
its own, as in the direct relay (a counter tag counts each).
"""

from __future__ import annotations

from collections.abc import Callable

from .. import metrics
from ..errors import TagsDiskFull, TagsMaybeStored, TagsQueueFull, TagsStoreUnavailable
from ..idempotency import WINDOW, fingerprint, scope_digest
from ..triggers.intake import store
from ..triggers.outbox import Accepted, Dedupe, Outbox
from .model import Tagging


def dedupe_of(tagging: Tagging, idempotency_key: str | None) -> Dedupe | None:
    if idempotency_key is None:
        return None
    key = scope_digest(tagging.key_scope(idempotency_key))
    return Dedupe(f"key:{key}", fingerprint(tagging.body()), WINDOW)


class TagsIntake:
    def __init__(self, queue: Outbox, *, max_queued: int, clock: Callable[[], float]):
        self.queue = queue
        self.max_queued = max_queued
        self.clock = clock

    def accept(self, tagging: Tagging, idempotency_key: str | None) -> Accepted:
        """The stored tagging (or the one this repeats); raises into the error tree."""
        accepted = store(
            self.queue,
            tagging,
            dedupe_of(tagging, idempotency_key),
            now=self.clock(),
            max_waiting=self.max_queued,
            full=TagsQueueFull,
            unavailable=TagsStoreUnavailable,
            disk_full=TagsDiskFull,
            maybe_stored=TagsMaybeStored,
        )
        metrics.tags_outcome("accepted" if accepted.created else "repeat")
        return accepted
