"""A customer's wallet summary for a trigger (`"enrich": ["wallet"]`), at the lowest priority.

From the wallet service, so its cache and its SessionM budget are shared with Braze's
Connected Content calls, which come first: a cached wallet (even stale) is used as is,
and SessionM is asked at the REFRESH priority, only with room to spare in the budget
and in the service's SessionM slots. Otherwise, or on any failure, there is no summary
and the trigger goes with -1.
"""

from __future__ import annotations

import logging

from ..budget import Priority
from ..errors import WalletProxyError
from ..wallet import Wallet, live_view
from ..wallet_service import WalletService

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
        cached = self.service.peek(user_id, self.culture)
        if cached is not None and cached.wallet is not None:
            return self._of(cached.wallet)
        lookup = self.service.lookup(user_id, self.culture, priority=Priority.REFRESH)
        return self._of(lookup.wallet)

    def _of(self, wallet: Wallet) -> tuple[int, int]:
        return wallet.available_points, len(live_view(wallet, self.service.clock()).live)
