"""What a trigger is once accepted: the message to send, and the outbox's record of it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..braze_users import BrazeUser

CAMPAIGN, CANVAS = "campaign", "canvas"

# Outbox states. `queued` may carry a deliverer's claim (a lease); `sending` is written
# before the call to Braze and `sent` after it, so a crash in between leaves `sending`,
# which becomes `unknown` when its lease runs out: Braze may or may not have it.
QUEUED, SENDING, SENT, UNKNOWN, DEAD = "queued", "sending", "sent", "unknown", "dead"
STATES = (QUEUED, SENDING, SENT, UNKNOWN, DEAD)
WAITING = (QUEUED, SENDING)  # what a queue's bound counts (WALLET_PROXY_*_MAX_QUEUED)

Item = TypeVar("Item")  # what a queue of the outbox holds: a Trigger, or a webhook's tags


@dataclass(frozen=True, slots=True)
class Trigger:
    """One message for Braze: which campaign or Canvas, to whom, with which properties."""

    kind: str  # CAMPAIGN or CANVAS
    target_id: str  # the Braze campaign or Canvas id
    broadcast: bool
    recipient: BrazeUser | None  # None for a broadcast
    attributes: dict  # set on the Braze profile before the send ({} or {"email": ...})
    properties: dict  # flat, every key present; trigger_properties or context
    wallet_user_id: str | None = None  # SessionM user id, when the wallet is to be added
    # SessionM user id, when the profile is to get the loyalty attributes that changed
    attributes_user_id: str | None = None

    @property
    def target(self) -> str:
        """Triggers with the same target may share one call to Braze."""
        return f"{self.kind}:{self.target_id}"

    @property
    def recipient_index(self) -> str | None:
        """How the outbox finds a customer's triggers (BrazeUser.index); None: broadcast."""
        return self.recipient.index if self.recipient is not None else None

    @property
    def call_keys(self) -> frozenset[tuple[str, str, str]]:
        """What one Braze call may hold once only: the recipient, and every email address
        the trigger names (as its identifier or the attribute set before the send), since
        Braze dedupes "a duplicated recipient targeting the same address"."""
        if self.recipient is None:
            return frozenset()
        keys = {self.recipient.key}
        email = self.attributes.get("email")
        for address in (self.recipient.address, email.casefold() if email else None):
            if address:
                keys.add(("address", address, ""))
        return frozenset(keys)

    def to_json(self, *, canonical: bool = False) -> str:
        """`canonical`: keys sorted at every level, so equal triggers give equal text."""
        # Field by field: dataclasses.asdict deep-copies every nested property first.
        fields = {name: getattr(self, name) for name in self.__slots__}
        if self.recipient is not None:
            fields["recipient"] = self.recipient.stored()
        if self.attributes_user_id is None:  # as stored before it existed: same fingerprint
            del fields["attributes_user_id"]
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"), sort_keys=canonical)

    @classmethod
    def from_json(cls, text: str | bytes) -> Trigger:
        fields = json.loads(text)
        if fields["recipient"] is not None:
            fields["recipient"] = BrazeUser.from_stored(fields["recipient"])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Record(Generic[Item]):
    """An item in the outbox (a trigger, or a webhook's tags), with its delivery so far
    (times are epoch seconds)."""

    id: str
    item: Item
    state: str
    accepted_at: float
    queued_at: float  # when its current delivery began: accepted, or re-queued by an operator
    attempts: int = 0
    dispatch_id: str = ""
    reason: str = ""
    updated_at: float = 0.0

    @property
    def trigger(self) -> Item:
        """The item, by the name the triggers' code knows it (a Trigger in their queue)."""
        return self.item
