"""The direct relay (WALLET_PROXY_TAGS_MODE=direct): SessionM Core is called while Braze
waits, and its answer is Braze's, so Braze's webhook log shows what SessionM said.

Core's budget is asked first, waiting at most half of WALLET_PROXY_CORE_TIMEOUT so the
call keeps the rest; a refusal is a 503 with the budget queue's Retry-After, and releases
the Idempotency-Key. With a key, idempotency.py makes it one SessionM call per key.
"""

from __future__ import annotations

import time

from ..budget import Claim, Priority
from ..container import Services
from ..idempotency import Answer
from .model import Tagging


def relay(found: Services, tagging: Tagging, idempotency_key: str | None) -> tuple[Answer, bool]:
    """(SessionM's answer, whether it is a replay of an earlier request's)."""

    def call() -> Answer:
        assert found.core is not None  # the route needs Core (views.py)
        started = time.monotonic()
        timeout = found.settings.core_timeout
        found.core_budget.acquire(Claim(Priority.WAITING, started + timeout / 2))
        found.core.add_tags(
            tagging.user_id,
            list(tagging.tags),
            tagging.ttl,
            external=tagging.external,
            deadline=started + timeout,
        )
        return Answer(200, tagging.answer())

    if idempotency_key is None:
        return call(), False
    scope, body = tagging.key_scope(idempotency_key), tagging.body()
    assert found.idempotency is not None  # the direct relay's, built with Core
    return found.idempotency.run(scope, body, call, resend_safe=tagging.ttl is not None)
