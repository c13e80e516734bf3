"""SessionM Connect's offers (get_user_offers), and what every SessionM call shares.

This module knows SessionM's wire format and error envelope and nothing of
caching or Flask. It turns every way a call can go wrong into one of the
`UpstreamError` subclasses, so callers only ever see our error tree.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from marshmallow import ValidationError

from . import metrics
from .budget import NO_WAIT, UNLIMITED, Budget, Claim
from .errors import (
    InvalidUpstreamPayload,
    UpstreamConnectRefused,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerDeclined,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UserNotFound,
    WalletTooLarge,
)
from .http import (
    AnswerTimeout,
    AnswerTooLarge,
    ConnectionRefused,
    ConnectTimeout,
    HttpClient,
    HttpFailure,
)
from .logs import UserRef
from .schemas import OFFER_SCHEMA, PAGE_SCHEMA, OfferFields
from .wallet import Offer, Wallet

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

GET_USER_OFFERS = "/offers/api/2.0/offers/get_user_offers"
PAGE_SIZE = 1000
MAX_PAGES = 50  # 50,000 offers: past that the upstream is paging wrong, not generous.
MAX_BODY_BYTES = 5 * 1024 * 1024
# Defaults of WALLET_PROXY_MAX_WALLET_OFFERS and _BYTES: a whole wallet, every page.
MAX_WALLET_OFFERS = 10_000
MAX_WALLET_BYTES = 20 * 1024 * 1024
NOT_FOUND_CODES = {"user_not_found", "not_found"}
# What of SessionM's error code we repeat: a code, not 5 MB of whatever it sent.
ERROR_CODE_RE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_ERROR_CODE = 64


def connect_timeout_for(deadline: float) -> float:
    """A healthy SessionM connects in milliseconds: give connecting a third of the answer's
    deadline, at most 0.5 s, and keep the rest for the answer itself."""
    return min(0.5, deadline / 3)


def sessionm_http(pool_size: int, connect_timeout: float, read_timeout: float) -> HttpClient:
    """One keep-alive pool per SessionM API and process, its answers capped at 5 MB."""
    return HttpClient(
        pool_size=pool_size,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_body_bytes=MAX_BODY_BYTES,
    )


class SessionmCalls:
    """POST JSON to SessionM and read the answer, all within a deadline, in our error tree.

    Shared by every SessionM client (Connect offers, Core tags): the transport (http.py)
    holds the call to its deadline, headers included, and caps the answer at 5 MB; here a
    refused connection is tried once more (nothing was sent, and it fails fast), SessionM's
    429 is passed on to the request budget, which pauses the whole fleet, and every failure
    becomes the error class that says whether SessionM may have acted on it.
    """

    def __init__(self, http: HttpClient, *, budget: Budget = UNLIMITED):
        self.http = http
        self.budget = budget

    def post(
        self,
        url: str,
        body: dict,
        headers: Mapping[str, str],
        deadline: float,
        *,
        auth: tuple[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """(status, headers, body bytes); `deadline` is a `time.monotonic()` instant."""
        data = json.dumps(body, allow_nan=False).encode()
        for attempt in (1, 2):
            try:
                answer = self.http.post(url, data, headers, deadline, auth=auth)
            except ConnectionRefused:
                # A second refusal means SessionM (or the way to it) is really down.
                if attempt == 2 or deadline - time.monotonic() <= self.http.connect_timeout:
                    raise UpstreamConnectRefused() from None
                log.info("retrying SessionM after a refused connection")
                continue
            except HttpFailure as failure:
                raise _our_error(failure) from None
            if answer.status == 429:  # every process holds back, not just us
                self.budget.pause(retry_after_seconds(answer.headers.get("Retry-After")))
            return answer.status, answer.headers, answer.body
        raise AssertionError("unreachable")


def _our_error(failure: HttpFailure) -> UpstreamError:
    """A failed call as our error tree, whose class says whether it may have arrived."""
    if isinstance(failure, AnswerTooLarge):
        return UpstreamError("SessionM's answer is larger than 5 MB; refused.")
    if isinstance(failure, ConnectTimeout | AnswerTimeout):
        return UpstreamTimeout()
    return UpstreamUnavailable()


def connect_client(
    settings: Settings, clock: Callable[[], datetime], budget: Budget
) -> ConnectClient:
    """The SessionM Connect client (get_user_offers) the wallet service calls."""
    http = sessionm_http(
        settings.upstream_concurrency,
        connect_timeout_for(settings.deadline),
        settings.upstream_timeout,
    )
    return ConnectClient(
        settings.sessionm_connect_url,
        settings.sessionm_connect_auth,
        settings.sessionm_retailer_id,
        http=http,
        clock=clock,
        max_offers=settings.max_wallet_offers,
        max_bytes=settings.max_wallet_bytes,
        budget=budget,
    )


class ConnectClient:
    """`get_user_offers` for one retailer, with every page merged into one Wallet.

    A whole wallet, every page together, is refused (`WalletTooLarge`) past
    `max_offers` offers or `max_bytes` bytes of SessionM's JSON.
    """

    def __init__(
        self,
        base_url: str,
        auth: str,
        retailer_id: str,
        *,
        http: HttpClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_offers: int = MAX_WALLET_OFFERS,
        max_bytes: int = MAX_WALLET_BYTES,
        budget: Budget = UNLIMITED,
    ):
        self.url = base_url.rstrip("/") + GET_USER_OFFERS
        self.retailer_id = retailer_id
        self.calls = SessionmCalls(http, budget=budget)
        self.clock = clock
        self.max_offers = max_offers
        self.max_bytes = max_bytes
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Basic {auth}",
        }

    def close(self) -> None:
        self.calls.http.close()

    def fetch_wallet(
        self, user_id: str, culture: str, *, deadline: float, claim: Claim = NO_WAIT
    ) -> Wallet:
        """Every page of the user's offers; `deadline` is a `time.monotonic()` instant.

        Each page is one request against the budget: the caller asks for the first (before
        it takes a concurrency slot), each further page asks here with `claim`.
        """
        offers: list[Offer] = []
        first: dict | None = None
        skip = size = 0
        unreadable = _Unreadable()
        for _ in range(MAX_PAGES):
            if first is not None:
                self.calls.budget.acquire(claim)
            page, page_size = self._page(user_id, culture, skip, deadline)
            first = first or page
            size += page_size
            raw_offers, total = page["user_offers"], page["total_records"]
            if len(raw_offers) > PAGE_SIZE:
                raise InvalidUpstreamPayload("SessionM sent more offers than a page holds.")
            if max(total or 0, skip + len(raw_offers)) > self.max_offers:
                raise WalletTooLarge(
                    f"This customer's wallet in SessionM has more than {self.max_offers:,} "
                    "offers, more than this service serves."
                )
            if size > self.max_bytes:
                raise WalletTooLarge(
                    f"This customer's wallet in SessionM is larger than {self.max_bytes:,} "
                    "bytes, more than this service serves."
                )
            offers.extend(unreadable.skipped(raw_offers))
            skip += len(raw_offers)
            if not raw_offers or total is None or skip >= total:
                break
        else:
            raise InvalidUpstreamPayload("SessionM kept paging past the page limit.")
        unreadable.log(user_id)
        metrics.offers_without_expiry_field(sum(offer.no_expiry_field for offer in offers))
        assert first is not None  # the loop ran at least once
        return Wallet(
            user_id=user_id,
            culture=culture,
            available_points=first["available_points"],
            total_points=first["total_points"],
            offers=tuple(offers),
            fetched_at=self.clock(),
        )

    def offer_fields(self, user_id: str, culture: str, *, deadline: float) -> OfferFields:
        """The names of the offer fields SessionM sends for this customer (the first page, up
        to 1,000 offers), for `check-config --probe --user`; their values stay here."""
        page, _size = self._page(user_id, culture, 0, deadline)
        return OfferFields.of(page["user_offers"])

    @metrics.sessionm_call("get_user_offers")
    def _page(self, user_id: str, culture: str, skip: int, deadline: float) -> tuple[dict, int]:
        """One page of the payload, and the size of SessionM's answer in bytes."""
        body = {
            "retailer_id": self.retailer_id,
            "user_id": user_id,
            "skip": skip,
            "take": PAGE_SIZE,
            "include_pending_extended_data": False,
            "culture": culture,
        }
        status, headers, raw = self.calls.post(self.url, body, self._headers, deadline)
        payload = parse_envelope(status, headers, raw)
        try:
            return PAGE_SCHEMA.load(payload), len(raw)
        except ValidationError as exc:
            raise InvalidUpstreamPayload(
                f"SessionM's payload has unexpected fields: {sorted(exc.messages)}"
            ) from None


def _error_code(document: object) -> str:
    """SessionM's error code, lower case: only a string is a code, cut to a code's size."""
    errors = document.get("errors") if isinstance(document, dict) else None
    if isinstance(errors, list) and errors:
        errors = errors[0]
    if isinstance(errors, dict):
        errors = errors.get("code")
    if not isinstance(errors, str):
        return ""
    return ERROR_CODE_RE.sub("", errors[: MAX_ERROR_CODE * 4])[:MAX_ERROR_CODE].lower()


def parse_envelope(
    status: int, headers: Mapping[str, str], raw: bytes, *, require_payload: bool = True
) -> dict:
    """SessionM's envelope (`status`, `payload`, `errors`) to its payload, or our error.

    The class raised says whether SessionM may have acted on the call (see errors.py).
    """
    try:
        document = json.loads(raw) if raw.strip() else None
        parsed = True
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        document, parsed = None, False
    if status == 404:
        if not parsed:
            # Not SessionM's envelope: most likely SESSIONM_CONNECT_URL points wrong.
            raise UpstreamRejected("SessionM answered 404 without its error envelope.")
        raise UserNotFound()
    if status == 429:
        raise UpstreamRateLimited(retry_after=retry_after_seconds(headers.get("Retry-After")))
    if status in (401, 403):
        log.error("SessionM refused our credentials (HTTP %s)", status)
        raise UpstreamRejected("SessionM refused this service's credentials.")
    if status == 503:
        raise UpstreamServerDeclined(f"SessionM answered HTTP {status}.")
    if status >= 500:
        raise UpstreamServerError(f"SessionM answered HTTP {status}.")
    if 400 <= status < 500:
        raise UpstreamRejected(f"SessionM answered HTTP {status}.")
    if not 200 <= status < 300:
        raise UpstreamError(f"SessionM answered HTTP {status}.")
    if not parsed or not isinstance(document, dict):
        raise InvalidUpstreamPayload("SessionM's answer is not a JSON object.")
    outcome = str(document.get("status") or "").lower()
    if outcome != "ok":
        code = _error_code(document)
        if code in NOT_FOUND_CODES:
            raise UserNotFound()
        raise UpstreamRejected(f"SessionM answered with error {code.upper() or 'without a code'}.")
    payload = document.get("payload")
    if payload is None and not require_payload:
        return {}
    if not isinstance(payload, dict):
        raise InvalidUpstreamPayload("SessionM's answer has no payload object.")
    return payload


def retry_after_seconds(value: str | None) -> int:
    """A Retry-After header as whole seconds, 1 to 60 (5 when absent or a date)."""
    try:
        return max(1, min(int(value or 5), 60))
    except ValueError:
        return 5


class _Unreadable:
    """Offers that can't be read are dropped, and said so in one log line per wallet."""

    def __init__(self) -> None:
        self.count = 0
        self.fields: set[str] = set()

    def skipped(self, raw_offers: list) -> list[Offer]:
        readable = []
        for raw in raw_offers:
            try:
                readable.append(OFFER_SCHEMA.load(raw))
            except ValidationError as exc:
                self.count += 1
                messages = exc.messages
                self.fields.update(map(str, messages) if isinstance(messages, dict) else ["?"])
        return readable

    def log(self, user_id: str) -> None:
        if self.count:
            log.warning(
                "dropped %d unreadable offers for %s (fields: %s)",
                self.count,
                UserRef(user_id),
                ", ".join(sorted(self.fields)[:10]),
            )
