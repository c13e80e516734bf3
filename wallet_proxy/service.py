"""Getting a wallet for a user: from the cache when it can, from SessionM when it must.

The one entry point every consumer shares (API, support pages, warm-up), so
they all see the same cache and the same upstream rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .cache import MemoryCache
from .sessionm import ConnectClient
from .wallet import Wallet

HIT, MISS, STALE = "HIT", "MISS", "STALE"


@dataclass(frozen=True, slots=True)
class Lookup:
    """A wallet and how it was obtained (the X-Cache value)."""

    wallet: Wallet
    cache: str  # HIT, MISS or STALE

    @property
    def stale(self) -> bool:
        return self.cache == STALE

    def age(self, now: datetime) -> int:
        return max(0, int((now - self.wallet.fetched_at).total_seconds()))


class WalletService:
    def __init__(
        self,
        *,
        client: ConnectClient,
        cache: MemoryCache,
        retailer_id: str,
        deadline: float,
        clock: Callable[[], datetime],
    ):
        self.client = client
        self.cache = cache
        self.retailer_id = retailer_id
        self.deadline = deadline
        self.clock = clock

    def key(self, user_id: str, culture: str) -> tuple[str, str, str]:
        return (self.retailer_id, culture, user_id)

    def lookup(self, user_id: str, culture: str, *, refresh: bool = False) -> Lookup:
        key = self.key(user_id, culture)
        if not refresh:
            cached = self.cache.get(key)
            if cached is not None:
                return Lookup(cached, HIT)
        wallet = self.client.fetch_wallet(
            user_id, culture, deadline=time.monotonic() + self.deadline
        )
        self.cache.set(key, wallet)
        return Lookup(wallet, MISS)
