"""Idempotency-Key for the tags relay: a repeat gets the first answer, SessionM one call.

Braze retries webhooks, and a counter tag (no `ttl`) counts every call that reaches
SessionM, so a blind retry tags a customer twice. A request with a key first claims
it (a "pending" record), calls SessionM, then stores the answer for 24 hours; a repeat
with the same key replays that answer without calling SessionM.

What is kept is decided by what SessionM can have done, which the error's class says
(errors.py has the table):

- an answer (success, unknown user, an error SessionM sent back) is final: kept;
- a refusal that changed nothing (429, 503, a refused connection, our own "busy") is
  released, so the client's retry really retries;
- no usable answer (timeout, dropped connection, other 5xx) may have been applied.
  For a counter tag it is kept like a final answer: the retry gets the same 504/502
  and SessionM is not called again, so at worst the tag is missing, never doubled.
  With a `ttl` sending again only resets the expiry, so it is released.

The pending record lives for the whole 24 hours for a counter tag (if this process
dies mid-call nobody can know whether SessionM applied it) and for a short lease with
a `ttl`. Records live in Redis when the service has it (every instance sees them),
else in this process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TLRUCache

from .errors import (
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyUnavailable,
    NotApplied,
    UpstreamServerError,
    UpstreamUnavailable,
    WalletProxyError,
    error_body,
)

log = logging.getLogger(__name__)

WINDOW = 24 * 3600
KEY_RE = re.compile(r"^[\x20-\x7e]{1,255}$")
MEMORY_ENTRIES = 100_000


@dataclass(frozen=True)
class Answer:
    """What a relay call answered, as kept for replays."""

    status: int
    body: dict
    retry_after: int | None = None

    @classmethod
    def of_error(cls, error: WalletProxyError) -> Answer:
        return cls(error.status, error_body(error), error.retry_after)


def valid_key(value: str) -> bool:
    return bool(KEY_RE.match(value))


def fingerprint(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def scope_digest(scope: tuple[str, ...]) -> str:
    """One key's record, whatever the key holds: (route, customer id, Idempotency-Key)."""
    return hashlib.sha256(json.dumps(scope).encode()).hexdigest()


def _record_key(scope: tuple[str, ...]) -> str:
    return f"wallet-proxy:idempotency:{scope_digest(scope)}"


class MemoryStore:
    """Records in this process (lost on restart): the fallback without Redis."""

    def __init__(self, maxsize: int = MEMORY_ENTRIES, timer: Callable[[], float] = time.monotonic):
        self._records: TLRUCache = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, value, now: now + value[1], timer=timer
        )
        self._lock = threading.Lock()

    def claim(self, key: str, record: dict, ttl: float) -> dict | None:
        with self._lock:
            found = self._records.get(key)
            if found is not None:
                return found[0]
            self._records[key] = (record, ttl)
            return None

    def put(self, key: str, record: dict, ttl: float) -> None:
        with self._lock:
            self._records[key] = (record, ttl)

    def release(self, key: str, token: str) -> None:
        with self._lock:
            found = self._records.get(key)
            if found is not None and found[0].get("token") == token:
                del self._records[key]


_RELEASE = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)['token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore:
    """Records in the service's Redis, so a retry landing on another instance is seen."""

    def __init__(self, client):
        self._client = client
        self._release = client.register_script(_RELEASE)

    def claim(self, key: str, record: dict, ttl: float) -> dict | None:
        import redis

        try:
            for _ in range(3):  # the found record may expire between SET NX and GET
                if self._client.set(key, json.dumps(record), nx=True, ex=max(1, int(ttl))):
                    return None
                found = self._client.get(key)
                if found is not None:
                    return json.loads(found)
        except redis.RedisError as exc:
            log.warning("idempotency store unreachable: %s", type(exc).__name__)
            raise IdempotencyUnavailable() from None
        raise IdempotencyUnavailable()

    def put(self, key: str, record: dict, ttl: float) -> None:
        self._client.set(key, json.dumps(record), ex=max(1, int(ttl)))

    def release(self, key: str, token: str) -> None:
        self._release(keys=[key], args=[token])


class Idempotency:
    """Runs a relay call at most once per (scope, Idempotency-Key) within WINDOW."""

    def __init__(self, store: MemoryStore | RedisStore, *, lease: float):
        self.store = store
        self.lease = lease

    def run(
        self, scope: tuple[str, ...], body: dict, call: Callable[[], Answer], *, resend_safe: bool
    ) -> tuple[Answer, bool]:
        """(answer, replayed). `resend_safe`: SessionM applying the body twice is harmless."""
        key = _record_key(scope)
        token = secrets.token_hex(16)
        pending = {"state": "pending", "fingerprint": fingerprint(body), "token": token}
        found = self.store.claim(key, pending, self.lease if resend_safe else WINDOW)
        if found is not None:
            if found["fingerprint"] != pending["fingerprint"]:
                raise IdempotencyConflict()
            if found["state"] == "pending":
                raise IdempotencyInProgress()
            answer = found["answer"]
            return Answer(answer["status"], answer["body"], answer.get("retry_after")), True
        try:
            answer = call()
        except WalletProxyError as error:
            if changed_nothing(error) or (resend_safe and not isinstance(error, NotApplied)):
                self._quietly(self.store.release, key, token)
            else:
                self._keep(key, pending, Answer.of_error(error))
            raise
        except BaseException:
            # A bug of ours, not an answer from SessionM: whether it was applied is unknown.
            if resend_safe:
                self._quietly(self.store.release, key, token)
            raise
        self._keep(key, pending, answer)
        return answer, False

    def _keep(self, key: str, pending: dict, answer: Answer) -> None:
        record = {
            **pending,
            "state": "done",
            "answer": {
                "status": answer.status,
                "body": answer.body,
                "retry_after": answer.retry_after,
            },
        }
        self._quietly(self.store.put, key, record, WINDOW)

    @staticmethod
    def _quietly(action: Callable, *args) -> None:
        """The answer goes out even if the store fails now; the pending record stays."""
        try:
            action(*args)
        except Exception as exc:
            log.warning("idempotency store update failed: %s", type(exc).__name__)


def changed_nothing(error: WalletProxyError) -> bool:
    """Refusals a retry should really retry: SessionM (or we) declined before doing anything,
    for now rather than for good (unlike an unknown user or a 400, which are answers)."""
    return isinstance(error, NotApplied) and isinstance(
        error, UpstreamUnavailable | UpstreamServerError
    )
