"""The bytes Braze gets for a lookup, memoised while they can't change.

A cached wallet's answer only changes when one of its offers expires, when the
UTC day turns (days left) or when it goes stale; until then the same bytes are
served again. That is what keeps cache hits close to a bare Flask view.

Braze drops a Connected Content answer over 1 MB (neither inserted nor cached),
so an answer never exceeds `max_bytes`: past it, offers are cut from the end of
the live view (the latest-expiring go first), `offer_count` still counts every
live offer and `offers_truncated` says so.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime

from cachetools import LRUCache

from .wallet import answer_changes_at, wallet_answer
from .wallet_service import Lookup

MAX_ANSWER_BYTES = 1_000_000  # the default of WALLET_PROXY_MAX_ANSWER_BYTES: Braze's limit


def _encode(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def render_uncached(
    lookup: Lookup, now: datetime, limit: int | None, max_bytes: int = MAX_ANSWER_BYTES
) -> bytes:
    body = wallet_answer(lookup.wallet, now, limit=limit, stale=lookup.stale)
    encoded = _encode(body)
    if len(encoded) <= max_bytes:
        return encoded
    return _encode(_cut_to_fit(body, max_bytes))


def _cut_to_fit(body: dict, max_bytes: int) -> dict:
    """The answer with the longest run of its first (soonest-expiring) offers that fits."""
    cut = {**body, "offers": [], "offers_truncated": True}
    room = max_bytes - len(_encode(cut))
    kept = 0
    for offer in body["offers"]:
        size = len(_encode(offer)) + (1 if kept else 0)  # and a comma after the first
        if size > room:
            break
        room -= size
        kept += 1
    # All of them may fit only because `true` is a byte shorter than `false`: then one goes,
    # so that `offers_truncated` is true to its word.
    cut["offers"] = body["offers"][: min(kept, len(body["offers"]) - 1)]
    return cut


class AnswerMemo:
    def __init__(self, maxsize: int = 4096, max_bytes: int = MAX_ANSWER_BYTES):
        self._answers: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self.max_bytes = max_bytes

    def render(self, lookup: Lookup, now: datetime, limit: int | None) -> bytes:
        # Keyed by the wallet object itself (cached wallets are shared objects); the
        # identity check guards against a recycled id().
        key = (id(lookup.wallet), limit, lookup.stale)
        with self._lock:
            memo = self._answers.get(key)
        if memo is not None:
            wallet, since, until, body = memo
            if wallet is lookup.wallet and since <= now < until:
                return body
        body = render_uncached(lookup, now, limit, self.max_bytes)
        with self._lock:
            self._answers[key] = (lookup.wallet, now, answer_changes_at(lookup.wallet, now), body)
        return body
