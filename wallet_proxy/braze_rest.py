"""Braze's REST API as every client of it meets it: one POST with a key, and what its end proves.

The trigger sends (triggers/braze.py) and the profile writes (attributes/track.py) share all
but the meaning of a 2xx, which is each endpoint's own. Every call ends in one of these,
and the exception's class says which, because Braze has no idempotency key:

- an `Answer`: a 2xx, its JSON (an object, else empty) and its rate-limit headers;
- `BrazeNotProcessed`: Braze certainly did nothing, so the same call may go again later:
  429; any 5xx (Braze's errors page: 5XX errors "indicate that no messages will be sent",
  "retry your request with exponential backoff"); 401, 403 and 404 (our key or
  BRAZE_REST_URL is wrong: "404 Not Found: Invalid URL"); a redirect; a connection
  refused or not made in time;
- `BrazeOutcomeUnknown`: Braze may have acted on it: the answer never came (a read
  timeout, the connection dropped after the body went); whether that may be sent again
  is the caller's to say;
- `BrazeRejected`: Braze will not take this request as it stands: any other 4xx.

Each answer's X-RateLimit-* headers come back with it (Braze's rate limits page: "Every
single API request sent to Braze returns" them), so a client slows down before Braze
has to say 429.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from .http import (
    AnswerTimeout,
    AnswerTooLarge,
    ConnectionRefused,
    ConnectTimeout,
    HttpClient,
    HttpFailure,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0
ANSWER_TIMEOUT = 10.0  # the whole answer, not each socket read
MAX_ANSWER_BYTES = 256 * 1024
MAX_WAIT = 3600.0  # a Retry-After or reset further away than this is not believed
POOL_SIZE = 4
# Every call with this key or URL fails alike until an operator fixes it.
WRONG_SETUP = (401, 403, 404)
SETUP_PAUSE = 60.0  # what a refused key or URL waits before the next try
MAX_SAID = 200  # characters of Braze's own words kept from an answer


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
    """Braze may have acted on it; the answer that would say so never came whole."""


class BrazeRejected(BrazeFailure):
    """Braze will not take this request as it stands; sending it again won't help until
    someone changes it."""

    may_have_applied = False


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx: its status, its JSON object ({} when it is none) and its rate-limit headers."""

    status: int
    document: dict[str, Any]
    rate: RateLimit = field(default_factory=RateLimit)

    def said(self, name: str) -> str:
        """Braze's words under `name`, cut short (an answer is outside input)."""
        return said(self.document.get(name))


def said(value: object) -> str:
    return str(value or "")[:MAX_SAID]


class BrazeRest:
    """POSTs of JSON to one Braze REST instance with one key, each call answered whole
    within `answer_timeout` of its start (connecting included), whatever Braze does.

    `setup_hint` names the settings to check when Braze refuses the key or the URL.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        setup_hint: str,
        connect_timeout: float = CONNECT_TIMEOUT,
        answer_timeout: float = ANSWER_TIMEOUT,
        pool_size: int = POOL_SIZE,
        clock=time.time,
    ):
        self.base_url = base_url.rstrip("/")
        self.setup_hint = setup_hint
        self.http = HttpClient(
            pool_size=pool_size,
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

    def post(self, path: str, body: dict) -> Answer:
        """One call; the 2xx answer, or a BrazeFailure subclass saying how far it got."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        deadline = time.monotonic() + self.answer_timeout
        try:
            answer = self.http.post(self.base_url + path, data, self._headers, deadline)
        except AnswerTooLarge as too_large:  # judged by its status alone
            return self._outcome(too_large.status, too_large.headers, b"")
        except ConnectTimeout:
            raise BrazeNotProcessed("no connection to Braze within the connect timeout") from None
        except ConnectionRefused:
            raise BrazeNotProcessed("Braze refused the connection") from None
        except AnswerTimeout:
            raise BrazeOutcomeUnknown("Braze did not answer in time") from None
        except HttpFailure:
            raise BrazeOutcomeUnknown("the connection to Braze dropped") from None
        return self._outcome(answer.status, answer.headers, answer.body)

    def _outcome(self, status: int, headers, raw: bytes) -> Answer:
        rate = RateLimit.from_headers(headers)
        try:
            document = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            document = None
        answer = Answer(status, document if isinstance(document, dict) else {}, rate)
        if 200 <= status < 300:
            return answer
        words = answer.said("message")
        about = f"Braze answered HTTP {status}" + (f": {words}" if words else "")
        if status == 429 or 500 <= status < 600:
            wait = retry_after_seconds(headers, self.clock(), rate_limited=status == 429)
            raise BrazeNotProcessed(about, status=status, retry_after=wait, rate=rate)
        if status in WRONG_SETUP or 300 <= status < 400:
            # Braze did nothing, and every call fails alike until an operator fixes it.
            log.error(
                "Braze refused this service's calls (HTTP %s): check %s", status, self.setup_hint
            )
            raise BrazeNotProcessed(about, status=status, retry_after=SETUP_PAUSE, rate=rate)
        if 400 <= status < 500:
            raise BrazeRejected(about, status=status, rate=rate)
        raise BrazeOutcomeUnknown(about, status=status, rate=rate)  # no status HTTP defines
