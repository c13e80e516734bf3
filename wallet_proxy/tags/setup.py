"""Building the queued tags (their intake on the outbox's tags queue), and a worker on demand.

Nothing is opened unless the tags are queued (SessionM Core configured and
WALLET_PROXY_TAGS_MODE=queued): in direct mode the relay needs no data folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from ..container import Services
from ..triggers.outbox import Outbox
from .intake import TagsIntake
from .model import TAGS
from .worker import TagsWorker

EXTENSION = "wallet_proxy.tags"


@dataclass(frozen=True)
class QueuedTags:
    """What the route and the worker share in one process: the outbox's tags queue."""

    queue: Outbox
    intake: TagsIntake


def queued_tags_of(app: Flask | None = None) -> QueuedTags | None:
    """The queued tags of `app` (or of the current request's), None in direct mode."""
    found: QueuedTags | None = (app or current_app).extensions[EXTENSION]
    return found


def build_queued_tags(found: Services, outbox: Outbox) -> QueuedTags:
    queue = outbox.for_queue(TAGS)
    intake = TagsIntake(queue, max_queued=found.settings.tags_max_queued, clock=found.unix_time)
    return QueuedTags(queue, intake)


def build_worker(found: Services, queue: Outbox) -> TagsWorker:
    """A worker applying `queue` with the app's Core client and Core's budget."""
    assert found.core is not None  # queued tags need Core (Settings.tags_queued)
    return TagsWorker(
        queue,
        found.core,
        found.core_budget,
        core_timeout=found.settings.core_timeout,
        max_age=found.settings.tags_max_age,
        clock=found.unix_time,
    )
