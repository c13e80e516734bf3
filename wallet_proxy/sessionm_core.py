"""HTTP to SessionM Core's customer tags, with this service's Core key and secret.

Braze's partner page has Braze (or a script) call Core directly, which puts the Core
secret in Braze. The relay and `wallet-proxy tags import` call through this client
instead. It makes its calls as Connect does (sessionm.SessionmCalls: deadline, size cap,
error tree). Whether a
failed call may still have been applied by SessionM, which decides whether a counter
tag may be sent again, is in the class of the error raised (`errors.NotApplied`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from . import metrics
from .budget import UNLIMITED, Budget
from .errors import InvalidRequest, NotApplied, UpstreamServerDeclined
from .http import HttpClient
from .sessionm import (
    SessionmCalls,
    connect_timeout_for,
    parse_envelope,
    retry_after_seconds,
    sessionm_http,
)

if TYPE_CHECKING:
    from .config import Settings


def core_client(
    settings: Settings,
    budget: Budget,
    *,
    pool_size: int | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
) -> CoreClient | None:
    """The SessionM Core client, None without Core settings.

    The relay's defaults answer within WALLET_PROXY_CORE_TIMEOUT; `tags import` passes
    its own.
    """
    url, key, secret = (
        settings.sessionm_core_url,
        settings.sessionm_core_api_key,
        settings.sessionm_core_api_secret,
    )
    if url is None or key is None or secret is None:  # all or none: Settings checks
        return None
    http = sessionm_http(
        pool_size or settings.upstream_concurrency,
        connect_timeout or connect_timeout_for(settings.deadline),
        read_timeout or settings.core_timeout,
    )
    return CoreClient(url, key, secret, http=http, budget=budget)


class CoreClient:
    """`POST .../users/{id}/tags` and `.../external/users/{id}/tags` for one Core app."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        http: HttpClient,
        budget: Budget = UNLIMITED,
    ):
        self._app_url = f"{base_url.rstrip('/')}/priv/v1/apps/{quote(api_key, safe='')}"
        self._auth = (api_key, api_secret)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.calls = SessionmCalls(http, budget=budget)

    def close(self) -> None:
        self.calls.http.close()

    def __repr__(self) -> str:
        return "CoreClient(<credentials hidden>)"

    def tags_url(self, user_id: str, *, external: bool) -> str:
        """The id is one percent-encoded path segment: `/`, `?` and `#` can't escape it.

        `.` and `..` are refused rather than encoded: requests un-escapes `%2E`, and a
        literal dot segment would be resolved by any proxy on the way to another URL.
        """
        if user_id in ("", ".", ".."):
            raise InvalidRequest("The customer id can't be empty, '.' or '..'.")
        users = "external/users" if external else "users"
        return f"{self._app_url}/{users}/{quote(user_id, safe='')}/tags"

    @metrics.sessionm_call("core_tags")
    def add_tags(
        self,
        user_id: str,
        tags: list[str],
        ttl: int | None,
        *,
        external: bool,
        deadline: float,
    ) -> dict:
        """Tag one customer; without `ttl` each call increments counter tags.

        Returns SessionM's payload. Raises our error tree, whose classes say whether
        the call may have been applied (see `maybe_applied`). `deadline` is a
        `time.monotonic()` instant. The caller asks Core's budget for the request first, so
        a refusal is known before anything is journaled or sent.
        """
        url = self.tags_url(user_id, external=external)
        body: dict = {"tags": list(tags)}
        if ttl is not None:
            body["ttl"] = ttl
        status, headers, raw = self.calls.post(url, body, self._headers, deadline, auth=self._auth)
        try:
            # The reference promises Core's envelope, not a payload in its success.
            return parse_envelope(status, headers, raw, require_payload=False)
        except UpstreamServerDeclined as error:
            if headers.get("Retry-After"):
                error.retry_after = retry_after_seconds(headers.get("Retry-After"))
            raise


def maybe_applied(error: BaseException) -> bool:
    """Whether SessionM may have applied a failed tags call: yes unless the error's class
    says it did nothing (errors we don't know, bugs included, count as yes)."""
    return not isinstance(error, NotApplied)
