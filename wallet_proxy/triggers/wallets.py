"""A customer's loyalty for a trigger (`"enrich": ["wallet"]` or `["attributes"]`), at the
lowest priority.

From the wallet service, so its cache and its SessionM budget are shared with Braze's
Connected Content calls, which come first: a cached wallet (even stale) is used as is,
and SessionM is asked at the REFRESH priority, only with room to spare in the budget
and in the service's SessionM slots. Otherwise, or on any failure, there is none: the
trigger goes with -1 for the wallet summary and without loyalty attributes.
"""

from __future__ import annotations

import logging

from ..attributes.values import Loyalty, loyalty_of
from ..budget import Priority
from ..errors import WalletProxyError
from ..wallet_service import WalletService

log = logging.getLogger(__name__)


class ServiceWallets:
    def __init__(self, service: WalletService, culture: str):
        self.service = service
        self.culture = culture

    def loyalty(self, user_id: str) -> Loyalty | None:
        try:
            return self._loyalty(user_id)
        except WalletProxyError:
            return None
        except Exception:
            log.exception("a customer's loyalty for a trigger failed")
            return None

    def _loyalty(self, user_id: str) -> Loyalty:
        cached = self.service.peek(user_id, self.culture)
        if cached is not None and cached.wallet is not None:
            wallet = cached.wallet
        else:
            wallet = self.service.lookup(user_id, self.culture, priority=Priority.REFRESH).wallet
        return loyalty_of(wallet, self.service.clock())
