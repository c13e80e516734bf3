"""A hostile SessionM over real HTTP (the sandbox's fault knobs): trickled headers, wallets
too large for us or for Braze, impossible dates and absurd nesting. Every call ends at its
limit, every answer has a bound, and none is a 500."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import API_KEY, LiveServer, wait_until
from wallet_proxy.answers import render_uncached
from wallet_proxy.config import ConfigError, Settings
from wallet_proxy.container import services
from wallet_proxy.sessionm import GET_USER_OFFERS

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def get(app, user_id="demo-alice", **params):
    return app.test_client().get(f"/v1/wallets/{user_id}", query_string=params, headers=AUTH)


def at_once(count, fn):
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(fn, range(count)))


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == {502: "upstream_error"}.get(status, error["code"])
    return error["message"]


# --- 3. Trickled headers: the slot is freed at the limit ------------------------------


def test_trickling_sessionm_holds_the_slots_only_until_the_upstream_timeout(sandbox, make_app):
    app = make_app(
        WALLET_PROXY_UPSTREAM_CONCURRENCY=16,
        WALLET_PROXY_DEADLINE=1,
        WALLET_PROXY_UPSTREAM_TIMEOUT=2,
        WALLET_PROXY_BREAKER_THRESHOLD=17,  # to see the 16 counted with the breaker still closed
    )
    guard = services(app).wallet_service.guard
    sandbox.configure(trickle_headers=0.2)  # a header byte every 0.2 s: no read timeout trips
    with LiveServer(app) as server:

        def wallet(user_id: str) -> requests.Response:
            return requests.get(f"{server.url}/v1/wallets/{user_id}", headers=AUTH, timeout=10)

        slow = at_once(16, lambda i: wallet(f"user-slow-{i}"))
        sandbox.configure(trickle_headers=0)
        assert [r.status_code for r in slow] == [504] * 16
        wait_until(lambda: guard.in_flight == 0, timeout=8)  # freed at the 2 s limit
        assert guard.breaker.failures == 16
        wait_until(lambda: sandbox.stats()["in_flight"] == 0, timeout=8)  # we hung up
        others = at_once(16, lambda i: wallet(f"user-ok-{i}"))
    assert [r.status_code for r in others] == [200] * 16


def test_trickling_sessionm_opens_the_breaker(sandbox, make_app):
    app = make_app(
        WALLET_PROXY_DEADLINE=0.5,
        WALLET_PROXY_UPSTREAM_TIMEOUT=1,
        WALLET_PROXY_BREAKER_THRESHOLD=3,
    )
    sandbox.configure(trickle_headers=0.2)
    assert [r.status_code for r in at_once(3, lambda i: get(app, f"user-{i}"))] == [504] * 3
    wait_until(lambda: services(app).wallet_service.guard.in_flight == 0, timeout=8)
    ready = app.test_client().get("/readyz").get_json()
    assert ready["checks"]["sessionm_circuit"] == "open"
    assert error_of(get(app, "user-99"), 503) == "SessionM is failing; calls are paused briefly."


# --- 4. Wallets too large for us: refused, not cached, the refusal remembered ---------


def test_a_wallet_over_the_offer_cap_is_refused_from_its_first_page(clock, sandbox, make_app):
    app = make_app(WALLET_PROXY_NEGATIVE_TTL=30)
    sandbox.configure(generated_offers=10_001)
    assert "more than 10,000 offers" in error_of(get(app, "user-big"), 502)
    assert sandbox.stats()["calls"] == 1  # total_records on the first page told
    assert "more than 10,000 offers" in error_of(get(app, "user-big"), 502)
    assert sandbox.stats()["calls"] == 1  # remembered: not downloaded again
    clock.advance(seconds=31)
    error_of(get(app, "user-big"), 502)
    assert sandbox.stats()["calls"] == 2


def test_a_wallet_over_the_byte_cap_is_refused_and_not_cached(sandbox, make_app):
    app = make_app(
        WALLET_PROXY_MAX_WALLET_BYTES=600_000,
        WALLET_PROXY_DEADLINE=5,  # pages of a thousand offers, on a busy test machine
        WALLET_PROXY_UPSTREAM_TIMEOUT=5,
    )
    sandbox.configure(generated_offers=5000)  # 0.46 MB of SessionM's JSON a page
    assert "larger than 600,000 bytes" in error_of(get(app, "user-big"), 502)
    assert sandbox.stats()["calls"] == 2  # refused at the page that went over
    service = services(app).wallet_service
    entry = service.peek("user-big", "en-US")
    assert entry is not None and entry.wallet is None and entry.refused


def test_a_refused_wallet_is_served_from_its_stale_copy_meanwhile(clock, sandbox, make_app):
    app = make_app(WALLET_PROXY_NEGATIVE_TTL=30)
    service = services(app).wallet_service
    assert get(app, "user-grows").status_code == 200
    clock.advance(seconds=61)
    sandbox.configure(generated_offers=10_001)
    assert get(app, "user-grows").headers["X-Cache"] == "STALE"  # and a refresh starts
    wait_until(lambda: service.peek("user-grows", "en-US").refused is not None, timeout=5)
    again = get(app, "user-grows")
    assert (again.status_code, again.headers["X-Cache"]) == (200, "STALE")
    assert again.get_json()["offer_count"] == 3 and again.get_json()["stale"] is True
    assert sandbox.stats()["calls"] == 2  # the refusal is remembered
    clock.advance(seconds=31)
    assert get(app, "user-grows").headers["X-Cache"] == "STALE"
    wait_until(lambda: sandbox.stats()["calls"] == 3, timeout=5)  # asked again, once


def test_a_refusal_is_shared_across_instances(sandbox, redis_url, make_app):
    one, two = (make_app(WALLET_PROXY_REDIS_URL=redis_url) for _ in range(2))
    sandbox.configure(generated_offers=10_001)
    message = error_of(get(one, "user-big"), 502)
    assert error_of(get(two, "user-big"), 502) == message
    assert sandbox.stats()["calls"] == 1


# --- 5. Braze's 1 MB: the answer is cut to fit -----------------------------------------


def test_an_answer_that_would_be_a_megabyte_and_a_half_is_cut_to_fit(clock, sandbox, make_app):
    app = make_app(WALLET_PROXY_DEADLINE=5, WALLET_PROXY_UPSTREAM_TIMEOUT=5)
    sandbox.configure(generated_offers=4400)
    response = get(app, "user-many")
    body = response.get_json()
    lookup = services(app).wallet_service.lookup("user-many", "en-US")
    whole = json.loads(render_uncached(lookup, clock.now, None, max_bytes=10**9))
    assert len(json.dumps(whole, ensure_ascii=False, separators=(",", ":"))) > 1_500_000

    assert len(response.data) <= 1_000_000
    assert body["offers_truncated"] is True and whole["offers_truncated"] is False
    assert body["offer_count"] == whole["offer_count"] == 4400
    kept = len(body["offers"])
    assert body["offers"] == whole["offers"][:kept]  # the soonest-expiring ones
    following = json.dumps(whole["offers"][kept], ensure_ascii=False, separators=(",", ":"))
    assert len(response.data) + 1 + len(following.encode()) > 1_000_000  # no room for one more
    limited = get(app, "user-many", limit=5).get_json()
    assert (len(limited["offers"]), limited["offers_truncated"]) == (5, False)


def test_the_answer_limit_is_a_setting(sandbox, make_app):
    app = make_app(WALLET_PROXY_MAX_ANSWER_BYTES=10_000)
    response = get(app, "demo-carol")
    assert len(response.data) <= 10_000
    assert response.get_json()["offers_truncated"] is True
    assert get(app, "demo-alice").get_json()["offers_truncated"] is False


# --- 6. Dates that exist in SessionM's time zone but not in UTC ------------------------


def test_offers_with_impossible_dates_are_dropped_and_the_wallet_answered(sandbox, make_app):
    app = make_app()
    sandbox.configure(
        extra_offers=[
            {"id": "early", "name": "Early", "expiration_date": "0001-01-01T00:00:00+01:00"},
            {"id": "late", "name": "Late", "expiration_date": "9999-12-31T23:30:00-01:00"},
            {"id": "year-0", "name": "Zero", "expiration_date": "0000-06-01T00:00:00Z"},
            {"id": "offset", "name": "Off", "expiration_date": "2030-01-01T00:00:00+25:00"},
            {"id": "edge", "name": "Edge", "expiration_date": "9999-12-31T23:30:00+01:00"},
        ]
    )
    response = get(app)
    assert response.status_code == 200
    body = response.get_json()
    assert body["offer_count"] == 4  # alice's three live offers and the one at the edge
    assert body["offers"][-2]["user_offer_id"] == "edge"
    assert body["offers"][-2]["expires_at"] == "9999-12-31T22:30:00Z"
    assert get(app).headers["X-Cache"] == "HIT"  # cached like any wallet
    assert sandbox.stats()["calls"] == 1
    assert services(app).wallet_service.guard.breaker.failures == 0


def test_a_lone_surrogate_in_an_offer_is_answered_not_a_500(requests_mock, make_app):
    """JSON may escape half a UTF-16 pair, which no UTF-8 answer can carry."""
    url = "https://connect.example.test"
    app = make_app(SESSIONM_CONNECT_URL=url)
    offer = r'{"id": "a", "name": "Caf\udce9"}'
    requests_mock.post(
        url + GET_USER_OFFERS, text=f'{{"status": "ok", "payload": {{"user_offers": [{offer}]}}}}'
    )
    response = get(app, "u-1")
    assert response.status_code == 200
    assert response.get_json()["offers"][0]["title"] == "Caf\ufffd"


# --- 7. JSON nested a million deep -----------------------------------------------------


def test_json_nested_a_million_deep_is_a_502(sandbox, make_app):
    sandbox.configure(deep=True)
    assert error_of(get(make_app()), 502)


def test_json_nested_a_million_deep_is_marked_for_the_other_processes(
    sandbox, redis_url, make_app
):
    app = make_app(WALLET_PROXY_REDIS_URL=redis_url)
    sandbox.configure(deep=True)
    error_of(get(app), 502)
    service = services(app).wallet_service
    assert service.coordination.error(service.key("demo-alice", "en-US")) == (
        "InvalidUpstreamPayload"
    )


# --- The limits' settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WALLET_PROXY_CORE_TIMEOUT", "0"),
        ("WALLET_PROXY_CORE_TIMEOUT", "31"),
        ("WALLET_PROXY_MAX_WALLET_OFFERS", "0"),
        ("WALLET_PROXY_MAX_WALLET_OFFERS", "50001"),  # past what 50 pages can hold
        ("WALLET_PROXY_MAX_WALLET_BYTES", "1000"),
        ("WALLET_PROXY_MAX_ANSWER_BYTES", "9999"),  # no room for the answer's own keys
        ("WALLET_PROXY_MAX_ANSWER_BYTES", "1MB"),
    ],
)
def test_the_limits_are_checked_at_start_up(env, variable, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**env, variable: value})
    assert caught.value.variable == variable


def test_the_limits_defaults(env):
    settings = Settings.from_env(env)
    assert (
        settings.core_timeout,
        settings.max_wallet_offers,
        settings.max_wallet_bytes,
        settings.max_answer_bytes,
    ) == (5.0, 10_000, 20 * 1024 * 1024, 1_000_000)
