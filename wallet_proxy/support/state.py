"""What the support pages keep for themselves, built by their `init_app` and closed with the app.

Staff sessions, the history of who looked at whom and the failed logins counted against
guessing live in a store every worker shares (stores.py): Redis when the service has it,
else a SQLite file in the data folder; so do the attributes last written to each Braze
profile (attributes/written.py), which the wallet page shows. The password-hash slots
are this process's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from ..attributes.written import WrittenStore, WrittenStoreError, written_store
from ..config import ConfigError
from ..container import Services
from ..stores import shared_store
from .history import StaffHistory
from .sessions import StaffSessions
from .throttle import HashSlots, LoginThrottle

EXTENSION = "wallet_proxy.support"


@dataclass(frozen=True, slots=True)
class SupportState:
    hash_slots: HashSlots
    # None without staff accounts (then there are no pages either).
    login_throttle: LoginThrottle | None
    staff_sessions: StaffSessions | None
    staff_history: StaffHistory | None
    written: WrittenStore | None  # what was last written to Braze profiles


def build_state(found: Services) -> SupportState:
    settings = found.settings
    store = shared_store(settings, found.redis, found.unix_time) if settings.staff_users else None
    written = None
    if settings.staff_users:
        try:
            written = written_store(found.redis, settings.data_dir, found.unix_time)
        except WrittenStoreError as error:
            raise ConfigError(
                "WALLET_PROXY_DATA_DIR", f"can't read the attributes written to Braze: {error}"
            ) from None
    state = SupportState(
        hash_slots=HashSlots(),
        login_throttle=LoginThrottle(store) if store is not None else None,
        staff_sessions=StaffSessions(store) if store is not None else None,
        staff_history=StaffHistory(store, found.clock) if store is not None else None,
        written=written,
    )
    found.on_close(state.hash_slots.close)
    return state


def support_state(app: Flask | None = None) -> SupportState:
    """The support pages' state of `app`, or of the app handling the current request."""
    found: SupportState = (app or current_app).extensions[EXTENSION]
    return found
