"""Delivering the outbox to Braze: batched, paced, retried only when nothing was sent.

One loop, `run_once` at a time:

1. claim the next batch: every queued trigger of the campaign or Canvas whose oldest
   has waited WALLET_PROXY_TRIGGER_BATCH_MS (so triggers arriving together go together);
2. expire what has waited past WALLET_PROXY_TRIGGER_MAX_AGE (dead letters);
3. add the wallet where asked (within a budget; -1 when it can't be had in time), and the
   loyalty attributes that changed since the profile last got them where asked (none when
   the wallet can't be had), set on the profile with the send (attributes/written.py keeps
   them once Braze took the call);
4. split into calls: a broadcast alone (within Braze's 250 a minute), others up to 50
   recipients named the same way (external id, Braze id, alias or email), never one
   recipient or one email address twice in a call (Braze would dedupe them);
5. per call: mark `sending` (durably), call Braze, then mark by what Braze's answer
   proves: `sent`; `queued` again with a backoff if Braze certainly did nothing (and
   pause every call for as long); `unknown` if it may have delivered; `dead` on a final
   refusal or a paused campaign or Canvas. A batch refused with a 400 is sent again one
   trigger at a time, so one bad recipient doesn't sink 49 others.

Braze's X-RateLimit-* headers are obeyed before it has to answer 429: when an answer
says none are left, calls wait for the reset.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, replace
from typing import Protocol

from .. import metrics
from ..attributes.values import Attributes, Loyalty, attributes_of, changed
from ..attributes.written import TRIGGER, Written, WrittenStore, WrittenStoreError
from ..background import Pool
from ..braze_rest import BrazeNotProcessed, BrazeOutcomeUnknown, BrazeRejected, RateLimit
from ..logs import UserRef
from .braze import MAX_RECIPIENTS, Sent, call_body
from .model import Record, Trigger
from .outbox import Outbox
from .properties import WALLET_UNKNOWN, with_wallet
from .upkeep import keep_working

log = logging.getLogger(__name__)

CLAIM_LIMIT = 500
CLAIM_LEASE = 30.0  # from claim to `sending`: enough for the wallet budget and the batch
SEND_LEASE = 60.0  # a call's connect and answer timeouts (13 s), with room to record it
IDLE_WAIT = 0.05
# The moves the metrics count, as the outcomes they are.
COUNTED_MOVES: dict[str, metrics.TriggerOutcome] = {
    "sent": "sent",
    "retry": "retry",
    "unknown": "unknown",
    "dead": "dead",
}
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0
WALLET_BUDGET = 2.0  # seconds for the whole batch's wallets
WALLET_THREADS = 8


class Sender(Protocol):
    def send(self, kind: str, body: dict) -> Sent: ...

    def close(self) -> None: ...


class Wallets(Protocol):
    def loyalty(self, user_id: str) -> Loyalty | None:
        """What the customer's wallet says now, or None if it can't be had now."""
        ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A trigger as it is sent: with the wallet in its properties and the loyalty
    attributes that changed in its recipient's attributes, where asked; `profile`: every
    loyalty attribute, to remember as written once Braze takes the call."""

    trigger: Trigger
    properties: dict
    profile: Attributes | None = None


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def loggable(reason: str, records: list[Record]) -> str:
    """Braze's words for a log line: its messages may quote the recipients' ids or
    addresses, which logs never carry in the clear (the outbox keeps the words as they were)."""
    for record in records:
        trigger = record.trigger
        named = [trigger.recipient.id] if trigger.recipient is not None else []
        for word in [*named, *trigger.attributes.values()]:
            if isinstance(word, str) and word:
                reason = reason.replace(word, "<recipient>")
    return reason


def split_calls(records: list[Record]) -> list[list[Record]]:
    """Recipients' triggers in calls of at most 50 named one way (`BrazeUser.kind`), none
    sharing a recipient or an email address (`Trigger.call_keys`): Braze delivers such
    duplicates in one call once. Kinds go apart because an external id and an email,
    say, may name one profile, which we can't tell.

    First fit keeps a recipient's triggers in the order they were accepted.
    """
    calls: list[tuple[str | None, list[Record], set]] = []
    for record in records:
        recipient = record.trigger.recipient
        kind = recipient.kind if recipient is not None else None
        keys = record.trigger.call_keys
        for call_kind, members, seen in calls:
            if call_kind == kind and len(members) < MAX_RECIPIENTS and not seen & keys:
                members.append(record)
                seen |= keys
                break
        else:
            calls.append((kind, [record], set(keys)))
    return [members for _, members, _ in calls]


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        *,
        window: float,
        max_age: float,
        wallets: Wallets | None = None,
        written: WrittenStore | None = None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        rng: Callable[[], float] = random.random,
        wallet_budget: float = WALLET_BUDGET,
    ):
        self.outbox = outbox
        self.sender = sender
        self.window = window
        self.max_age = max_age
        self.wallets = wallets
        self.written = written
        self.clock = clock
        self.owner = owner or default_owner()
        self.rng = rng
        self.wallet_budget = wallet_budget
        self.paused_until = 0.0
        self._pool = Pool("trigger-wallet", WALLET_THREADS)
        self._stop: threading.Event | None = None

    # --- the loop ------------------------------------------------------------------

    def close(self) -> None:
        """The wallet threads and Braze's connections; the outbox is the app's."""
        self._pool.shutdown()
        self.sender.close()

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set; store failures are logged and waited out."""
        log.info("trigger deliverer %s started", self.owner)
        self._stop = stop  # also ends a batch early: the calls not yet made are released
        keep_working(
            "trigger deliverer",
            stop,
            self.run_once,
            self.outbox,
            depth=metrics.trigger_queue_depth,
            idle_wait=lambda: max(IDLE_WAIT, min(1.0, self.paused_until - self.clock())),
            clock=self.clock,
        )
        log.info("trigger deliverer %s stopped", self.owner)

    def run_once(self) -> int:
        """Claim one batch and send it; the number of triggers handled (0: nothing due)."""
        now = self.clock()
        if now < self.paused_until:
            return 0
        records = self.outbox.claim(
            owner=self.owner, now=now, window=self.window, lease=CLAIM_LEASE, limit=CLAIM_LIMIT
        )
        if not records:
            return 0
        live = self._expire(records, now)
        outgoing = self._outgoing(live)
        waiting: list[Record] = []
        for record in [r for r in live if r.trigger.broadcast]:
            if self._paused():
                waiting.append(record)
                continue
            wait = self.outbox.take_broadcast_slot(now=self.clock())
            if wait > 0:  # Braze allows 250 broadcasts a minute
                self._move("release", [record], due_at=self.clock() + wait)
                continue
            self._call([record], outgoing)
        for call in split_calls([r for r in live if not r.trigger.broadcast]):
            if self._paused():
                waiting += call
                continue
            self._call(call, outgoing)
        if waiting:
            self._move("release", waiting, due_at=max(self.paused_until, self.clock()))
        return len(records)

    # --- steps -----------------------------------------------------------------------

    def _expire(self, records: list[Record], now: float) -> list[Record]:
        live = []
        for record in records:
            if now - record.queued_at <= self.max_age:
                live.append(record)
                continue
            last = f" (last: {record.reason})" if record.reason else ""
            self._move("dead", [record], reason=f"{self._too_old()}{last}")
        return live

    def _too_old(self) -> str:
        return f"not delivered within {self.max_age / 3600:g} h"

    def _outgoing(self, records: list[Record]) -> dict[str, Outgoing]:
        """Each trigger as it is sent: a customer's wallet, read once for the batch within
        its budget, goes where asked (-1 in the summary, no attributes, when it can't)."""
        wanted = {
            user_id
            for record in records
            for user_id in (record.trigger.wallet_user_id, record.trigger.attributes_user_id)
            if user_id
        }
        loyalties: dict[str, Future] = {}
        if wanted and self.wallets is not None:
            loyalties = {uid: self._pool.submit(self.wallets.loyalty, uid) for uid in wanted}
            wait_for(loyalties.values(), timeout=self.wallet_budget)

        def loyalty(user_id: str | None) -> Loyalty | None:
            future = loyalties.get(user_id or "")
            if future is None or not future.done() or future.exception():
                return None
            found: Loyalty | None = future.result()
            return found

        found = {}
        for record in records:
            trigger, properties = record.trigger, record.trigger.properties
            if trigger.wallet_user_id:
                summary = loyalty(trigger.wallet_user_id)
                points, offers = (
                    (summary.available_points, summary.offer_count)
                    if summary is not None
                    else (WALLET_UNKNOWN, WALLET_UNKNOWN)
                )
                properties = with_wallet(properties, points, offers)
            found[record.id] = self._with_attributes(
                Outgoing(trigger, properties), loyalty(trigger.attributes_user_id)
            )
        return found

    def _with_attributes(self, outgoing: Outgoing, loyalty: Loyalty | None) -> Outgoing:
        """The loyalty attributes the recipient's profile doesn't hold yet, set with the send."""
        trigger = outgoing.trigger
        if loyalty is None or trigger.recipient is None:
            return outgoing
        profile = attributes_of(loyalty)
        last = None
        if self.written is not None:
            try:
                last = self.written.get(trigger.recipient)
            except WrittenStoreError as error:
                log.warning(
                    "what was last written to Braze can't be read (%s): all is sent", error
                )
        changes = changed(profile, last.attributes if last is not None else None)
        sent = replace(trigger, attributes={**changes, **trigger.attributes})
        return replace(outgoing, trigger=sent, profile=profile)

    def _remember(self, records: list[Record], outgoing: dict[str, Outgoing]) -> None:
        """What Braze took of the loyalty attributes, so the next write sends only changes."""
        at = self.clock()
        writes = [
            Written(
                sent.trigger.recipient,
                sent.trigger.attributes_user_id or "",
                sent.profile,
                at,
                TRIGGER,
            )
            for sent in (outgoing[r.id] for r in records)
            if sent.profile is not None and sent.trigger.recipient is not None
        ]
        if writes and self.written is not None:
            try:
                self.written.put_many(writes)
            except WrittenStoreError as error:
                log.warning("what was written to Braze can't be kept (%s)", error)

    def _call(self, records: list[Record], outgoing: dict[str, Outgoing]) -> None:
        now = self.clock()
        marked = set(
            self.outbox.move(
                "sending",
                [r.id for r in records],
                now=now,
                owner=self.owner,
                lease_until=now + SEND_LEASE,
            )
        )
        mine = [r for r in records if r.id in marked]  # a claim lost to another instance
        if mine:
            self._send(mine, outgoing)

    def _send(self, records: list[Record], outgoing: dict[str, Outgoing]) -> None:
        """Records are `sending` and ours; afterwards each is sent, queued, unknown or dead."""
        kind = records[0].trigger.kind
        body = call_body([(outgoing[r.id].trigger, outgoing[r.id].properties) for r in records])
        try:
            sent = self.sender.send(kind, body)
        except BrazeNotProcessed as failure:
            self._note_rate(failure.rate)
            self._retry(records, failure)
        except BrazeOutcomeUnknown as failure:
            self._note_rate(failure.rate)
            log.warning(
                "%d triggers for %s: outcome unknown (%s); see `wallet-proxy triggers status`",
                len(records),
                records[0].trigger.target,
                loggable(failure.reason, records),
            )
            self._move("unknown", records, reason=failure.reason)
        except BrazeRejected as failure:
            self._note_rate(failure.rate)
            if failure.status == 400 and len(records) > 1:
                log.info("Braze refused a batch of %d; sending each alone", len(records))
                self._one_by_one(records, outgoing)
                return
            self._refused(records, failure.reason)
            self._move("dead", records, reason=failure.reason)
        else:
            self._note_rate(sent.rate)
            note = "; ".join(sent.notes) or (
                "queued by Braze (maintenance)" if sent.queued else ""
            )
            self._move("sent", records, dispatch_id=sent.dispatch_id, reason=note)
            self._remember(records, outgoing)

    @staticmethod
    def _refused(records: list[Record], reason: str) -> None:
        """One line for what Braze refused for good: a trigger alone names its recipient
        (hashed, logs.py), so support can find it."""
        target, reason = records[0].trigger.target, loggable(reason, records)
        if len(records) > 1:
            log.warning("%d triggers for %s refused: %s", len(records), target, reason)
            return
        recipient = records[0].trigger.recipient
        # Its id as SessionM sent it (the alias's name, the address), as `log-id` hashes it.
        to = UserRef(recipient.id) if recipient is not None else "everyone"
        log.warning("trigger %s for %s to %s refused: %s", records[0].id, target, to, reason)

    def _one_by_one(self, records: list[Record], outgoing: dict[str, Outgoing]) -> None:
        for index, record in enumerate(records):
            if self._paused():
                self._move(
                    "retry",
                    records[index:],
                    due_at=max(self.paused_until, self.clock()),
                    reason="waiting for Braze after a refused batch",
                )
                return
            now = self.clock()
            if self._move("renew", [record], lease_until=now + SEND_LEASE):
                self._send([record], outgoing)

    def _retry(self, records: list[Record], failure: BrazeNotProcessed) -> None:
        now = self.clock()
        attempts = max(r.attempts for r in records) + 1
        if failure.retry_after is not None:
            wait = failure.retry_after
        else:
            wait = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (attempts - 1)) * (0.5 + self.rng() / 2)
        due = now + wait
        # 429, a 5xx, a refused connection, a refused key: every call would fare the same.
        self.paused_until = max(self.paused_until, due)
        log.warning(
            "Braze did not take %d triggers (%s); retrying in %.1f s",
            len(records),
            loggable(failure.reason, records),
            wait,
        )
        too_old = [r for r in records if due - r.queued_at > self.max_age]
        rest = [r for r in records if due - r.queued_at <= self.max_age]
        if too_old:
            self._move("dead", too_old, reason=f"{self._too_old()}: {failure.reason}")
        self._move("retry", rest, due_at=due, reason=failure.reason)

    def _note_rate(self, rate: RateLimit) -> None:
        until = rate.exhausted_until(self.clock())
        if until is not None and until > self.paused_until:
            log.info("Braze's rate limit is used up; waiting %.0f s", until - self.clock())
            self.paused_until = until

    def _paused(self) -> bool:
        """Braze asked us to wait, or we are stopping: make no more calls now."""
        stopping = self._stop is not None and self._stop.is_set()
        return stopping or self.clock() < self.paused_until

    def _move(self, move: str, records: list[Record], **changes) -> list[str]:
        moved = self.outbox.move(
            move, [r.id for r in records], now=self.clock(), owner=self.owner, **changes
        )
        if move in COUNTED_MOVES:
            metrics.trigger_outcome(COUNTED_MOVES[move], len(moved))
        return moved
