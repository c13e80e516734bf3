"""Per-process wallet cache: what SessionM said, kept for WALLET_PROXY_CACHE_TTL seconds.

It holds Wallets (with their fetch time), never rendered answers, so expiry is
still decided when each answer is made. Only successes are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

from cachetools import TTLCache

from .wallet import Wallet


class MemoryCache:
    def __init__(self, *, ttl: float, maxsize: int, timer: Callable[[], float]):
        self._entries: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl, timer=timer)
        self._lock = threading.Lock()  # TTLCache is not thread-safe on its own.

    def get(self, key: Hashable) -> Wallet | None:
        with self._lock:
            return self._entries.get(key)

    def set(self, key: Hashable, wallet: Wallet) -> None:
        if self._entries.ttl <= 0:
            return
        with self._lock:
            self._entries[key] = wallet

    def usable(self) -> bool:
        return True
