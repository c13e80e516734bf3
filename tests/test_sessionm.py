"""The SessionM clients: every branch of the wire format against requests-mock, and what a
failure says about SessionM having acted on the call over real HTTP to the sandbox."""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
import requests
import urllib3

from tests.helpers import free_port, wait_until
from wallet_proxy.errors import (
    InvalidUpstreamPayload,
    NotApplied,
    UpstreamConnectRefused,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerDeclined,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UserNotFound,
)
from wallet_proxy.sandbox import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET
from wallet_proxy.sessionm import GET_USER_OFFERS, MAX_BODY_BYTES, ConnectClient, pooled_session
from wallet_proxy.sessionm_core import CoreClient, maybe_applied
from wallet_proxy.upstream import is_outage

BASE = "https://connect.example.test"
URL = BASE + GET_USER_OFFERS
RETAILER = "5f0c6b0e-5a11-4b0b-9d1e-000000000001"
FETCHED = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


@pytest.fixture
def client():
    return ConnectClient(
        BASE,
        "c2VjcmV0OmtleQ==",
        RETAILER,
        session=pooled_session(4),
        connect_timeout=0.5,
        read_timeout=1.5,
        clock=lambda: FETCHED,
    )


def fetch(client, user_id="u-1", culture="en-US"):
    return client.fetch_wallet(user_id, culture, deadline=time.monotonic() + 2)


def ok(offers, total=None, **payload):
    return {
        "status": "ok",
        "payload": {
            "user_id": "u-1",
            "user_offers": offers,
            "total_records": len(offers) if total is None else total,
            "total_points": 1000,
            "available_points": 100,
            **payload,
        },
    }


def test_sends_what_sessionm_expects(client, requests_mock):
    requests_mock.post(URL, json=ok([]))
    fetch(client, "u-1", "es-ES")
    sent = requests_mock.last_request
    assert sent.headers["Authorization"] == "Basic c2VjcmV0OmtleQ=="
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.json() == {
        "retailer_id": RETAILER,
        "user_id": "u-1",
        "skip": 0,
        "take": 1000,
        "include_pending_extended_data": False,
        "culture": "es-ES",
    }


def test_reads_points_and_offers(client, requests_mock):
    requests_mock.post(
        URL,
        json=ok(
            [
                {
                    "user_offer_id": "uo-1",
                    "offer_id": "o-1",
                    "offer_type": "manual_fulfillment",
                    "name": "Coffee",
                    "points": 5,
                    "expiration_date": "2026-12-31T23:59:59Z",
                }
            ]
        ),
    )
    wallet = fetch(client)
    assert (wallet.available_points, wallet.total_points) == (100, 1000)
    assert wallet.fetched_at == FETCHED
    (offer,) = wallet.offers
    assert (offer.user_offer_id, offer.offer_id, offer.title, offer.points) == (
        "uo-1",
        "o-1",
        "Coffee",
        5,
    )
    assert offer.expires_at == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize("status", ["ok", "OK", "Ok"])
def test_status_in_any_case(client, requests_mock, status):
    requests_mock.post(URL, json={**ok([]), "status": status})
    assert fetch(client).available_points == 100


def test_follows_pages_until_total_records(client, requests_mock):
    pages = [
        ok([{"user_offer_id": f"p{skip}-{i}"} for i in range(n)], total=2500)
        for skip, n in ((0, 1000), (1000, 1000), (2000, 500))
    ]
    requests_mock.post(URL, [{"json": page} for page in pages])
    wallet = fetch(client)
    assert len(wallet.offers) == 2500
    assert [r.json()["skip"] for r in requests_mock.request_history] == [0, 1000, 2000]


def test_stops_paging_on_an_empty_page(client, requests_mock):
    requests_mock.post(URL, [{"json": ok([{"id": "a"}], total=50)}, {"json": ok([], total=50)}])
    assert len(fetch(client).offers) == 1
    assert requests_mock.call_count == 2


def test_endless_paging_is_refused(client, requests_mock):
    requests_mock.post(URL, json=ok([{"id": "a"}], total=10**9))
    with pytest.raises(InvalidUpstreamPayload):
        fetch(client)


def test_field_variants(client, requests_mock):
    requests_mock.post(
        URL,
        json=ok(
            [
                {
                    "id": 42,
                    "title": "Via title",
                    "redemption_end_date": "2026-12-01T10:00:00.1234567Z",
                    "media": [
                        {"uri": "https://x/hero.jpg", "category_name": "Hero"},
                        {"uri": "https://x/logo.png", "category_name": "Brand Logo"},
                    ],
                    "points": "15",
                    "is_redeemable": "true",
                    "surprise": {"nested": True},
                },
                {
                    "user_offer_id": "uo",
                    "id": "ignored",
                    "name": None,
                    "description": None,
                    "media": [{"uri": "https://x/only.png"}],
                    "expiration_date": None,
                },
            ]
        ),
    )
    first, second = fetch(client).offers
    assert first.user_offer_id == "42"
    assert first.title == "Via title"
    assert first.logo_url == "https://x/logo.png"
    assert first.points == 15
    assert first.expires_at == datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert second.user_offer_id == "uo"
    assert (second.title, second.description) == ("", "")
    assert second.logo_url == "https://x/only.png"
    assert second.expires_at is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2020-09-01T14:54:29Z", datetime(2020, 9, 1, 14, 54, 29, tzinfo=UTC)),
        ("2020-09-01T14:54:29.5Z", datetime(2020, 9, 1, 14, 54, 29, 500000, tzinfo=UTC)),
        ("2020-03-09T10:11:30.307Z", datetime(2020, 3, 9, 10, 11, 30, 307000, tzinfo=UTC)),
        ("2020-09-01T14:54:29.5715897Z", datetime(2020, 9, 1, 14, 54, 29, 571589, tzinfo=UTC)),
        ("2020-09-01T14:54:29", datetime(2020, 9, 1, 14, 54, 29, tzinfo=UTC)),
        ("2020-09-01T16:54:29+02:00", datetime(2020, 9, 1, 14, 54, 29, tzinfo=UTC)),
    ],
)
def test_dates(client, requests_mock, text, expected):
    requests_mock.post(URL, json=ok([{"id": "a", "expiration_date": text}]))
    assert fetch(client).offers[0].expires_at == expected


def test_unreadable_offers_are_dropped_not_fatal(client, requests_mock):
    requests_mock.post(
        URL,
        json=ok(
            [
                "not an object",
                {"id": "bad-date", "expiration_date": "next tuesday"},
                {"id": "bad-points", "points": "many"},
                {"id": "good"},
            ]
        ),
    )
    assert [o.user_offer_id for o in fetch(client).offers] == ["good"]


@pytest.mark.parametrize(
    "response, error",
    [
        ({"status_code": 404, "json": {"status": "error"}}, UserNotFound),
        ({"status_code": 404, "text": ""}, UserNotFound),
        ({"json": {"status": "error", "errors": {"code": "user_not_found"}}}, UserNotFound),
        ({"json": {"status": "error", "errors": {"code": "NOT_FOUND"}}}, UserNotFound),
        ({"json": {"status": "error", "errors": [{"code": "USER_NOT_FOUND"}]}}, UserNotFound),
        ({"json": {"status": "error", "errors": {"code": "VALIDATION"}}}, UpstreamRejected),
        ({"json": {"status": "error"}}, UpstreamRejected),
        ({"status_code": 404, "text": "<html>nope</html>"}, UpstreamRejected),
        ({"status_code": 401, "json": {"status": "error"}}, UpstreamRejected),
        ({"status_code": 409, "json": {"status": "error"}}, UpstreamRejected),
        ({"status_code": 500, "json": {"status": "error"}}, UpstreamServerError),
        ({"status_code": 503, "text": "down"}, UpstreamServerDeclined),
        ({"status_code": 302, "text": ""}, UpstreamError),
        ({"status_code": 429, "headers": {"Retry-After": "7"}, "text": ""}, UpstreamRateLimited),
        ({"text": "<html>maintenance</html>"}, InvalidUpstreamPayload),
        ({"json": ["not", "an", "object"]}, InvalidUpstreamPayload),
        ({"json": {"status": "ok"}}, InvalidUpstreamPayload),
        ({"json": {"status": "ok", "payload": []}}, InvalidUpstreamPayload),
        ({"json": {"status": "ok", "payload": {"user_offers": "x"}}}, InvalidUpstreamPayload),
        ({"exc": requests.ConnectTimeout}, UpstreamTimeout),
        ({"exc": requests.ReadTimeout}, UpstreamTimeout),
        ({"exc": requests.ConnectionError}, UpstreamUnavailable),
    ],
)
def test_error_mapping(client, requests_mock, response, error):
    requests_mock.post(URL, **response)
    with pytest.raises(error) as caught:
        fetch(client)
    assert type(caught.value) is error
    assert "c2VjcmV0OmtleQ" not in str(caught.value)


def test_rate_limit_carries_retry_after(client, requests_mock):
    requests_mock.post(URL, status_code=429, headers={"Retry-After": "7"}, text="")
    with pytest.raises(UpstreamRateLimited) as caught:
        fetch(client)
    assert caught.value.retry_after == 7
    assert caught.value.status == 503


def refused() -> requests.ConnectionError:
    """What requests raises when nothing listens: no connection, nothing sent."""
    reason = urllib3.exceptions.NewConnectionError(None, "Connection refused")
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, URL, reason))


def test_one_retry_after_a_refused_connection(client, requests_mock):
    requests_mock.post(URL, [{"exc": refused()}, {"json": ok([])}])
    assert fetch(client).available_points == 100
    assert requests_mock.call_count == 2


def test_no_retry_when_the_request_may_have_arrived(client, requests_mock):
    dropped = requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted."))
    requests_mock.post(URL, [{"exc": dropped}, {"json": ok([])}])
    with pytest.raises(UpstreamUnavailable):
        fetch(client)
    assert requests_mock.call_count == 1


class RawServer:
    """A socket server that reads one request at a time and answers with `reply(conn)`:
    for SessionM failures that a well-behaved HTTP server can't produce."""

    def __init__(self, reply):
        self.reply = reply
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.requests += 1
                self.reply(conn)

    def close(self):
        self.sock.close()


def partial_body(conn):
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"status":')


@pytest.mark.parametrize(
    "reply, error",
    [
        (lambda conn: None, UpstreamUnavailable),  # read the request, closed without a word
        (partial_body, UpstreamUnavailable),  # body cut short
        (lambda conn: (partial_body(conn), time.sleep(2)), UpstreamTimeout),  # body stalls
    ],
)
def test_failures_while_reading_are_our_errors_and_never_resent(reply, error):
    server = RawServer(reply)
    client = ConnectClient(
        server.url,
        "c2VjcmV0OmtleQ==",
        RETAILER,
        session=pooled_session(2),
        connect_timeout=0.5,
        read_timeout=0.5,
    )
    try:
        with pytest.raises(error):
            fetch(client)
    finally:
        server.close()
    assert server.requests == 1


def test_no_retry_after_a_timeout(client, requests_mock):
    requests_mock.post(URL, [{"exc": requests.ReadTimeout}, {"json": ok([])}])
    with pytest.raises(UpstreamTimeout):
        fetch(client)
    assert requests_mock.call_count == 1


def test_oversized_declared_body_is_refused_unread(client, requests_mock):
    requests_mock.post(URL, text="{}", headers={"Content-Length": str(MAX_BODY_BYTES + 1)})
    with pytest.raises(UpstreamError, match="5 MB"):
        fetch(client)


def test_oversized_streamed_body_is_refused(client, requests_mock):
    big = b'{"status":"ok","payload":{"pad":"' + b"x" * MAX_BODY_BYTES + b'"}}'
    requests_mock.post(URL, content=big, headers={"Content-Length": ""})
    with pytest.raises(UpstreamError, match="5 MB"):
        fetch(client)


def test_past_deadline_makes_no_call(client, requests_mock):
    requests_mock.post(URL, json=ok([]))
    with pytest.raises(UpstreamTimeout):
        client.fetch_wallet("u-1", "en-US", deadline=time.monotonic() - 1)
    assert requests_mock.call_count == 0


# --- Retry safety: whether SessionM may have acted on a failed call -------------------


def core_client(url: str) -> CoreClient:
    return CoreClient(
        url,
        DEMO_CORE_API_KEY,
        DEMO_CORE_API_SECRET,
        session=pooled_session(2),
        connect_timeout=0.5,
        read_timeout=2,
    )


def add_visit(client: CoreClient, user_id: str = "user-1", *, within: float = 2) -> dict:
    """One counter tag: the call that must never be applied twice."""
    return client.add_tags(
        user_id, ["visits"], None, external=False, deadline=time.monotonic() + within
    )


def visits(sandbox, user_id: str = "user-1") -> int:
    tags = sandbox.stats()["tag_state"].get(user_id, [])
    return sum(tag["count"] for tag in tags if tag["tag"] == "visits")


@pytest.mark.parametrize(
    ("knobs", "user_id", "error"),
    [
        ({"status": 503}, "user-1", UpstreamServerDeclined),
        ({"status": 429}, "user-1", UpstreamRateLimited),
        ({"status": 400}, "user-1", UpstreamRejected),
        ({"status": 401}, "user-1", UpstreamRejected),
        ({}, "nobody", UserNotFound),
    ],
)
def test_refusals_say_nothing_was_applied_and_nothing_was(sandbox, knobs, user_id, error):
    sandbox.configure(**knobs)
    with pytest.raises(error) as caught:
        add_visit(core_client(sandbox.url), user_id)
    assert type(caught.value) is error
    assert isinstance(caught.value, NotApplied)
    assert not maybe_applied(caught.value)
    assert visits(sandbox, user_id) == 0


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        ({"status": 500}, UpstreamServerError),
        ({"status": 502}, UpstreamServerError),
        ({"status": 504}, UpstreamServerError),
        ({"garbage": True}, InvalidUpstreamPayload),  # a 200 we cannot read
    ],
)
def test_other_answers_say_the_call_may_have_been_applied(sandbox, knobs, error):
    sandbox.configure(**knobs)
    with pytest.raises(error) as caught:
        add_visit(core_client(sandbox.url))
    assert type(caught.value) is error
    assert maybe_applied(caught.value)


def test_a_timed_out_call_may_have_been_applied_and_was(sandbox):
    sandbox.configure(latency=0.8)
    with pytest.raises(UpstreamTimeout) as caught:
        add_visit(core_client(sandbox.url), within=0.3)
    assert maybe_applied(caught.value)
    wait_until(lambda: sandbox.stats()["in_flight"] == 0, timeout=5)
    assert visits(sandbox) == 1  # SessionM went on after we gave up


def test_a_refused_connection_is_tried_once_more_then_says_nothing_was_applied(caplog):
    caplog.set_level(logging.INFO, logger="wallet_proxy.sessionm")
    with pytest.raises(UpstreamConnectRefused) as caught:
        add_visit(core_client(f"http://127.0.0.1:{free_port()}"))
    assert not maybe_applied(caught.value)
    assert caplog.text.count("retrying SessionM after a refused connection") == 1


def test_a_dropped_connection_may_have_been_applied_and_is_not_resent():
    server = RawServer(lambda conn: None)  # read the request, closed without a word
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            add_visit(core_client(server.url))
    finally:
        server.close()
    assert type(caught.value) is UpstreamUnavailable
    assert maybe_applied(caught.value)
    assert server.requests == 1


@pytest.mark.parametrize(
    ("marked", "parent"),
    [
        (UpstreamConnectRefused, UpstreamUnavailable),
        (UpstreamServerDeclined, UpstreamServerError),
        (UpstreamRejected, UpstreamError),
    ],
)
def test_a_marked_class_answers_and_counts_as_the_class_it_refines(marked, parent):
    """Marking what SessionM did changes no answer and no circuit-breaker count."""
    assert issubclass(marked, parent)
    new, old = marked(), parent()
    assert (new.status, new.code, new.message, new.retry_after) == (
        old.status,
        old.code,
        old.message,
        old.retry_after,
    )
    assert is_outage(new) == is_outage(old)
