"""The bytes Braze gets for a lookup, memoised while they can't change.

A cached wallet's answer only changes when one of its offers expires, when the
UTC day turns (days left) or when it goes stale; until then the same bytes are
served again. That is what keeps cache hits close to a bare Flask view.

The memo refers to each wallet weakly: a wallet the cache let go is not kept alive by
its answers, and the answers' own bytes are bounded (`max_bytes`, a share of
WALLET_PROXY_CACHE_MAX_BYTES).

Braze drops a Connected Content answer over 1 MB (neither inserted nor cached),
so an answer never exceeds `max_bytes`: past it, offers are cut from the end of
the live view (the latest-expiring go first), `offer_count` still counts every
live offer and `offers_truncated` says so.
"""

from __future__ import annotations

import json
import threading
import weakref
from datetime import datetime
from typing import NamedTuple

from cachetools import LRUCache

from .memory import RENDERS_AT_ONCE
from .wallet import Wallet, answer_changes_at, answer_parts, offer_answer
from .wallet_service import Lookup

MAX_ANSWER_BYTES = 1_000_000  # the default of WALLET_PROXY_MAX_ANSWER_BYTES: Braze's limit
MEMO_OVERHEAD = 512  # what a memoised answer takes besides its bytes: key, record, bookkeeping


def _encode(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def render_uncached(
    lookup: Lookup, now: datetime, limit: int | None, max_bytes: int = MAX_ANSWER_BYTES
) -> bytes:
    """The answer, at most `max_bytes`: the longest run of its first (soonest-expiring)
    offers that fits. Offers are encoded one at a time until the next would not fit, so a
    render holds at most an answer's bytes, however large the wallet."""
    body, shown = answer_parts(lookup.wallet, now, limit=limit, stale=lookup.stale)
    whole_room = max_bytes - len(_encode(body))  # with no offers, and offers_truncated false
    cut_room = whole_room + 1  # `true` is a byte shorter than `false`
    encoded: list[bytes] = []
    used = 0
    for offer in shown:
        piece = _encode(offer_answer(offer, now))
        size = len(piece) + (1 if encoded else 0)  # and a comma after the first
        if used + size > cut_room:
            break
        encoded.append(piece)
        used += size
    truncated = len(encoded) < len(shown) or used > whole_room
    if truncated and len(encoded) == len(shown):
        # All of them fit only because `true` is a byte shorter than `false`: one goes, so
        # that `offers_truncated` is true to its word.
        encoded.pop()
    return _joined({**body, "offers_truncated": truncated}, b"[" + b",".join(encoded) + b"]")


def _joined(body: dict, offers: bytes) -> bytes:
    """`_encode(body)`, with `offers` (encoded already) as its offers."""
    items = (
        _encode(name) + b":" + (offers if name == "offers" else _encode(value))
        for name, value in body.items()
    )
    return b"{" + b",".join(items) + b"}"


class _Memo(NamedTuple):
    wallet: weakref.ref[Wallet]
    since: datetime
    until: datetime
    body: bytes


class AnswerMemo:
    """Answers by wallet (weakly), limit and staleness, at most `max_bytes` of them."""

    def __init__(self, *, max_bytes: int, max_answer_bytes: int = MAX_ANSWER_BYTES):
        self._answers: LRUCache[tuple[int, int | None, bool], _Memo] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda memo: MEMO_OVERHEAD + len(memo.body)
        )
        self._lock = threading.Lock()
        self._rendering = threading.BoundedSemaphore(RENDERS_AT_ONCE)
        self.max_bytes = max_bytes
        self.max_answer_bytes = max_answer_bytes

    def render(self, lookup: Lookup, now: datetime, limit: int | None) -> bytes:
        # Keyed by the wallet object itself (cached wallets are shared objects); the
        # identity check guards against a recycled id().
        key = (id(lookup.wallet), limit, lookup.stale)
        memo = self._memo(key, lookup, now)
        if memo is not None:
            return memo
        with self._rendering:
            # Another thread may have rendered the same answer while this one waited.
            memo = self._memo(key, lookup, now)
            if memo is not None:
                return memo
            body = render_uncached(lookup, now, limit, self.max_answer_bytes)
        made = _Memo(weakref.ref(lookup.wallet), now, answer_changes_at(lookup.wallet, now), body)
        if MEMO_OVERHEAD + len(body) <= self.max_bytes:
            with self._lock:
                self._answers[key] = made
        return body

    def _memo(
        self, key: tuple[int, int | None, bool], lookup: Lookup, now: datetime
    ) -> bytes | None:
        with self._lock:
            memo = self._answers.get(key)
        if memo is not None and memo.wallet() is lookup.wallet and memo.since <= now < memo.until:
            return memo.body
        return None

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return int(self._answers.currsize)
