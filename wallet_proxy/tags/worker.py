"""Applying queued webhooks' tags to SessionM Core: at Core's budget, at most once each.

One loop (`run_once` at a time) claims a batch of the tags queue and hands each tagging
to one of WORKER_CALLS threads as one comes free. The thread:

1. waits for its turn in Core's budget, at the BULK priority: the bulk share of what the
   budget sustains (WALLET_PROXY_SESSIONM_BULK_SHARE of budget.paced_rate), and only
   when no direct relay call is waiting for Core. ASKERS threads ask at a time, so
   whichever wakes first takes a free slot: one late wake-up (a busy process) costs no
   budget, and bulk work, which never queues, doesn't leave one asker starving;
2. marks it `sending` durably, then calls Core;
3. marks it by what Core's answer proves: `sent` (applied); `dead` when SessionM does
   not know the customer or refuses the call for good (a 4xx); queued again with a
   backoff when SessionM certainly did nothing (429, 503, a refused connection), and
   the worker pauses as long; `unknown` when it may have applied them (a timeout, a
   dropped connection, another 5xx). SessionM Core takes no idempotency key, so an
   `unknown` tagging is never sent again by itself: an operator settles it
   (`wallet-proxy tags requeue --unknown`).

A tagging left `sending` by a worker that died (kill -9) becomes `unknown` when its lease
ends, or at once when the next worker of an SQLite instance takes over (running.py).
A tagging waits in the queue however long the queue is; only one that SessionM keeps
refusing becomes a dead letter, once retrying it would pass WALLET_PROXY_TAGS_MAX_AGE.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from .. import metrics
from ..background import Pool
from ..budget import Budget, Claim, Priority
from ..errors import UpstreamBusy, UserNotFound, WalletProxyError
from ..idempotency import changed_nothing
from ..logs import UserRef
from ..metrics import TagsOutcome
from ..sessionm_core import CoreClient, maybe_applied
from ..triggers.deliverer import FIRST_BACKOFF, IDLE_WAIT, MAX_BACKOFF, default_owner
from ..triggers.model import Record
from ..triggers.outbox import Outbox
from ..triggers.upkeep import keep_working
from .model import Tagging

log = logging.getLogger(__name__)

CLAIM_LIMIT = 100
CLAIM_LEASE = 30.0  # from claim to `sending`: a batch at the budget's pace, with room
SEND_LEASE = 60.0  # a call (at most WALLET_PROXY_CORE_TIMEOUT, 30 s), with room to record it
BUDGET_PATIENCE = 2.0  # seconds one tagging waits for Core's budget before the worker pauses
WORKER_CALLS = 32  # threads: calls in flight (the rate x SessionM's latency), with room
ASKERS = 4  # threads asking Core's budget at once
SLOT_POLL = 0.1  # seconds between checks for `stop` while every thread is busy
# Nobody waits for a queued tagging: the worker takes Core's budget as `tags import` does,
# the bulk share and only when no direct relay call waits (budget.py).
WORKER_PRIORITY = Priority.BULK
RECORD_MARGIN = 2.0  # seconds past a call's deadline for its thread to record the outcome
UNKNOWN_CUSTOMER = "SessionM does not know this customer"
# The moves the metrics count, as the outcomes they are.
COUNTED_MOVES: dict[str, TagsOutcome] = {
    "sent": "applied",
    "retry": "retry",
    "unknown": "unknown",
    "dead": "dead",
}


class TagsWorker:
    def __init__(
        self,
        outbox: Outbox,
        core: CoreClient,
        budget: Budget,
        *,
        core_timeout: float,
        max_age: float,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        rng: Callable[[], float] = random.random,
        calls: int = WORKER_CALLS,
    ):
        self.outbox = outbox  # the outbox's tags queue
        self.core = core
        self.budget = budget
        self.core_timeout = core_timeout
        self.max_age = max_age
        self.clock = clock
        self.owner = owner or default_owner()
        self.rng = rng
        self.paused_until = 0.0
        self._pool = Pool("tags-call", calls)
        self._slots = threading.BoundedSemaphore(calls)
        self._askers = threading.BoundedSemaphore(ASKERS)
        self._calls = calls
        self._stop: threading.Event | None = None

    def close(self) -> None:
        """The call threads (`run` has waited for their calls); the queue and Core are the
        app's."""
        self._pool.shutdown()

    def run(self, stop: threading.Event) -> None:
        """Apply taggings until `stop` is set; store failures are logged and waited out."""
        log.info("tags worker %s started", self.owner)
        self._stop = stop  # also ends a batch early: the taggings not yet sent are released
        keep_working(
            "tags worker",
            stop,
            self.run_once,
            self.outbox,
            depth=metrics.tags_queue_depth,
            idle_wait=lambda: max(IDLE_WAIT, min(1.0, self.paused_until - self.clock())),
            clock=self.clock,
        )
        if not self.wait_for_calls(self.core_timeout + RECORD_MARGIN):
            log.warning("tags worker stopped with calls in flight; their leases settle them")
        log.info("tags worker %s stopped", self.owner)

    def run_once(self) -> int:
        """Claim one batch and hand it to the threads; the number of taggings claimed (0:
        none due). The batch's last calls may still be in flight when it returns."""
        now = self.clock()
        if now < self.paused_until:
            return 0
        records = self.outbox.claim(
            owner=self.owner, now=now, window=0.0, lease=CLAIM_LEASE, limit=CLAIM_LIMIT
        )
        for index, record in enumerate(records):
            if not self._hand_over(record):
                self._release(records[index:])
                break
        return len(records)

    def wait_for_calls(self, timeout: float) -> bool:
        """Whether every call started has ended, its outcome recorded, within `timeout`
        seconds."""
        deadline = time.monotonic() + timeout
        taken = 0
        try:
            while taken < self._calls:
                if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    return False
                taken += 1
            return True
        finally:
            for _ in range(taken):
                self._slots.release()

    # --- one tagging ---------------------------------------------------------------

    def _hand_over(self, record: Record[Tagging]) -> bool:
        """`record` to the next free thread; False when it must wait (stopping, paused)."""
        while not self._slots.acquire(timeout=SLOT_POLL):
            if self._held():
                return False
        if self._held():
            self._slots.release()
            return False
        self._pool.submit(self._apply, record)
        return True

    def _budget(self) -> bool:
        """Core's budget for one call; False (the worker paused) when it has no room soon."""
        try:
            with self._askers:
                self.budget.acquire(Claim(WORKER_PRIORITY, time.monotonic() + BUDGET_PATIENCE))
        except UpstreamBusy as refusal:
            wait = float(refusal.retry_after or 1)
            log.info("SessionM Core's budget has no room; the tags worker waits %.0f s", wait)
            self.paused_until = max(self.paused_until, self.clock() + wait)
            return False
        return not self._held()

    def _apply(self, record: Record[Tagging]) -> None:
        """On a pool thread: Core's budget, then mark it `sending`, call Core, and record
        what the answer proves."""
        try:
            if not self._budget():
                self._release([record])
                return
            now = self.clock()
            if not self._move("sending", [record], lease_until=now + SEND_LEASE):
                return  # its claim was lost (its lease ended): another worker has it
            tagging = record.item
            try:
                self.core.add_tags(
                    tagging.user_id,
                    list(tagging.tags),
                    tagging.ttl,
                    external=tagging.external,
                    deadline=time.monotonic() + self.core_timeout,
                )
            except UserNotFound:
                self._move("dead", [record], reason=UNKNOWN_CUSTOMER)
            except WalletProxyError as error:
                self._failed(record, error)
            except Exception:
                log.exception("applying tagging %s failed", record.id)
                self._move("unknown", [record], reason="the tags worker failed while applying")
            else:
                self._move("sent", [record], reason="")
        except Exception:  # the store failed: the lease settles it (queued, or unknown)
            log.exception("tags worker: could not record tagging %s", record.id)
        finally:
            self._slots.release()

    def _failed(self, record: Record[Tagging], error: WalletProxyError) -> None:
        if maybe_applied(error):
            log.warning(
                "tagging %s for %s: outcome unknown (%s); see `wallet-proxy tags status`",
                record.id,
                UserRef(record.item.user_id),
                error.message,
            )
            self._move("unknown", [record], reason=error.message)
        elif changed_nothing(error):
            self._retry(record, error)
        else:
            log.warning(
                "tagging %s for %s refused by SessionM: %s",
                record.id,
                UserRef(record.item.user_id),
                error.message,
            )
            self._move("dead", [record], reason=error.message)

    def _retry(self, record: Record[Tagging], error: WalletProxyError) -> None:
        """SessionM did nothing: again after a backoff (or its Retry-After), and every
        tagging waits as long, since the next call would fare the same."""
        now = self.clock()
        backoff = min(MAX_BACKOFF, FIRST_BACKOFF * 2**record.attempts) * (0.5 + self.rng() / 2)
        wait = max(backoff, float(error.retry_after or 0))
        due = now + wait
        self.paused_until = max(self.paused_until, due)
        if due - record.queued_at > self.max_age:
            limit = f"not applied within {self.max_age / 3600:g} h"
            self._move("dead", [record], reason=f"{limit}: {error.message}")
            return
        log.warning(
            "SessionM did not take tagging %s (%s); retrying in %.1f s",
            record.id,
            error.message,
            wait,
        )
        self._move("retry", [record], due_at=due, reason=error.message)

    # --- helpers -----------------------------------------------------------------------

    def _release(self, records: list[Record[Tagging]]) -> None:
        """Back to the queue untouched, due when the worker may go on."""
        self._move("release", records, due_at=max(self.paused_until, self.clock()))

    def _held(self) -> bool:
        """Stopping, or SessionM asked us to wait: start no more calls now."""
        stopping = self._stop is not None and self._stop.is_set()
        return stopping or self.clock() < self.paused_until

    def _move(self, move: str, records: list[Record[Tagging]], **changes) -> list[str]:
        moved = self.outbox.move(
            move, [r.id for r in records], now=self.clock(), owner=self.owner, **changes
        )
        if move in COUNTED_MOVES:
            metrics.tags_outcome(COUNTED_MOVES[move], len(moved))
        return moved
