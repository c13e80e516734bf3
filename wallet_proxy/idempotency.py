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
a `ttl`. Records live in a store every worker shares (stores.py): Redis when the service
has it (every instance sees them), else `idempotency.sqlite3` in the data folder (every
worker of the instance sees them), so a retry that lands on another worker is replayed.
A claim the store can't make is refused (503), never risked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .errors import (
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyUnavailable,
    NotApplied,
    StoreUnavailable,
    UpstreamServerError,
    UpstreamUnavailable,
    WalletProxyError,
    error_body,
)
from .stores import SharedStore

log = logging.getLogger(__name__)

WINDOW = 24 * 3600
KEY_RE = re.compile(r"^[\x20-\x7e]{1,255}$")
DATABASE = "idempotency.sqlite3"  # in the data folder, without Redis
REDIS_PREFIX = "wallet-proxy:idempotency"


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


class Idempotency:
    """Runs a relay call at most once per (scope, Idempotency-Key) within WINDOW."""

    def __init__(self, store: SharedStore, *, lease: float):
        self.store = store
        self.lease = lease

    def run(
        self, scope: tuple[str, ...], body: dict, call: Callable[[], Answer], *, resend_safe: bool
    ) -> tuple[Answer, bool]:
        """(answer, replayed). `resend_safe`: SessionM applying the body twice is harmless."""
        key = scope_digest(scope)
        pending = {"state": "pending", "fingerprint": fingerprint(body)}
        claim = json.dumps({**pending, "token": secrets.token_hex(16)})
        try:
            text = self.store.add(key, claim, ttl=self.lease if resend_safe else WINDOW)
        except StoreUnavailable:
            log.warning("idempotency store unreachable")
            raise IdempotencyUnavailable() from None
        if text is not None:
            found = json.loads(text)
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
                self._quietly(self.store.delete_if, key, claim)
            else:
                self._keep(key, pending, Answer.of_error(error))
            raise
        except BaseException:
            # A bug of ours, not an answer from SessionM: whether it was applied is unknown.
            if resend_safe:
                self._quietly(self.store.delete_if, key, claim)
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
        self._quietly(self.store.put, key, json.dumps(record), ttl=WINDOW)

    @staticmethod
    def _quietly(action: Callable, *args, **kwargs) -> None:
        """The answer goes out even if the store fails now; the pending record stays."""
        try:
            action(*args, **kwargs)
        except Exception as exc:
            log.warning("idempotency store update failed: %s", type(exc).__name__)


def changed_nothing(error: WalletProxyError) -> bool:
    """Refusals a retry should really retry: SessionM (or we) declined before doing anything,
    for now rather than for good (unlike an unknown user or a 400, which are answers)."""
    return isinstance(error, NotApplied) and isinstance(
        error, UpstreamUnavailable | UpstreamServerError
    )
