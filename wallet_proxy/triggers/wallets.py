"""A customer's wallet summary for a trigger (`"enrich": ["wallet"]`), at the lowest priority.

From the wallet service, so its cache and its SessionM budget are shared with Braze's
Connected Content calls, which come first: a cached wallet (even stale) is used as is,
and SessionM is only asked while at least half of the service's SessionM slots are free.
Otherwise, or on any failure, there is no summary and the trigger goes with -1.
"""

from __future__ import annotations

import logging

from ..errors import WalletProxyError
from ..service import WalletService
from ..wallet import Wallet, live_view

log = logging.getLogger(__name__)


class ServiceWallets:
    def __init__(self, service: WalletService, culture: str):
        self.service = service
        self.culture = culture

    def summary(self, user_id: str) -> tuple[int, int] | None:
        try:
            return self._summary(user_id)
        except WalletProxyError:
            return None
        except Exception:
            log.exception("wallet summary for a trigger failed")
            return None

    def _summary(self, user_id: str) -> tuple[int, int] | None:
        service = self.service
        cached = service.cache.get(service.key(user_id, self.culture))
        if cached is not None and cached.wallet is not None:
            return self._of(cached.wallet)
        guard = service.guard
        if guard.in_flight * 2 >= guard.concurrency:
            return None  # Braze's own wallet calls need the slots more
        return self._of(service.lookup(user_id, self.culture).wallet)

    def _of(self, wallet: Wallet) -> tuple[int, int]:
        return wallet.available_points, len(live_view(wallet, self.service.clock()).live)
