"""The bytes Braze gets for a lookup, memoised while they can't change.

A cached wallet's answer only changes when one of its offers expires, when the
UTC day turns (days left) or when it goes stale; until then the same bytes are
served again. That is what keeps cache hits close to a bare Flask view.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime

from cachetools import LRUCache

from .service import Lookup
from .wallet import answer_changes_at, wallet_answer


def render_uncached(lookup: Lookup, now: datetime, limit: int | None) -> bytes:
    body = wallet_answer(lookup.wallet, now, limit=limit, stale=lookup.stale)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class AnswerMemo:
    def __init__(self, maxsize: int = 4096):
        self._answers: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()

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
        body = render_uncached(lookup, now, limit)
        with self._lock:
            self._answers[key] = (lookup.wallet, now, answer_changes_at(lookup.wallet, now), body)
        return body
