"""The SessionM sandbox over real HTTP: contract, seeded users, knobs, stats and Core tags."""

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.helpers import CI_ALLOWANCE, wait_until
from wallet_proxy.sandbox import (
    DEMO_CONNECT_AUTH,
    DEMO_CORE_API_KEY,
    DEMO_CORE_API_SECRET,
    DEMO_RETAILER_ID,
    SEEDED_USERS,
    SandboxServer,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
CORE_AUTH = (DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET)


@pytest.fixture(scope="module")
def server():
    with SandboxServer(clock=lambda: NOW) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.reset()


def get_offers(server, user_id="demo-alice", *, auth=DEMO_CONNECT_AUTH, timeout=5, **fields):
    body = {
        "retailer_id": DEMO_RETAILER_ID,
        "user_id": user_id,
        "skip": 0,
        "take": 1000,
        "include_pending_extended_data": False,
        "culture": "en-US",
        **fields,
    }
    return requests.post(
        f"{server.url}/offers/api/2.0/offers/get_user_offers",
        json=body,
        headers={"Authorization": f"Basic {auth}"},
        timeout=timeout,
    )


def post_tags(server, user_id, body, *, external=False, auth=CORE_AUTH, app=DEMO_CORE_API_KEY):
    users = "external/users" if external else "users"
    url = f"{server.url}/priv/v1/apps/{app}/{users}/{user_id}/tags"
    return requests.post(url, json=body, auth=auth, timeout=5)


def title(offer):
    return offer.get("name") or offer.get("title")


def by_title(response):
    return {title(offer): offer for offer in response.json()["payload"]["user_offers"]}


def test_connect_refuses_a_wrong_or_missing_authorization(server):
    for headers in ({}, {"Authorization": "Basic bm9wZTpub3Bl"}, {"Authorization": "nope"}):
        response = requests.post(
            f"{server.url}/offers/api/2.0/offers/get_user_offers",
            json={"retailer_id": DEMO_RETAILER_ID, "user_id": "demo-alice"},
            headers=headers,
            timeout=5,
        )
        assert response.status_code == 401
        assert response.json()["errors"]["code"] == "INVALID_API_KEY"


def test_wrong_retailer_is_access_denied_inside_http_200(server):
    response = get_offers(server, retailer_id="00000000-0000-0000-0000-000000000000")
    assert response.status_code == 200
    assert response.json()["status"] == "error"
    assert response.json()["errors"]["code"] == "ACCESS_DENIED"


@pytest.mark.parametrize(
    "body",
    [["demo-alice"], {"retailer_id": DEMO_RETAILER_ID}, {"user_id": "demo-alice", "take": -1}],
)
def test_malformed_body_is_a_validation_error(server, body):
    response = requests.post(
        f"{server.url}/offers/api/2.0/offers/get_user_offers",
        json=body,
        headers={"Authorization": f"Basic {DEMO_CONNECT_AUTH}"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["errors"]["code"] == "VALIDATION"


def test_unknown_user_is_not_found_in_lower_case(server):
    response = get_offers(server, "nobody")
    assert response.status_code == 200
    assert response.json()["errors"]["code"] == "user_not_found"


def test_alice_has_the_reference_envelope_and_every_offer_case(server):
    response = get_offers(server)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    payload = body["payload"]
    assert set(payload) == {
        "user",
        "user_id",
        "user_offers",
        "total_records",
        "offer_groups",
        "offer_categories",
        "total_points",
        "available_points",
    }
    assert payload["user_id"] == "demo-alice"
    assert payload["user"] == {"opted_in": True, "activated": True}
    assert (payload["available_points"], payload["total_points"]) == (1250, 4000)
    assert payload["total_records"] == len(payload["user_offers"]) == 5

    offers = by_title(response)
    expired = offers["Free pastry with any drink"]
    assert expired["expiration_date"] == "2024-04-29T12:00:00.123Z"
    assert expired["media"][0] == {
        "uri": f"{server.url}/_sandbox/logos/coffee-logo.png",
        "category_name": "Logo",
    }
    soon = offers["10% off your next coffee"]
    assert soon["expiration_date"] == "2024-05-04T12:00:00.1234560Z"
    assert soon["user_offer_id"] == "a11ce000-0000-4000-8000-000000000002"
    assert {"offer_id", "offer_group_id", "offer_type", "pos_discount_id", "terms"} <= set(soon)
    month = offers["Double points on Saturdays"]
    assert {"id", "title"} <= set(month)
    assert "expiration_date" not in month
    assert month["redemption_end_date"] == "2024-05-31T12:00:00Z"
    assert offers["Free refill, always"]["expiration_date"] is None
    locked = offers["$5 off a bag of beans"]
    assert locked["is_redeemable"] is False
    assert locked["expiration_date"] == "2024-05-11T12:00:00.1234560Z"


@pytest.mark.parametrize(
    ("culture", "expected"),
    [
        ("es-ES", "10 % de descuento en tu próximo café"),
        ("es", "10 % de descuento en tu próximo café"),
        ("fr-FR", "10% off your next coffee"),
        (None, "10% off your next coffee"),
    ],
)
def test_culture_picks_the_language_of_offer_texts(server, culture, expected):
    offers = by_title(get_offers(server, culture=culture))
    assert expected in offers
    assert "Ã" not in offers[expected]["description"]


def test_bob_has_points_but_no_offers(server):
    payload = get_offers(server, "demo-bob").json()["payload"]
    assert payload["user_offers"] == []
    assert payload["total_records"] == 0
    assert payload["available_points"] == 40


def test_carol_needs_three_pages_of_a_thousand(server):
    pages = [
        get_offers(server, "demo-carol", skip=skip).json()["payload"] for skip in (0, 1000, 2000)
    ]
    assert [len(page["user_offers"]) for page in pages] == [1000, 1000, 500]
    assert {page["total_records"] for page in pages} == {2500}
    ids = {offer["user_offer_id"] for page in pages for offer in page["user_offers"]}
    assert len(ids) == 2500
    assert pages[0]["user_offers"][0]["name"] == "Offer 1"
    assert all(
        datetime.fromisoformat(offer["expiration_date"]) > NOW
        for page in pages
        for offer in page["user_offers"]
    )


def test_take_is_capped_and_skip_past_the_end_is_empty(server):
    capped = get_offers(server, "demo-carol", take=5000).json()["payload"]
    assert len(capped["user_offers"]) == 1000
    small = get_offers(server, "demo-carol", skip=10, take=3, culture="es-ES").json()["payload"]
    assert [offer["name"] for offer in small["user_offers"]] == [
        "Oferta 11",
        "Oferta 12",
        "Oferta 13",
    ]
    past = get_offers(server, "demo-carol", skip=9999).json()["payload"]
    assert past["user_offers"] == []
    assert past["total_records"] == 2500


def test_mallory_carries_markup_for_escaping_tests(server):
    [offer] = get_offers(server, "demo-mallory").json()["payload"]["user_offers"]
    assert offer["name"] == "<script>alert(1)</script>"
    assert "<b>html</b>" in offer["description"]


def test_seeded_users_are_described_for_the_cli():
    assert set(SEEDED_USERS) == {"demo-alice", "demo-bob", "demo-carol", "demo-mallory", "user-*"}


def test_any_user_star_id_has_a_generated_wallet(server):
    payload = get_offers(server, "user-123456").json()["payload"]
    assert (payload["user_id"], payload["total_records"]) == ("user-123456", 3)
    assert len(payload["user_offers"]) == 3


def test_latency_knob_delays_answers(server):
    server.configure(latency=0.15)
    started = time.monotonic()
    assert get_offers(server).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_error_rate_knob_fails_a_reproducible_share_of_calls(server):
    config = requests.post(f"{server.url}/_sandbox/config", json={"error_rate": 0.5}, timeout=5)
    assert config.json()["error_rate"] == 0.5
    answers = [get_offers(server) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 500, 200, 500]
    assert answers[1].json()["errors"]["code"] == "INTERNAL"


def test_status_knob_forces_an_http_status(server):
    server.configure(status=503)
    unavailable = get_offers(server)
    assert unavailable.status_code == 503
    assert unavailable.json()["errors"]["code"] == "SERVICE_UNAVAILABLE"
    server.configure(status=429)
    limited = post_tags(server, "user-1", {"tags": ["vip"]})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    server.configure(status=None)
    assert get_offers(server).status_code == 200


def test_hang_knob_holds_calls_until_released(server):
    server.configure(hang=True)
    with pytest.raises(requests.ReadTimeout):
        get_offers(server, timeout=0.1)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(get_offers, server)
        wait_until(lambda: server.stats()["in_flight"] >= 1, timeout=2)
        time.sleep(0.1)
        assert not pending.done()
        requests.post(f"{server.url}/_sandbox/config", json={"hang": False}, timeout=5)
        assert pending.result(timeout=2).status_code == 200


def test_garbage_knob_answers_200_without_json(server):
    server.configure(garbage=True)
    response = get_offers(server)
    assert response.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_huge_knob_answers_valid_json_over_six_megabytes(server):
    server.configure(huge=True)
    response = get_offers(server)
    assert len(response.content) > 6 * 1024 * 1024
    assert response.json()["payload"]["user_id"] == "demo-alice"


def test_trickle_knob_streams_the_body_slowly(server):
    server.configure(trickle=0.02)
    started = time.monotonic()
    response = requests.post(
        f"{server.url}/offers/api/2.0/offers/get_user_offers",
        json={"retailer_id": DEMO_RETAILER_ID, "user_id": "nobody"},
        headers={"Authorization": f"Basic {DEMO_CONNECT_AUTH}"},
        stream=True,
        timeout=5,
    )
    first = b"".join(response.raw.read(1) for _ in range(5))
    assert first == b'{"sta'
    assert time.monotonic() - started >= 0.09
    response.close()
    wait_until(lambda: server.stats()["in_flight"] == 0, timeout=2)


def test_trickle_headers_knob_sends_a_status_line_then_a_header_byte_at_a_time(server):
    server.configure(trickle_headers=0.05)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        body = b'{"user_id": "demo-alice"}'
        sock.sendall(
            b"POST /offers/api/2.0/offers/get_user_offers HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while received.count(b"x") < 5:
            received += sock.recv(100)
        assert received.startswith(b"HTTP/1.1 200 OK\r\nX-Trickle: x")
        assert b"\r\n\r\n" not in received  # the headers never end
    wait_until(lambda: server.stats()["in_flight"] == 0, timeout=5)  # it saw us hang up


def test_deep_knob_answers_json_nested_a_million_deep(server):
    server.configure(deep=True)
    response = get_offers(server)
    assert response.status_code == 200
    assert response.content == b"[" * 1_000_000 + b"]" * 1_000_000


def test_generated_offers_knob_sizes_every_user_star_wallet(server):
    server.configure(generated_offers=2500)
    page = get_offers(server, "user-9", skip=2000).json()["payload"]
    assert (page["total_records"], len(page["user_offers"])) == (2500, 500)
    assert title(page["user_offers"][-1]) == "Offer 2500"
    assert get_offers(server, "demo-bob").json()["payload"]["total_records"] == 0


def test_offer_padding_knob_makes_large_wallets_of_few_offers(server):
    plain = get_offers(server, "user-9").content
    server.configure(offer_padding=5000)
    padded = get_offers(server, "user-9")
    (offer, *_) = padded.json()["payload"]["user_offers"]
    assert offer["description"].startswith("Generated offer number 1. Terms and conditions")
    assert len(offer["description"]) == len("Generated offer number 1.") + 5000
    assert len(padded.content) == len(plain) + 3 * 5000  # 3 offers
    assert "Terms" not in get_offers(server, "demo-alice").text  # only user-* wallets


def test_extra_offers_knob_puts_raw_offers_first_in_every_wallet(server):
    odd = [{"id": "odd-1", "expiration_date": "0001-01-01T00:00:00+01:00"}, {"id": "odd-2"}]
    server.configure(extra_offers=odd)
    first = get_offers(server, take=3).json()["payload"]
    assert first["total_records"] == 5 + 2
    assert first["user_offers"][:2] == odd
    rest = get_offers(server, skip=3, take=10).json()["payload"]["user_offers"]
    assert len(first["user_offers"]) + len(rest) == 7
    assert not any(offer in odd for offer in rest)


def test_unknown_or_bad_knobs_are_refused(server):
    response = requests.post(f"{server.url}/_sandbox/config", json={"latnecy": 1}, timeout=5)
    assert response.status_code == 400
    with pytest.raises(ValueError, match="error_rate"):
        server.configure(error_rate=2)
    with pytest.raises(ValueError, match="hang"):
        server.configure(hang="yes")
    for knobs in (
        {"generated_offers": -1},
        {"generated_offers": 1.5},
        {"offer_padding": -1},
        {"offer_padding": 1_000_001},
        {"extra_offers": {"id": "x"}},
        {"extra_offers": ["x"]},
        {"extra_offers": [{}] * 101},
        {"trickle_headers": -1},
    ):
        with pytest.raises(ValueError, match=next(iter(knobs))):
            server.configure(**knobs)
    assert requests.get(f"{server.url}/_sandbox/config", timeout=5).json()["error_rate"] == 0


def test_stats_count_calls_and_peak_concurrency(server):
    server.configure(latency=0.2)
    users = ["demo-alice", "demo-alice", "demo-bob", "nobody"]
    with ThreadPoolExecutor(len(users)) as pool:
        answers = list(pool.map(lambda user: get_offers(server, user), users))
    assert [answer.status_code for answer in answers] == [200] * 4
    stats = requests.get(f"{server.url}/_sandbox/stats", timeout=5).json()
    assert stats == server.stats()
    assert stats["calls"] == 4
    assert stats["calls_by_user"] == {"demo-alice": 2, "demo-bob": 1, "nobody": 1}
    assert stats["peak_concurrency"] == 4
    assert stats["in_flight"] == 0


def test_reset_forgets_counters_tags_and_knobs(server):
    server.configure(latency=0.01, status=503)
    get_offers(server)
    server.configure(status=None)
    post_tags(server, "user-1", {"tags": ["vip"]})
    requests.post(f"{server.url}/_sandbox/reset", timeout=5)
    stats = server.stats()
    assert (stats["calls"], stats["calls_by_user"], stats["peak_concurrency"]) == (0, {}, 0)
    assert stats["core_calls"] == []
    assert stats["tag_state"] == {}
    assert server.configure() == {
        "latency": 0.0,
        "latency_spread": 0.0,
        "rate_limit": None,
        "retry_after": 1,
        "error_rate": 0.0,
        "status": None,
        "hang": False,
        "trickle": 0.0,
        "garbage": False,
        "huge": False,
        "trickle_headers": 0.0,
        "deep": False,
        "generated_offers": 3,
        "offer_padding": 0,
        "extra_offers": [],
    }


def test_tags_with_ttl_are_set_and_without_ttl_count(server):
    for _ in range(2):
        response = post_tags(server, "demo-alice", {"tags": ["vip"], "ttl": 2592000})
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "payload": {
                "tags": [{"tag": "vip", "count": 1, "expires_at": "2024-05-31T12:00:00Z"}]
            },
        }
    for expected in (1, 2, 3):
        response = post_tags(server, "user-42", {"tags": ["visits"]})
        assert response.json()["payload"]["tags"] == [
            {"tag": "visits", "count": expected, "expires_at": None}
        ]
    stats = server.stats()
    assert len(stats["core_calls"]) == 5
    assert stats["tag_state"]["user-42"][0]["count"] == 3
    assert stats["calls"] == 0


def test_external_tag_path_is_recorded(server):
    response = post_tags(server, "ext-7", {"tags": ["a", "b"], "ttl": 60}, external=True)
    assert response.status_code == 200
    [call] = server.stats()["core_calls"]
    assert call["path"] == f"/priv/v1/apps/{DEMO_CORE_API_KEY}/external/users/ext-7/tags"
    assert (call["user_id"], call["external"], call["tags"], call["ttl"]) == (
        "ext-7",
        True,
        ["a", "b"],
        60,
    )
    assert call["status"] == 200
    assert abs(call["at"] - time.time()) < CI_ALLOWANCE


@pytest.mark.parametrize(
    ("auth", "app"),
    [
        ((DEMO_CORE_API_KEY, "wrong"), DEMO_CORE_API_KEY),
        (CORE_AUTH, "other-app"),
        (None, DEMO_CORE_API_KEY),
    ],
)
def test_tags_refuse_bad_credentials(server, auth, app):
    response = post_tags(server, "user-1", {"tags": ["vip"]}, auth=auth, app=app)
    assert response.status_code == 401
    assert response.json()["errors"]["code"] == "INVALID_API_KEY"


def test_tags_need_an_existing_customer_and_a_valid_body(server):
    missing = post_tags(server, "stranger", {"tags": ["vip"]})
    assert missing.status_code == 404
    assert missing.json()["errors"]["code"] == "NOT_FOUND"
    for body in ({"tags": "vip"}, {"tags": []}, {"tags": ["vip"], "ttl": -1}):
        response = post_tags(server, "user-1", body)
        assert response.status_code == 400
        assert response.json()["errors"]["code"] == "VALIDATION"
    assert server.stats()["tag_state"] == {}


def test_stop_cuts_held_calls_and_closes_the_port():
    sandbox = SandboxServer().start()
    sandbox.configure(hang=True)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(get_offers, sandbox)
        wait_until(lambda: sandbox.stats()["in_flight"] == 1, timeout=2)
        started = time.monotonic()
        sandbox.stop()
        assert time.monotonic() - started < CI_ALLOWANCE  # at once, not when the hang ends
        with pytest.raises(requests.ConnectionError):
            pending.result(timeout=2)
    with pytest.raises(requests.ConnectionError):
        get_offers(sandbox, timeout=1)


# --- docs/sandbox.md lists every knob ------------------------------------------------------


def documented_knobs(heading: str) -> dict[str, str]:
    """The knob table under a heading of docs/sandbox.md: each knob's default as written."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "sandbox.md").read_text()
    section = text.split(f"{heading}\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|.*\| `([^`]*)` \|$", section, re.MULTILINE)
    return dict(rows)


def as_written(value) -> str:
    """A knob's value as the docs write it: JSON, whole numbers without a point."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


@pytest.mark.parametrize(
    ("heading", "path"),
    [
        ("## Knobs: make SessionM misbehave", "/_sandbox/config"),
        ("### Braze knobs", "/_sandbox/braze/config"),
    ],
)
def test_the_sandbox_page_lists_every_knob_with_its_default(sandbox, heading, path):
    """What GET /_sandbox/config (and Braze's) shows, each knob documented once, with the
    default a reset gives it."""
    shown = requests.get(f"{sandbox.url}{path}", timeout=5).json()
    documented = documented_knobs(heading)
    assert set(documented) == set(shown)
    assert documented == {knob: as_written(value) for knob, value in shown.items()}
