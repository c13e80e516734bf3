"""Which form logins are still signed in: a record per session in the shared store.

The signed cookie alone can't be taken back: a copy would work until it expires. So
each login gets a random session id, the store keeps it (as a digest, so whoever
reads the store can't sign in with what it finds) for the session's lifetime, and
every request checks it is still there. Signing out deletes it, in every worker at
once, because they all read the same store (Redis, or the data folder's SQLite file).
"""

from __future__ import annotations

import hashlib
import secrets

from ..stores import SharedStore

# A form login lasts one working day, however long the browser keeps the cookie.
SESSION_SECONDS = 12 * 3600
# The record outlives the session a little: the signed cookie's own time says exactly
# when the day is over, by the app's clock; the store only has to forget it afterwards.
RECORD_MARGIN = 300


class StaffSessions:
    def __init__(self, store: SharedStore, *, lifetime: float = SESSION_SECONDS):
        self.store = store
        self.lifetime = lifetime

    @staticmethod
    def _key(session_id: str) -> str:
        return "session:" + hashlib.sha256(session_id.encode()).hexdigest()

    def start(self, name: str) -> str:
        """A new session for staff `name`; its id goes into the signed cookie."""
        session_id = secrets.token_urlsafe(32)
        self.store.put(self._key(session_id), name, ttl=self.lifetime + RECORD_MARGIN)
        return session_id

    def holder(self, session_id: str) -> str | None:
        """The staff name of a live session, None once it ended or expired."""
        return self.store.get(self._key(session_id))

    def end(self, session_id: str) -> None:
        self.store.delete(self._key(session_id))
