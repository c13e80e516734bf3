"""HTTP to Braze's API-triggered sends: `/campaigns/trigger/send` and `/canvas/trigger/send`.

This module knows the send endpoints' bodies and what their 2xx means, and nothing of the
outbox; the call itself and every other answer are braze_rest.py's, whose failure classes
say what a failed call proves. Braze has no idempotency key, and sending again what it
already took messages a customer twice, so a 2xx is one of three things:

- `Sent`: its message is `success` or `queued` (maintenance), without a `notice`;
- `BrazeRejected`: a `notice`, which is how Braze says a campaign or Canvas is paused,
  stopped or archived ("the Canvas is not sent through this endpoint"), as for any 4xx
  other than 401, 403, 404 and 429 (a bad body, or a campaign id Braze doesn't know:
  `400 Invalid Campaign ID`);
- `BrazeOutcomeUnknown`: a 2xx we can't read: it may have been delivered, so it is never
  sent again by itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..braze_rest import (
    ANSWER_TIMEOUT,
    CONNECT_TIMEOUT,
    Answer,
    BrazeOutcomeUnknown,
    BrazeRejected,
    BrazeRest,
    RateLimit,
    said,
)
from .model import CAMPAIGN, Trigger

PATHS = {CAMPAIGN: "/campaigns/trigger/send", "canvas": "/canvas/trigger/send"}
MAX_RECIPIENTS = 50


@dataclass(frozen=True, slots=True)
class Sent:
    dispatch_id: str
    queued: bool  # Braze said `queued` (maintenance) rather than `success`
    notes: tuple[str, ...] = ()  # Braze's non-fatal `errors`
    rate: RateLimit = field(default_factory=RateLimit)


def recipient_entry(trigger: Trigger, properties: dict) -> dict:
    name = "trigger_properties" if trigger.kind == CAMPAIGN else "context"
    assert trigger.recipient is not None, "a broadcast has no recipients"
    entry: dict = {**trigger.recipient.recipient_fields(), name: properties}
    if trigger.attributes:
        entry["attributes"] = trigger.attributes
    return entry


def call_body(triggers: list[tuple[Trigger, dict]]) -> dict:
    """One call's body: a broadcast alone, or up to 50 recipients of one campaign or Canvas.

    Each pair is a trigger and its properties as sent (the wallet may have been added).
    """
    first = triggers[0][0]
    id_name = "campaign_id" if first.kind == CAMPAIGN else "canvas_id"
    if first.broadcast:
        if len(triggers) != 1:
            raise ValueError("a broadcast goes alone")
        name = "trigger_properties" if first.kind == CAMPAIGN else "context"
        return {id_name: first.target_id, "broadcast": True, name: triggers[0][1]}
    if len(triggers) > MAX_RECIPIENTS or any(t.target != first.target for t, _ in triggers):
        raise ValueError("at most 50 recipients of one campaign or Canvas")
    return {
        id_name: first.target_id,
        "recipients": [recipient_entry(trigger, props) for trigger, props in triggers],
    }


class BrazeClient:
    """Trigger sends with the trigger-send key (BRAZE_REST_API_KEY)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        answer_timeout: float = ANSWER_TIMEOUT,
        clock=time.time,
    ):
        self.rest = BrazeRest(
            base_url,
            api_key,
            setup_hint="BRAZE_REST_*",
            connect_timeout=connect_timeout,
            answer_timeout=answer_timeout,
            clock=clock,
        )

    def close(self) -> None:
        self.rest.close()

    def send(self, kind: str, body: dict) -> Sent:
        """One call; raises a BrazeFailure subclass unless Braze took it."""
        return _sent(self.rest.post(PATHS[kind], body))


def _sent(answer: Answer) -> Sent:
    notice = answer.said("notice")
    if notice:  # e.g. "The Canvas is paused. Resume the Canvas to ensure ..."
        raise BrazeRejected(notice, status=answer.status, rate=answer.rate)
    message = answer.said("message")
    if message.lower() in ("success", "queued"):
        return Sent(
            dispatch_id=str(answer.document.get("dispatch_id") or "")[:128],
            queued=message.lower() == "queued",
            notes=_notes(answer.document.get("errors")),
            rate=answer.rate,
        )
    raise BrazeOutcomeUnknown(
        f"Braze answered HTTP {answer.status} without success: {message or 'no message'}",
        status=answer.status,
        rate=answer.rate,
    )


def _notes(errors: object) -> tuple[str, ...]:
    if not isinstance(errors, list):
        return ()
    return tuple(said(error) for error in errors[:10])
