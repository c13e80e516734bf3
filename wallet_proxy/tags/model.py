"""What a queued webhook is: one customer's tagging, and its queue in the outbox.

A webhook's tags live in the outbox the triggers use (triggers/outbox.py), as a queue of
their own: the same states and moves, except that the outbox's `sent` means, for tags,
that SessionM applied them (`applied` wherever people or Braze read it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..triggers.model import SENT
from ..triggers.outbox import Queue

# Core's tags have no batch call: every tagging is its own call, all in one target.
TARGET = "sessionm-core:tags"
APPLIED = "applied"
STALE_APPLYING = "the tags worker stopped while applying them; SessionM may or may not have them"


@dataclass(frozen=True, slots=True)
class Tagging:
    """One webhook's ask: these tags on this customer, expiring after `ttl` seconds, or
    counters (`ttl` None: SessionM adds one for every call that reaches it)."""

    user_id: str  # a SessionM user id, or an external id when `external`
    external: bool
    tags: tuple[str, ...]
    ttl: int | None

    @property
    def target(self) -> str:
        return TARGET

    @property
    def recipient_index(self) -> str:
        """How the support page finds a customer's taggings: the id as Braze sent it."""
        return self.user_id

    @property
    def id_type(self) -> str:
        return "external" if self.external else "user"

    def body(self) -> dict:
        """The webhook's body as the rules read it: what an Idempotency-Key is bound to."""
        return {"tags": list(self.tags), "ttl": self.ttl}

    def key_scope(self, idempotency_key: str) -> tuple[str, str, str]:
        """Keys count per route and customer, so Braze's one key per send is enough."""
        return ("external-users" if self.external else "users", self.user_id, idempotency_key)

    def answer(self) -> dict:
        """What the relay answers about it, in both modes."""
        return {"id_type": self.id_type, "id": self.user_id, **self.body()}

    def to_json(self) -> str:
        fields = {"user_id": self.user_id, "external": self.external, "ttl": self.ttl}
        return json.dumps({**fields, "tags": list(self.tags)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Tagging:
        found = json.loads(text)
        return cls(found["user_id"], found["external"], tuple(found["tags"]), found["ttl"])


TAGS = Queue("tags", "tag", Tagging.from_json, STALE_APPLYING, dedupe_scope="tags:")


def state_word(state: str) -> str:
    """A queued tagging's state as people and Braze read it: `applied` for the outbox's `sent`."""
    return APPLIED if state == SENT else state
