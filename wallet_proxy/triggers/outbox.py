"""The outbox: where an accepted trigger lives until Braze has it, and a while after.

Two backends behind one `Outbox` protocol: SQLite in WALLET_PROXY_DATA_DIR (one
instance), Redis when WALLET_PROXY_REDIS_URL is set (any instance delivers what another
accepted). Both apply the same `MOVES`, so a trigger's life is decided in one place:

    accepted -> queued --claim (lease)--> queued, owned --> sending --> sent
                  ^                            |              |   \\--> unknown (maybe sent)
                  |<-- retry / lease expired --+              \\-----> dead (final, expired)
                  |<-- operator: requeue dead, resend unknown;  unknown --mark-done--> sent

A claim is a lease: a deliverer that dies loses its claims when the lease ends and
another takes them (nothing was sent). A trigger at `sending` whose lease ends was in
flight when its deliverer died: Braze has no idempotency key, so it becomes `unknown`
rather than being sent again.

The outbox holds more than triggers: each kind of item is a `Queue` of its own (the
triggers', and the queued tags' of wallet_proxy/tags/), with the same states, moves,
leases and de-duplication. A queue's items are apart from the others' (in SQLite by the
rows' `queue` column, in Redis by the keys' prefix): each queue's worker claims, counts
and lists only its own. `for_queue` gives another queue's view of the same store.

The whole store, every queue, is bounded in bytes (WALLET_PROXY_TRIGGER_MAX_BYTES) as
well as each queue in waiting items. Each store keeps one ledger of what it holds, bytes
per part: `<queue>:<state>` for the records of each queue in each state, and `dedupe` for
the records that recognise repeats, each at what it costs that store (its `Costs`,
measured). Records in PRUNABLE_STATES are kept history, removed oldest first to make room
for a new item of any queue; every other part is held until delivered or settled, and a
new item that would take what is held past the bound is refused.

Times are epoch seconds passed in by the caller, so tests move time by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .model import DEAD, QUEUED, SENDING, SENT, UNKNOWN, Record, Trigger

SENT_RETENTION = 7 * 86_400
DEAD_RETENTION = 30 * 86_400
KEY_WINDOW = 7 * 86_400  # an Idempotency-Key answers the same trigger this long
BODY_WINDOW = 600  # an identical body without a key is the same trigger this long
BROADCASTS_PER_MINUTE = 250  # Braze's limit for broadcast calls
# Seconds an add may hold the request that brought the trigger, whatever the store does:
# past it the answer says whether the trigger was stored, or that it may have been.
ADD_BOUND = 2.0
RECENT_PER_CUSTOMER = 50
STALE_SENDING = "the deliverer stopped while sending; Braze may or may not have it"
# What a repeat answers when its trigger was pruned to make room: its dedupe record
# outlives it, so the repeat is still recognised, not stored again.
PRUNED = "pruned"

DEFAULT_MAX_BYTES = 128 * 1024 * 1024
DEDUPE_PART = "dedupe"


# Kept history, pruned in this order, oldest first within each: sent items are only a
# record; a dead letter may still be re-queued by an operator. `unknown` ones wait for an
# operator's decision and are never pruned.
PRUNABLE_STATES = (SENT, DEAD)


def state_part(queue: str, state: str) -> str:
    """The ledger's part for the items of `queue` in `state`."""
    return f"{queue}:{state}"


def prunable(part: str) -> bool:
    return part.rpartition(":")[2] in PRUNABLE_STATES


@dataclass(frozen=True, slots=True)
class Costs:
    """What a store's records cost it, in bytes, measured on that store and rounded up
    (tests/test_triggers_bounds.py holds each store to its measure).

    A trigger's record: its body plus `body_share` of it (allocator slack); where the store
    keeps rows in pages, with the row's other fields (`row_fields`), in whole shares of a
    `page`; then `per_record` (index entries, sorted-set members, the rest). A dedupe
    record: `per_dedupe`."""

    per_record: int
    per_dedupe: int
    body_share: float = 0.0
    page: int = 0
    row_fields: int = 0

    def record(self, body: str) -> int:
        size = len(body.encode())
        row = size + int(size * self.body_share) + self.row_fields
        if self.page and row < self.page:  # rows that fit share a page: their share
            row = self.page // (self.page // row)
        elif self.page:  # a longer row takes whole pages
            row = -(-row // self.page) * self.page
        return row + self.per_record


@dataclass(frozen=True, slots=True)
class Room:
    """Whether a new item of `size` bytes fits: what the ledger holds against `max_bytes`."""

    usage: dict[str, int]
    max_bytes: int

    @property
    def held(self) -> int:
        """Bytes that can't be pruned: waiting and unknown items, dedupe records."""
        return sum(n for part, n in self.usage.items() if not prunable(part))

    def fits(self, size: int) -> bool:
        return self.held + size <= self.max_bytes

    def to_prune(self, size: int) -> int:
        """Bytes of kept history to remove before `size` more fit (0: none)."""
        return max(0, sum(self.usage.values()) + size - self.max_bytes)


@dataclass(frozen=True, slots=True)
class Move:
    """One transition: from which states, to which, and whether only the claim's owner may."""

    sources: tuple[str, ...]
    target: str
    owned: bool
    counts_attempt: bool = False


MOVES = {
    # the deliverer's, on triggers it claimed
    "sending": Move((QUEUED,), SENDING, owned=True),
    # `unknown` too: a slow call may outlive its lease and still learn that Braze has it
    "sent": Move((SENDING, UNKNOWN), SENT, owned=True),
    "retry": Move((QUEUED, SENDING, UNKNOWN), QUEUED, owned=True, counts_attempt=True),
    "release": Move((QUEUED,), QUEUED, owned=True),
    # a longer lease for a trigger sent again alone after Braze refused its batch
    "renew": Move((SENDING,), SENDING, owned=True),
    "unknown": Move((SENDING,), UNKNOWN, owned=True),
    "dead": Move((QUEUED, SENDING), DEAD, owned=True),
    # the operator's
    "requeue_dead": Move((DEAD,), QUEUED, owned=False),
    "resend_unknown": Move((UNKNOWN,), QUEUED, owned=False),
    "mark_done": Move((UNKNOWN,), SENT, owned=False),
}


class Queued(Protocol):
    """What the outbox needs of an item: where it goes (items with the same target may be
    delivered together), how a customer's listing finds it, and its JSON."""

    @property
    def target(self) -> str: ...

    @property
    def recipient_index(self) -> str | None: ...

    def to_json(self) -> str: ...


@dataclass(frozen=True)
class Queue:
    """One kind of item in the outbox: its name (its rows' `queue` in SQLite, its keys'
    prefix in Redis), its ids' prefix, how its items are read back, the reason an item
    gets when its worker died while sending it, and the prefix of its de-duplication keys
    in SQLite's table, which every queue shares."""

    name: str
    id_prefix: str
    decode: Callable[[str], Any]
    stale_sending: str
    dedupe_scope: str


# The triggers' de-duplication keys have no scope: they are as they were before queues.
TRIGGERS = Queue("triggers", "trg", Trigger.from_json, STALE_SENDING, dedupe_scope="")


@dataclass(frozen=True, slots=True)
class Accepted:
    """What `add` did: the trigger's id, its state now (PRUNED for a repeat of one pruned),
    whether this call created it, and how many kept triggers it pruned to make room."""

    trigger_id: str
    state: str
    created: bool
    pruned: int = 0


@dataclass(frozen=True, slots=True)
class Dedupe:
    """How a repeat is recognised: a hashed key (Idempotency-Key or body) and its window."""

    key: str
    fingerprint: str
    window: float

    @classmethod
    def of(cls, trigger: Trigger, idempotency_key: str | None) -> Dedupe:
        fingerprint = hashlib.sha256(trigger.to_json(canonical=True).encode()).hexdigest()
        if idempotency_key is None:
            return cls(f"body:{fingerprint}", fingerprint, BODY_WINDOW)
        hashed = hashlib.sha256(idempotency_key.encode()).hexdigest()
        return cls(f"key:{hashed}", fingerprint, KEY_WINDOW)


class OutboxFull(Exception):
    """WALLET_PROXY_TRIGGER_MAX_QUEUED triggers are waiting already, or what the outbox
    holds and can't prune would pass WALLET_PROXY_TRIGGER_MAX_BYTES with this one."""


class DedupeConflict(Exception):
    """The Idempotency-Key was used with another body."""


class OutboxError(Exception):
    """The store failed (disk, Redis): nothing was accepted or changed."""


class DiskFull(OutboxError):
    """The disk holding the outbox is too full to take an item: nothing was accepted.

    What is stored is still delivered: the outbox keeps a reserve for that."""


class OutcomeUnknown(Exception):
    """The store was asked to keep an item and did not confirm it in time: the item may
    have been stored (a repeat with the same dedupe key finds it if so)."""


class Outbox(Protocol):
    """The durable store, seen through one queue (every method reads and moves that queue's
    items only). Every method is atomic; `ids` not matching a move are skipped."""

    queue: Queue

    def for_queue(self, queue: Queue) -> Outbox:
        """The same store (its connections, its file or Redis) seen through `queue`."""
        ...

    def add(
        self, item: Queued, dedupe: Dedupe | None, *, now: float, max_waiting: int
    ) -> Accepted:
        """Store durably before returning, pruning kept history to make room, within
        ADD_BOUND. Without `dedupe` no repeat is recognised. `max_waiting` bounds this
        queue's waiting items. Raises OutboxFull, DedupeConflict, OutboxError (nothing
        stored) or OutcomeUnknown (maybe stored)."""
        ...

    def claim(
        self, *, owner: str, now: float, window: float, lease: float, limit: int
    ) -> list[Record]:
        """Up to `limit` queued triggers of the target whose oldest has waited `window`.

        Expired leases are settled first (claims freed, `sending` made `unknown`).
        """
        ...

    def move(
        self,
        move: str,
        ids: Sequence[str],
        *,
        now: float,
        owner: str = "",
        due_at: float | None = None,
        lease_until: float | None = None,
        reason: str | None = None,
        dispatch_id: str | None = None,
    ) -> list[str]:
        """Apply `MOVES[move]`; returns the ids that moved."""
        ...

    def get(self, trigger_id: str) -> Record | None: ...

    def listed(self, state: str, *, limit: int) -> list[Record]:
        """Oldest first for queued states, newest first for finished ones."""
        ...

    def recent(self, recipient: str, *, limit: int = RECENT_PER_CUSTOMER) -> list[Record]:
        """A customer's latest triggers, newest first."""
        ...

    def counts(self) -> dict[str, int]: ...

    def usage(self) -> dict[str, int]:
        """The store's ledger, every queue's: bytes held per part (`<queue>:<state>`,
        `dedupe`)."""
        ...

    def checks(self) -> dict[str, str]:
        """What readiness reports about the store itself (SQLite: its disk)."""
        ...

    def oldest_queued(self) -> float | None:
        """When the longest-waiting queued trigger was accepted."""
        ...

    def take_broadcast_slot(self, *, now: float) -> float:
        """0 if a broadcast may go now (and it is counted), else seconds until one may."""
        ...

    def purge(self, *, now: float) -> int:
        """Forget sent items after SENT_RETENTION and dead ones after DEAD_RETENTION,
        and expired dedupe records; give the space back."""
        ...

    def close(self) -> None: ...


ALL_STATES = (QUEUED, SENDING, SENT, UNKNOWN, DEAD)
FINISHED = (SENT, UNKNOWN, DEAD)
