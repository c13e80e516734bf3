"""Who on staff looked at or refreshed a customer's wallet, and when: the last few.

"Did someone already refresh this?" is a question agents ask each other; the
wallet page answers it. Kept per customer in the shared store (every worker sees
it): the newest `KEEP` actions of the last `KEEP_SECONDS`. Braze's own calls are
not recorded, only what staff did on these pages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import StoreUnavailable
from ..stores import SharedStore

log = logging.getLogger(__name__)

LOOKUP, REFRESH = "lookup", "refresh"
KEEP = 20
KEEP_SECONDS = 7 * 86_400
# Paging, filtering or reloading within this of the same agent's last action on the
# customer is the same visit, not another lookup.
SAME_VISIT_SECONDS = 300


@dataclass(frozen=True, slots=True)
class StaffAction:
    at: datetime
    staff: str
    action: str  # LOOKUP or REFRESH
    culture: str

    def dumps(self) -> str:
        return json.dumps(
            {
                "at": self.at.timestamp(),
                "staff": self.staff,
                "action": self.action,
                "culture": self.culture,
            }
        )

    @classmethod
    def loads(cls, text: str) -> StaffAction:
        data = json.loads(text)
        at = datetime.fromtimestamp(data["at"], UTC)
        return cls(at, data["staff"], data["action"], data["culture"])


class StaffHistory:
    def __init__(self, store: SharedStore, clock: Callable[[], datetime]):
        self.store = store
        self.clock = clock

    @staticmethod
    def _key(user_id: str) -> str:
        return f"history:{user_id}"

    def recent(self, user_id: str) -> list[StaffAction]:
        """Newest first."""
        return [
            StaffAction.loads(item)
            for item in self.store.recent(self._key(user_id), ttl=KEEP_SECONDS)
        ]

    def record(self, user_id: str, staff: str, action: str, culture: str) -> StaffAction:
        done = StaffAction(self.clock(), staff, action, culture)
        self.store.append(self._key(user_id), done.dumps(), keep=KEEP, ttl=KEEP_SECONDS)
        return done

    def refreshed(self, user_id: str, staff: str, culture: str) -> None:
        try:
            self.record(user_id, staff, REFRESH, culture)
        except StoreUnavailable:
            log.warning("staff history unavailable: a refresh was not recorded")

    def visit(self, user_id: str, staff: str, culture: str) -> list[StaffAction] | None:
        """Record a lookup (unless it continues the same visit); the history after it.

        None when the store is unavailable: the page is still worth showing without it.
        """
        try:
            actions = self.recent(user_id)
            latest = actions[0] if actions else None
            same_visit = (
                latest is not None
                and latest.staff == staff
                and (self.clock() - latest.at).total_seconds() < SAME_VISIT_SECONDS
            )
            if not same_visit:
                actions = [self.record(user_id, staff, LOOKUP, culture), *actions][:KEEP]
            return actions
        except StoreUnavailable:
            log.warning("staff history unavailable: the store did not answer")
            return None
