"""Connect's get_user_offers over the seeded customers, counting calls per customer."""

import base64
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from flask import Flask, Response, request

from .customers import CATEGORY_ID, GENERATED_OFFERS, GROUP_ID, wallet_for
from .state import Sandbox
from .wire import Clock, error, is_int

DEMO_CONNECT_AUTH = base64.b64encode(b"demo-connect-key:demo-connect-secret").decode("ascii")
DEMO_RETAILER_ID = "5f0c6b0e-5a11-4b0b-9d1e-000000000001"

_MAX_TAKE = 1000


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object (Content-Type: application/json)"
    if not isinstance(body.get("user_id"), str) or not body["user_id"]:
        return "user_id is required"
    for name in ("skip", "take"):
        value = body.get(name)
        if value is not None and not (is_int(value) and value >= 0):
            return f"{name} must be a non-negative integer"
    if not isinstance(body.get("culture"), str | None):
        return "culture must be a string"
    return None


class Connect:
    """The offers API; its stats are `calls`, `calls_by_user` and `calls_by_culture` (string
    values only, the culture as it was sent)."""

    def __init__(self, auth: str, retailer_id: str, clock: Clock) -> None:
        self.auth = auth
        self.retailer_id = retailer_id
        self.clock = clock
        self.clear()

    def clear(self) -> None:
        self._calls = 0
        self._calls_by_user: dict[str, int] = {}
        self._calls_by_culture: dict[str, int] = {}

    def stats(self) -> dict[str, Any]:
        return {
            "calls": self._calls,
            "calls_by_user": dict(self._calls_by_user),
            "calls_by_culture": dict(self._calls_by_culture),
        }

    def register(self, app: Flask, sandbox: Sandbox) -> None:
        @app.post("/offers/api/2.0/offers/get_user_offers")
        def get_user_offers() -> Response:
            body = request.get_json(silent=True)
            authorization = request.headers.get("Authorization")
            fields = body if isinstance(body, dict) else {}
            user_id, culture = fields.get("user_id"), fields.get("culture")
            knobs = sandbox.knobs()
            return sandbox.answer(
                lambda: self.user_offers(
                    authorization,
                    body,
                    generated_offers=knobs["generated_offers"],
                    offer_padding=knobs["offer_padding"],
                    extra_offers=knobs["extra_offers"],
                ),
                arrived=lambda: self._count(user_id, culture),
            )

    def _count(self, user_id: Any, culture: Any) -> None:
        self._calls += 1
        if isinstance(user_id, str):
            self._calls_by_user[user_id] = self._calls_by_user.get(user_id, 0) + 1
        if isinstance(culture, str):
            self._calls_by_culture[culture] = self._calls_by_culture.get(culture, 0) + 1

    def user_offers(
        self,
        authorization: str | None,
        body: Any,
        *,
        generated_offers: int = GENERATED_OFFERS,
        offer_padding: int = 0,
        extra_offers: Sequence[dict[str, Any]] = (),
    ) -> tuple[int, dict[str, Any]]:
        """get_user_offers, with SessionM's habit of errors inside HTTP 200.

        `generated_offers` is the size of every `user-*` wallet, `offer_padding` characters
        more in each of their descriptions; `extra_offers` (raw, as SessionM might send
        them) come first in every wallet.
        """
        if authorization != f"Basic {self.auth}":
            return 401, error("INVALID_API_KEY", "Authorization does not match the Connect key")
        problem = _body_problem(body)
        if problem:
            return 400, error("VALIDATION", problem)
        if body.get("retailer_id") != self.retailer_id:
            return 200, error("ACCESS_DENIED", "this key has no access to that retailer_id")
        user_id = body["user_id"]
        wallet = wallet_for(user_id, generated_offers, offer_padding)
        if wallet is None:
            return 200, error("user_not_found", f"no user with id {user_id}")
        # Texts exist in English and Spanish; any other culture gets English, as SessionM
        # falls back to the retailer's default language without saying so.
        spanish = (body.get("culture") or "en-US").lower().startswith("es")
        skip = body.get("skip") or 0
        take = _MAX_TAKE if body.get("take") is None else min(body["take"], _MAX_TAKE)
        extra = list(extra_offers)[skip : skip + take]
        offers, total = wallet.offers(
            self.clock().astimezone(UTC),
            spanish,
            max(0, skip - len(extra_offers)),
            take - len(extra),
        )
        offers, total = extra + offers, total + len(extra_offers)
        everything = "Todas las ofertas" if spanish else "All Offers"
        payload = {
            "user": {"opted_in": wallet.opted_in, "activated": wallet.activated},
            "user_id": user_id,
            "user_offers": offers,
            "total_records": total,
            "offer_groups": [{"id": GROUP_ID, "name": everything, "sort_order": 0}],
            "offer_categories": [{"id": CATEGORY_ID, "name": everything, "sort_order": 0}],
            "total_points": wallet.total_points,
            "available_points": wallet.available_points,
        }
        return 200, {"status": "ok", "payload": payload}
