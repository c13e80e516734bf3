"""Who may open the support pages: staff accounts, by login form or HTTP Basic.

Staff accounts (`WALLET_PROXY_STAFF_USERS`) are separate from Braze's API keys, so
neither opens the other's door. A form login keeps the staff name and a session id in
Flask's signed cookie, and the id in the shared store (sessions.py), so signing out
ends it everywhere; HTTP Basic is checked on every request (for curl), within the
limits of throttle.py. Browsers resend both without asking, so every POST also
carries a per-session CSRF token.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from urllib.parse import unquote

from flask import request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.security import check_password_hash, generate_password_hash

from ..container import services
from ..errors import InvalidRequest, Unauthorized
from .history import StaffHistory
from .sessions import SESSION_SECONDS, StaffSessions
from .state import support_state

CSRF_FIELD = "csrf_token"
MIN_PASSWORD_LENGTH = 8
# What a login may send back to: a path on the support pages, in plain URL characters
# (no control characters, spaces or backslashes; they'd break or bend the Location header).
NEXT_RE = re.compile(r"^/support/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*\Z")


class StaffSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, never readable by script, never sent cross-site, Secure on https.

    Secure follows the request rather than a setting, so the same deployment works
    over http on a laptop and over https behind the load balancer.
    """

    def open_session(self, app, request):
        # Only the staff pages use a session: Braze's calls, on the hot path, don't
        # pay for reading and verifying a cookie they never send.
        if not request.path.startswith("/support"):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_httponly(self, app) -> bool:
        return True

    def get_cookie_samesite(self, app) -> str:
        return "Lax"

    def get_cookie_secure(self, app) -> bool:
        return request.is_secure


def staff_users() -> Mapping[str, str]:
    return services().settings.staff_users


@functools.lru_cache(maxsize=8)
def _dummy_hash(method: str) -> str:
    return generate_password_hash(secrets.token_urlsafe(16), method=method)


def check_credentials(name: str, password: str) -> bool:
    """True for a staff account's password; unknown names cost the same hash time.

    Raises TooManyAttempts, without hashing, while the client's address or the name
    is throttled (right password or not) or while the process hashes enough already.
    """
    found = support_state()
    throttle = found.login_throttle
    assert throttle is not None  # the pages exist only with staff accounts, and so does this
    address = request.remote_addr or ""
    throttle.check(name, address)
    users = staff_users()
    known = users.get(name)
    if known is None:
        method = next(iter(users.values())).partition("$")[0]
        # Made inside the slot too: the first burst must not make one hash per thread.
        found.hash_slots.run(lambda: check_password_hash(_dummy_hash(method), password))
        valid = False
    else:
        valid = found.hash_slots.run(lambda: check_password_hash(known, password))
    throttle.record(name, address, success=valid)
    return valid


def staff_sessions() -> StaffSessions:
    found = support_state().staff_sessions
    assert found is not None  # the pages exist only with staff accounts, and so does this
    return found


def staff_history() -> StaffHistory:
    found = support_state().staff_history
    assert found is not None  # as staff_sessions
    return found


def _hash_tag(pw_hash: str) -> str:
    """Ties a session to the password it was opened with: a new hash ends old sessions."""
    return hashlib.sha256(pw_hash.encode()).hexdigest()[:16]


def log_in(name: str) -> None:
    """Start a fresh session (new CSRF token too), so a planted cookie is never reused."""
    session.clear()
    session["sid"] = staff_sessions().start(name)
    session["staff"] = name
    session["tag"] = _hash_tag(staff_users()[name])
    session["since"] = int(services().clock().timestamp())
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def log_out() -> None:
    """End the session in the store too, so a copy of the cookie stops working everywhere."""
    session_id = session.get("sid")
    if isinstance(session_id, str):
        staff_sessions().end(session_id)
    session.clear()


def session_staff() -> str | None:
    """The staff name of a live form login, if any.

    Live: the session is still in the shared store (not signed out), was opened with
    the account's current password, and is less than a working day old.
    """
    name, session_id = session.get("staff"), session.get("sid")
    pw_hash = staff_users().get(name) if isinstance(name, str) else None
    if pw_hash is None or not isinstance(session_id, str):
        return None
    if not hmac.compare_digest(session.get("tag", ""), _hash_tag(pw_hash)):
        return None
    if services().clock().timestamp() - session.get("since", 0) > SESSION_SECONDS:
        return None
    if staff_sessions().holder(session_id) != name:
        return None
    return name


def basic_staff() -> str | None:
    """The staff name from HTTP Basic; Unauthorized when Basic is presented but wrong."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    if check_credentials(auth.username or "", auth.password or ""):
        return auth.username
    raise Unauthorized("Wrong name or password.")


def csrf_token() -> str:
    """This session's CSRF token (created on first use), for every form on the pages."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def check_csrf() -> None:
    expected = session.get(CSRF_FIELD, "")
    given = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise InvalidRequest(
            "This form has expired or did not come from this site: reload the page and try again."
        )


def safe_next(target: str | None, default: str) -> str:
    """Only a plain path inside the support pages: the login form is no open redirect,
    and nothing it sends back can break the Location header."""
    if not target or not NEXT_RE.match(target):
        return default
    # No way out of /support/ by dot segments (browsers also read %2e as a dot).
    path = target.partition("?")[0]
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        return default
    return target
