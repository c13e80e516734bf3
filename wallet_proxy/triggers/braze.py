"""HTTP to Braze's API-triggered sends: `/campaigns/trigger/send` and `/canvas/trigger/send`.

This module knows Braze's wire format and nothing of the outbox. Every way a call can
end is one of four things, and the exception's class says which, because Braze has
no idempotency key and sending again what it already took messages a customer twice:

- `Sent`: a 2xx whose message is `success` or `queued` (maintenance), without a `notice`;
- `BrazeNotProcessed`: Braze certainly did nothing, so the same call may go again later:
  429; any 5xx (Braze's errors page: 5XX errors "indicate that no messages will be sent",
  "retry your request with exponential backoff"); 401, 403 and 404 (our key or
  BRAZE_REST_URL is wrong: "404 Not Found: Invalid URL"); a redirect; a connection
  refused or not made in time;
- `BrazeOutcomeUnknown`: it may have been delivered: the answer never came (a read
  timeout, the connection dropped after the body went), or a 2xx we can't read; never
  sent again by itself;
- `BrazeRejected`: Braze will not send this request as it stands: another 4xx (a bad
  body, or a campaign id Braze doesn't know: `400 Invalid Campaign ID`), or a 2xx with a
  `notice`, which is how Braze says a campaign or Canvas is paused, stopped or archived
  ("the Canvas is not sent through this endpoint").

Each answer's rate-limit headers come back with it, so the deliverer slows down before
Braze has to say 429.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from ..http import (
    AnswerTimeout,
    AnswerTooLarge,
    ConnectionRefused,
    ConnectTimeout,
    HttpClient,
    HttpFailure,
)
from .model import CAMPAIGN, Trigger

log = logging.getLogger(__name__)

PATHS = {CAMPAIGN: "/campaigns/trigger/send", "canvas": "/canvas/trigger/send"}
MAX_RECIPIENTS = 50
CONNECT_TIMEOUT = 3.0
ANSWER_TIMEOUT = 10.0  # the whole answer, not each socket read
MAX_ANSWER_BYTES = 256 * 1024
MAX_WAIT = 3600.0  # a Retry-After or reset further away than this is not believed
POOL_SIZE = 4


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Braze's X-RateLimit-* headers (reset as epoch seconds); None when absent or garbled."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None

    @classmethod
    def from_headers(cls, headers) -> RateLimit:
        return cls(
            _number(headers.get("X-RateLimit-Limit")),
            _number(headers.get("X-RateLimit-Remaining")),
            _number(headers.get("X-RateLimit-Reset")),
        )

    def exhausted_until(self, now: float) -> float | None:
        """When calls may resume, if this answer used the last one before the reset."""
        spent = self.remaining is not None and self.remaining <= 0
        if spent and self.reset is not None and now < self.reset <= now + MAX_WAIT:
            return self.reset
        return None


def _number(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except (ValueError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class Sent:
    dispatch_id: str
    queued: bool  # Braze said `queued` (maintenance) rather than `success`
    notes: tuple[str, ...] = ()  # Braze's non-fatal `errors`
    rate: RateLimit = field(default_factory=RateLimit)


class BrazeFailure(Exception):
    """A call Braze did not take. The subclass says whether it may have acted on it."""

    may_have_applied = True

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        rate: RateLimit | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.rate = rate or RateLimit()


class BrazeNotProcessed(BrazeFailure):
    """Braze did nothing with this call; the same call may be sent again later."""

    may_have_applied = False


class BrazeOutcomeUnknown(BrazeFailure):
    """Braze may have delivered it; sending it again could message the customer twice."""


class BrazeRejected(BrazeFailure):
    """Braze will not send this request as it stands (a 4xx, or a 2xx with a notice of a
    paused campaign or Canvas); sending it again won't help until someone changes that."""

    may_have_applied = False


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


def retry_after_seconds(headers, now: float, *, rate_limited: bool = True) -> float | None:
    """Retry-After (seconds or an HTTP date), else for a 429 X-RateLimit-Reset; else None."""
    value = headers.get("Retry-After")
    wait: float | None = None
    if value:
        try:
            wait = float(value)
        except ValueError:
            try:
                wait = parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError, IndexError, OverflowError):
                wait = None
    if wait is None and rate_limited:
        reset = RateLimit.from_headers(headers).reset
        wait = reset - now if reset is not None else None
    if wait is None or wait != wait:  # NaN
        return None
    return min(max(wait, 0.0), MAX_WAIT)


class BrazeClient:
    """POSTs to one Braze REST endpoint with the trigger-send key, each call answered whole
    within `answer_timeout` of its start (connecting included), whatever Braze does."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        answer_timeout: float = ANSWER_TIMEOUT,
        clock=time.time,
    ):
        self.base_url = base_url.rstrip("/")
        self.http = HttpClient(
            pool_size=POOL_SIZE,
            connect_timeout=connect_timeout,
            read_timeout=answer_timeout,
            max_body_bytes=MAX_ANSWER_BYTES,
        )
        self.answer_timeout = answer_timeout
        self.clock = clock
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def close(self) -> None:
        self.http.close()

    def send(self, kind: str, body: dict) -> Sent:
        """One call; raises a BrazeFailure subclass unless Braze took it."""
        url = self.base_url + PATHS[kind]
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            answer = self.http.post(
                url, data, self._headers, time.monotonic() + self.answer_timeout
            )
        except AnswerTooLarge as too_large:  # judged by its status alone
            return _outcome(too_large.status, too_large.headers, b"", self.clock())
        except ConnectTimeout:
            raise BrazeNotProcessed("no connection to Braze within the connect timeout") from None
        except ConnectionRefused:
            raise BrazeNotProcessed("Braze refused the connection") from None
        except AnswerTimeout:
            raise BrazeOutcomeUnknown("Braze did not answer in time") from None
        except HttpFailure:
            raise BrazeOutcomeUnknown("the connection to Braze dropped") from None
        return _outcome(answer.status, answer.headers, answer.body, self.clock())


def _outcome(status: int, headers, raw: bytes, now: float) -> Sent:
    rate = RateLimit.from_headers(headers)
    try:
        document = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        document = None
    document = document if isinstance(document, dict) else {}
    said = _said(document.get("message"))
    if 200 <= status < 300:
        message = said.lower()
        notice = _said(document.get("notice"))
        if notice:  # e.g. "The Canvas is paused. Resume the Canvas to ensure ..."
            raise BrazeRejected(notice, status=status, rate=rate)
        if message in ("success", "queued"):
            return Sent(
                dispatch_id=str(document.get("dispatch_id") or "")[:128],
                queued=message == "queued",
                notes=_notes(document.get("errors")),
                rate=rate,
            )
        raise BrazeOutcomeUnknown(
            f"Braze answered HTTP {status} without success: {said or 'no message'}",
            status=status,
            rate=rate,
        )
    about = f"Braze answered HTTP {status}" + (f": {said}" if said else "")
    if status == 429 or 500 <= status < 600:
        wait = retry_after_seconds(headers, now, rate_limited=status == 429)
        raise BrazeNotProcessed(about, status=status, retry_after=wait, rate=rate)
    if status in (401, 403, 404) or 300 <= status < 400:
        # Our key or BRAZE_REST_URL is wrong: every call fails alike until an operator fixes
        # it, and Braze did nothing, so the triggers wait rather than die.
        log.error("Braze refused this service's calls (HTTP %s): check BRAZE_REST_*", status)
        raise BrazeNotProcessed(about, status=status, retry_after=60.0, rate=rate)
    if 400 <= status < 500:
        raise BrazeRejected(about, status=status, rate=rate)
    raise BrazeOutcomeUnknown(about, status=status, rate=rate)  # no status HTTP defines


def _said(value: object) -> str:
    """Braze's words from an answer, cut short (an answer is outside input)."""
    return str(value or "")[:200]


def _notes(errors: object) -> tuple[str, ...]:
    if not isinstance(errors, list):
        return ()
    return tuple(str(error)[:200] for error in errors[:10])
