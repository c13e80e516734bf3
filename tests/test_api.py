"""GET /v1/wallets/<id> through Flask's test client, with the real sandbox behind it."""

from __future__ import annotations

import base64
import logging
import time
from datetime import datetime, timedelta

import pytest
import requests_mock as requests_mock_module

from tests.helpers import API_KEY, CI_ALLOWANCE, OTHER_KEY, UNHURRIED
from wallet_proxy.container import services
from wallet_proxy.rules import canonical_culture
from wallet_proxy.sandbox import SandboxServer
from wallet_proxy.sessionm import GET_USER_OFFERS

WALLET_KEYS = {
    "user_id",
    "culture",
    "available_points",
    "total_points",
    "offer_count",
    "has_offers",
    "offers",
    "fetched_at",
    "stale",
    "offers_truncated",
}
OFFER_KEYS = {
    "user_offer_id",
    "offer_id",
    "offer_type",
    "title",
    "description",
    "terms",
    "logo_url",
    "pos_discount_id",
    "points",
    "expires_at",
    "expires_in_days",
}


@pytest.fixture(params=["fast hits", "flask only"])
def app(request, make_app):
    """Every case here runs twice: with fresh hits answered before Flask's dispatch
    (fast_hits.py), as deployed, and with every request through the Flask view."""
    return make_app(FAST_HITS=request.param == "fast hits")


def basic(password: str, user: str = "braze") -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_alice_live_offers_only(client, auth):
    response = client.get("/v1/wallets/demo-alice", headers=auth)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == WALLET_KEYS
    assert (body["user_id"], body["culture"], body["stale"]) == ("demo-alice", "en-US", False)
    assert body["offers_truncated"] is False
    assert (body["available_points"], body["total_points"]) == (1250, 4000)
    assert body["offer_count"] == len(body["offers"]) == 3
    assert body["has_offers"] is True
    for offer in body["offers"]:
        assert set(offer) == OFFER_KEYS
        assert all(isinstance(offer[k], str) for k in OFFER_KEYS - {"points", "expires_in_days"})
    days = [offer["expires_in_days"] for offer in body["offers"]]
    assert days[-1] == -1 and body["offers"][-1]["expires_at"] == ""
    assert days[:-1] == sorted(days[:-1]) and all(d >= 0 for d in days[:-1])


def test_culture_and_limit(client, auth):
    english = client.get("/v1/wallets/demo-alice", headers=auth).get_json()
    spanish = client.get("/v1/wallets/demo-alice?culture=es-ES&limit=1", headers=auth).get_json()
    assert spanish["culture"] == "es-ES"
    assert spanish["offer_count"] == 3 and len(spanish["offers"]) == 1
    assert spanish["offers"][0]["user_offer_id"] == english["offers"][0]["user_offer_id"]
    assert spanish["offers"][0]["title"] != english["offers"][0]["title"]


def test_user_without_offers(client, auth):
    body = client.get("/v1/wallets/demo-bob", headers=auth).get_json()
    assert (body["offer_count"], body["has_offers"], body["offers"]) == (0, False, [])


def test_paged_wallet_is_complete(make_app, auth, sandbox):
    client = make_app(**UNHURRIED).test_client()
    body = client.get("/v1/wallets/demo-carol?limit=5", headers=auth).get_json()
    assert body["offer_count"] == 2500 and len(body["offers"]) == 5
    assert sandbox.stats()["calls"] == 3


def test_second_call_is_a_cache_hit(client, auth, sandbox):
    first = client.get("/v1/wallets/demo-alice", headers=auth)
    second = client.get("/v1/wallets/demo-alice?limit=2", headers=auth)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert sandbox.stats()["calls"] == 1
    other_culture = client.get("/v1/wallets/demo-alice?culture=es-ES", headers=auth)
    assert other_culture.headers["X-Cache"] == "MISS"


def test_cache_goes_stale_after_ttl(client, auth, sandbox, clock):
    client.get("/v1/wallets/demo-alice", headers=auth)
    clock.advance(seconds=61)
    again = client.get("/v1/wallets/demo-alice", headers=auth)
    assert again.headers["X-Cache"] == "STALE"
    assert again.get_json()["stale"] is True
    assert int(again.headers["Age"]) == 61


def test_offer_expiring_while_cached_is_dropped(clock, make_app):
    # A SessionM whose clock runs 3 days minus 5 minutes behind: alice's offer that
    # "expires in 3 days" there expires 5 minutes from now here.
    lag = timedelta(days=3) - timedelta(minutes=5)
    with SandboxServer(clock=lambda: clock.now - lag) as behind:
        app = make_app(SESSIONM_CONNECT_URL=behind.url, WALLET_PROXY_CACHE_TTL=3600)
        client = app.test_client()
        auth = {"Authorization": f"Bearer {API_KEY}"}
        before = client.get("/v1/wallets/demo-alice", headers=auth).get_json()
        soonest = before["offers"][0]
        assert soonest["expires_in_days"] == 0
        clock.advance(minutes=6)
        after = client.get("/v1/wallets/demo-alice", headers=auth)
        assert after.headers["X-Cache"] == "HIT"
        assert behind.stats()["calls"] == 1
    ids = [offer["user_offer_id"] for offer in after.get_json()["offers"]]
    assert soonest["user_offer_id"] not in ids
    assert after.get_json()["offer_count"] == before["offer_count"] - 1


def test_an_expiry_is_rounded_up_to_the_second_never_shown_past(client, auth, sandbox, clock):
    """Issue 19 item 14: SessionM's expiries have fractions of a second. Cut to the second,
    an offer still live for 0.2 s showed an expiry 0.4 s before now."""
    expires = clock.now + timedelta(hours=1, milliseconds=600)
    sandbox.configure(
        extra_offers=[{"id": "soon", "name": "Soon", "expiration_date": expires.isoformat()}]
    )
    clock.advance(hours=1, milliseconds=400)
    body = client.get("/v1/wallets/demo-alice", headers=auth).get_json()
    (soon,) = [offer for offer in body["offers"] if offer["user_offer_id"] == "soon"]
    shown = datetime.fromisoformat(soon["expires_at"])
    assert shown > clock.now
    assert shown == expires.replace(microsecond=0) + timedelta(seconds=1)
    assert soon["expires_in_days"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": f"bearer {OTHER_KEY}"},
        basic(API_KEY),
        basic(OTHER_KEY, user=""),
    ],
)
def test_accepted_credentials(client, headers):
    assert client.get("/v1/wallets/demo-bob", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-123"},
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Token {API_KEY}"},
        basic("wrong-key-123"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic \u00e9\u00e9"},
        {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()},
    ],
)
def test_refused_credentials(client, headers, sandbox):
    response = client.get("/v1/wallets/demo-bob", headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {
        "error": {"code": "unauthorized", "message": "A valid API key is required."}
    }
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert sandbox.stats()["calls"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/wallets/" + "a" * 129,
        "/v1/wallets/bad%20id",
        "/v1/wallets/bad$id",
        "/v1/wallets/%C3%A9",
        "/v1/wallets/demo-alice?culture=english",
        "/v1/wallets/demo-alice%0A",
        "/v1/wallets/demo-alice?culture=en-US%0A",
        "/v1/wallets/demo-alice?limit=5%0A",
        "/v1/wallets/demo-alice?culture=en--US",
        "/v1/wallets/demo-alice?limit=0",
        "/v1/wallets/demo-alice?limit=1001",
        "/v1/wallets/demo-alice?limit=ten",
        "/v1/wallets/demo-alice?limit=1.5",
    ],
)
def test_bad_input_is_400_json(client, auth, path, sandbox):
    response = client.get(path, headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"
    assert sandbox.stats()["calls"] == 0


@pytest.mark.parametrize("user_id", ["a", "x" * 128, "user.name_1-2@example.com", "a+b:c"])
def test_every_allowed_character(client, auth, user_id):
    response = client.get(f"/v1/wallets/{user_id}", headers=auth)
    assert response.status_code == 404  # valid, but not a sandbox customer
    assert response.get_json()["error"]["code"] == "user_not_found"


@pytest.mark.parametrize(
    ("written", "culture"),
    [
        ("es-ES", "es-ES"),
        ("es_ES", "es-ES"),
        ("ES-es", "es-ES"),
        ("es-es", "es-ES"),
        ("EN", "en"),
        ("ES-419", "es-419"),
        ("zh_hant_tw", "zh-Hant-TW"),
        ("ZH-HANT", "zh-Hant"),
        ("fil-ph", "fil-PH"),
        ("english", None),
        ("en-", None),
        ("en_-US", None),
        ("en-US\n", None),
    ],
)
def test_one_spelling_of_a_culture(written, culture):
    """BCP 47 tags are case-insensitive; Braze writes locales with `_` (es_ES)."""
    assert canonical_culture(written) == culture


def test_empty_culture_means_the_default(client, auth):
    # What Braze sends for ?culture={{${language}}} when the profile has no language.
    assert client.get("/v1/wallets/demo-bob?culture=", headers=auth).get_json()["culture"] == (
        "en-US"
    )


def test_unknown_query_parameters_are_ignored(client, auth):
    assert client.get("/v1/wallets/demo-bob?utm=1&cb=2", headers=auth).status_code == 200


def test_unknown_user_is_404(client, auth):
    response = client.get("/v1/wallets/nobody", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "user_not_found"


def test_not_found_route_and_method_are_json(client, auth):
    missing = client.get("/v1/nothing", headers=auth)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    wrong = client.post("/v1/wallets/demo-bob", headers=auth)
    assert wrong.status_code == 405
    assert wrong.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


@pytest.mark.parametrize(
    "knobs, status, code",
    [
        ({"status": 500}, 502, "upstream_error"),
        ({"garbage": True}, 502, "upstream_error"),
        ({"huge": True}, 502, "upstream_error"),
        ({"status": 429}, 503, "upstream_unavailable"),
    ],
)
def test_upstream_failures_map_to_json(client, auth, sandbox, knobs, status, code):
    sandbox.configure(**knobs)
    response = client.get("/v1/wallets/demo-alice", headers=auth)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_unreachable_sessionm_is_503_with_retry_after(make_app):
    app = make_app(SESSIONM_CONNECT_URL="http://127.0.0.1:9")
    response = app.test_client().get(
        "/v1/wallets/demo-alice", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "upstream_unavailable"
    assert int(response.headers["Retry-After"]) > 0


def test_hanging_sessionm_is_504_within_deadline(sandbox, make_app):
    deadline = 0.5
    app = make_app(WALLET_PROXY_DEADLINE=deadline)
    sandbox.configure(hang=True)
    started = time.monotonic()
    response = app.test_client().get(
        "/v1/wallets/demo-alice", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    elapsed = time.monotonic() - started
    sandbox.configure(hang=False)
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "upstream_timeout"
    assert elapsed < deadline + CI_ALLOWANCE


def test_secrets_never_reach_logs_or_bodies(client, auth, sandbox, caplog, env):
    caplog.set_level(logging.DEBUG)
    for knobs in ({"status": 401}, {"status": 500}, {"garbage": True}, {}):
        sandbox.configure(**knobs)
        body = client.get("/v1/wallets/demo-alice", headers=auth).get_data(as_text=True)
        assert env["SESSIONM_CONNECT_AUTH"] not in body and API_KEY not in body
    assert env["SESSIONM_CONNECT_AUTH"] not in caplog.text
    assert API_KEY not in caplog.text


def test_unexpected_bug_is_a_json_500_without_traceback(app, auth, monkeypatch):
    service = services(app).wallet_service
    monkeypatch.setattr(service, "lookup", lambda *a, **k: 1 / 0)
    response = app.test_client().get("/v1/wallets/demo-alice", headers=auth)
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    assert "ZeroDivision" not in response.get_data(as_text=True)


def test_wrong_connect_url_path_is_not_mistaken_for_not_found(make_app):
    app = make_app(SESSIONM_CONNECT_URL="https://connect.example.test")
    with requests_mock_module.Mocker() as mock:
        mock.post(
            "https://connect.example.test" + GET_USER_OFFERS,
            status_code=404,
            text="<html>Not Found</html>",
        )
        response = app.test_client().get(
            "/v1/wallets/demo-alice", headers={"Authorization": f"Bearer {API_KEY}"}
        )
    assert response.status_code == 502


def test_health_probes(client, sandbox):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ok",
        "checks": {"config": "ok", "cache": "ok", "sessionm_circuit": "closed"},
    }
    assert sandbox.stats()["calls"] == 0
