"""Who may open the support pages: staff accounts, by login form or HTTP Basic.

Staff accounts (`WALLET_PROXY_STAFF_USERS`) are separate from Braze's API keys, so
neither opens the other's door. A form login keeps the staff name in Flask's signed
session cookie; HTTP Basic is checked on every request (for curl). Browsers resend
both without asking, so every POST also carries a per-session CSRF token.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
import threading
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from cachetools import TTLCache
from flask import request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.security import check_password_hash, generate_password_hash

from ..errors import InvalidRequest, TooManyAttempts, Unauthorized
from ..services import services

CSRF_FIELD = "csrf_token"
# A form login lasts one working day, however long the browser keeps the cookie.
SESSION_SECONDS = 12 * 3600
MIN_PASSWORD_LENGTH = 8
# Password guessing: after this many failures for one name, each less than the window
# apart, that name is refused until a window has passed since the last failure.
MAX_FAILURES = 10
FAILURE_WINDOW = 15 * 60


class LoginThrottle:
    """Failed logins per staff name, in this process (so per worker without shared state).

    Keyed by name rather than address: behind a load balancer every agent shares one
    address. An attacker can hold one name locked, but can't guess at leisure.
    """

    def __init__(
        self,
        *,
        timer: Callable[[], float],
        limit: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
    ):
        self.limit = limit
        self.window = window
        self.timer = timer
        self._failures: TTLCache = TTLCache(maxsize=10_000, ttl=window, timer=timer)
        self._lock = threading.Lock()

    def wait(self, name: str) -> int:
        """Seconds before `name` may try again; 0 when it may now."""
        with self._lock:
            count, last = self._failures.get(name[:64], (0, 0.0))
        if count < self.limit:
            return 0
        return max(1, math.ceil(last + self.window - self.timer()))

    def record(self, name: str, *, success: bool) -> None:
        with self._lock:
            if success:
                self._failures.pop(name[:64], None)
            else:
                count, _ = self._failures.get(name[:64], (0, 0.0))
                self._failures[name[:64]] = (count + 1, self.timer())


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

    Raises TooManyAttempts while the name is throttled, right password or not.
    """
    throttle = services().login_throttle
    wait = throttle.wait(name)
    if wait:
        raise TooManyAttempts(retry_after=wait)
    users = staff_users()
    known = users.get(name)
    if known is None:
        method = next(iter(users.values())).partition("$")[0]
        check_password_hash(_dummy_hash(method), password)
        valid = False
    else:
        valid = check_password_hash(known, password)
    throttle.record(name, success=valid)
    return valid


def _hash_tag(pw_hash: str) -> str:
    """Ties a session to the password it was opened with: a new hash ends old sessions."""
    return hashlib.sha256(pw_hash.encode()).hexdigest()[:16]


def log_in(name: str) -> None:
    """Start a fresh session (new CSRF token too), so a planted cookie is never reused."""
    session.clear()
    session["staff"] = name
    session["tag"] = _hash_tag(staff_users()[name])
    session["since"] = int(services().clock().timestamp())
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def log_out() -> None:
    session.clear()


def session_staff() -> str | None:
    """The staff name of a live form login, if any."""
    name = session.get("staff")
    pw_hash = staff_users().get(name) if isinstance(name, str) else None
    if pw_hash is None or not hmac.compare_digest(session.get("tag", ""), _hash_tag(pw_hash)):
        return None
    if services().clock().timestamp() - session.get("since", 0) > SESSION_SECONDS:
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
    """Only a path inside the support pages, so the login form is no open redirect."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or not target.startswith(default):
        return default
    return target
