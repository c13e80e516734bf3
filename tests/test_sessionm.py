"""The SessionM clients: every branch of the wire format against requests-mock, and what a
failure says about SessionM having acted on the call over real HTTP to the sandbox."""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import logging
import shutil
import ssl
import subprocess
import time
import tracemalloc
from datetime import UTC, datetime

import pytest
import requests
import urllib3

from tests.helpers import CI_ALLOWANCE, free_port, wait_until
from tests.raw_servers import KeepAliveServer, RawServer, TrickledHeaders
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
    WalletTooLarge,
)
from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET
from wallet_proxy.schemas import MAX_MEDIA, OFFER_SCHEMA
from wallet_proxy.sessionm import (
    GET_USER_OFFERS,
    MAX_BODY_BYTES,
    MAX_PAGES,
    ConnectClient,
    parse_envelope,
    sessionm_http,
)
from wallet_proxy.sessionm_core import CoreClient, maybe_applied
from wallet_proxy.upstream import is_outage
from wallet_proxy.wallet import iso_z

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
        http=sessionm_http(4, 0.5, 1.5),
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
    requests_mock.post(URL, json=ok([{"id": "a"}], total=5000))  # one offer a page, forever
    with pytest.raises(InvalidUpstreamPayload):
        fetch(client)
    assert requests_mock.call_count == MAX_PAGES


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
    # The first names its expiry with a name we read, the second says "never" (null).
    assert (first.no_expiry_field, second.no_expiry_field) == (False, False)


def test_an_offer_without_an_expiry_field_we_know_is_marked(client, requests_mock):
    """It loads as never expiring, which may be wrong: the mark lets it be counted and shown."""
    requests_mock.post(
        URL,
        json=ok(
            [
                {"id": "a", "valid_until": "2026-12-01T10:00:00Z"},
                {"id": "b", "expires_at": None},
                {"id": "c", "redemption_end_date": ""},
                {"id": "d", "no_expiry_field": False},
            ]
        ),
    )
    offers = fetch(client).offers
    assert [(o.user_offer_id, o.expires_at, o.no_expiry_field) for o in offers] == [
        ("a", None, True),
        ("b", None, False),
        ("c", None, False),
        ("d", None, True),
    ]


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


def partial_body(conn):
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"status":')


def stalled_body(conn):
    """A body cut short that never goes on: the server reads (the rest of the request, if
    it came apart) until the client hangs up, so only the client's timeout ends the call."""
    partial_body(conn)
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


@pytest.mark.parametrize(
    "reply, error",
    [
        (lambda conn: None, UpstreamUnavailable),  # read the request, closed without a word
        (partial_body, UpstreamUnavailable),  # body cut short
        (stalled_body, UpstreamTimeout),  # body stalls
    ],
)
def test_failures_while_reading_are_our_errors_and_never_resent(reply, error):
    server = RawServer(reply)
    client = ConnectClient(
        server.url,
        "c2VjcmV0OmtleQ==",
        RETAILER,
        http=sessionm_http(2, 0.5, 0.5),
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
        http=sessionm_http(2, 0.5, 2),
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


# --- A hostile SessionM: a wall clock on every call, bounded work on every answer -------


def connect_client(url: str, auth: str = "c2VjcmV0OmtleQ==", **kwargs) -> ConnectClient:
    return ConnectClient(
        url,
        auth,
        RETAILER,
        http=sessionm_http(2, 0.5, 1.5),
        **kwargs,
    )


def ok_reply(conn, body: bytes | None = None):
    body = body or json.dumps(ok([{"id": "a"}])).encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


# A deadline under the clients' 1.5 s read timeout, which a trickle never trips anyway.
DEADLINE = 1.0


@pytest.mark.parametrize("api", ["connect", "core"])
def test_trickled_headers_are_cut_at_the_deadline_and_the_socket_closed(api):
    trickle = TrickledHeaders()
    server = RawServer(trickle)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeout):
            if api == "connect":
                connect_client(server.url).fetch_wallet(
                    "u-1", "en-US", deadline=started + DEADLINE
                )
            else:
                add_visit(core_client(server.url), within=DEADLINE)
        elapsed = time.monotonic() - started
        # The server only learns of it at its next byte or the one after.
        assert trickle.hung_up.wait(10), "the connection was never closed"
    finally:
        server.close()
    assert DEADLINE <= elapsed < DEADLINE + CI_ALLOWANCE  # the deadline, not forever


def test_trickled_headers_over_tls_are_cut_at_the_deadline(tmp_path, monkeypatch):
    """SessionM is HTTPS: the cut must also end a read blocked inside TLS."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed: run `make test` (it installs it)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    trickle = TrickledHeaders(interval=0.3)
    server = RawServer(trickle, tls=context)
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # they would override `verify`
        monkeypatch.delenv(variable, raising=False)
    client = connect_client(server.url.replace("http://", "https://"))
    client.calls.http.session.verify = str(cert)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeout):
            client.fetch_wallet("u-1", "en-US", deadline=started + DEADLINE)
        elapsed = time.monotonic() - started
        assert trickle.hung_up.wait(10), "the connection was never closed"
    finally:
        server.close()
    assert DEADLINE <= elapsed < DEADLINE + CI_ALLOWANCE


def test_a_connection_cut_at_the_deadline_is_discarded_not_reused():
    trickle = TrickledHeaders(interval=0.2)
    server = RawServer(lambda conn: trickle(conn) if server.requests == 1 else ok_reply(conn))
    client = connect_client(server.url)
    try:
        with pytest.raises(UpstreamTimeout):
            client.fetch_wallet("u-1", "en-US", deadline=time.monotonic() + 0.5)
        assert trickle.hung_up.wait(10)
        assert [o.user_offer_id for o in fetch(client).offers] == ["a"]
    finally:
        server.close()
    assert server.requests == 2  # a new connection: the cut one was not pooled


def test_a_deadline_that_passes_after_its_call_never_cuts_the_next_call(sandbox):
    """The keep-alive connection a finished call leaves in the pool is the next call's."""
    client = connect_client(sandbox.url, DEMO_CONNECT_AUTH)
    client.fetch_wallet("user-1", "en-US", deadline=time.monotonic() + 0.4)
    sandbox.configure(latency=0.8)  # the next call outlives the first one's deadline
    wallet = client.fetch_wallet("user-2", "en-US", deadline=time.monotonic() + 5)
    assert len(wallet.offers) == 3


def test_a_connection_is_kept_open_for_the_next_call():
    """SessionM keeps connections alive: calls reuse one (no new TCP or TLS handshake each)
    once an answer has been read to its end."""
    server = KeepAliveServer(lambda conn, n: ok_reply(conn))
    client = connect_client(server.url)
    try:
        for _ in range(3):
            assert [o.user_offer_id for o in fetch(client).offers] == ["a"]
    finally:
        server.close()
    assert (server.connections, server.requests) == (1, 3)


def test_a_kept_connection_is_not_cut_by_its_previous_calls_deadline():
    """The previous call's deadline passes while the next call, on the same connection,
    waits for its slower answer."""
    server = KeepAliveServer(lambda conn, n: (n > 1 and time.sleep(0.8), ok_reply(conn)))
    client = connect_client(server.url)
    try:
        client.fetch_wallet("u-1", "en-US", deadline=time.monotonic() + 0.4)
        wallet = client.fetch_wallet("u-2", "en-US", deadline=time.monotonic() + 5)
    finally:
        server.close()
    assert [o.user_offer_id for o in wallet.offers] == ["a"]
    assert server.connections == 1


def test_redirects_are_not_followed():
    elsewhere = RawServer(ok_reply)
    server = RawServer(
        lambda conn: conn.sendall(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: %s%s\r\nContent-Length: 0\r\n\r\n"
            % (elsewhere.url.encode(), GET_USER_OFFERS.encode())
        )
    )
    try:
        with pytest.raises(UpstreamError, match="HTTP 307"):
            fetch(connect_client(server.url))
    finally:
        server.close()
        elsewhere.close()
    assert elsewhere.requests == 0


def test_a_gzip_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=6)  # 64 MB in 64 KB
    server = RawServer(
        lambda conn: conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(bomb), bomb)
        )
    )
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamError, match="5 MB"):
            fetch(connect_client(server.url))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        server.close()
    assert peak < 24 * 1024 * 1024  # the 5 MB cap and a chunk, not 64 MB


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 1_000_000 + b"]" * 1_000_000,
        b'{"status": "error", "errors": {"code": ' + b"[" * 900 + b"]" * 900 + b"}}",
        b'{"status": "ok", "payload": {"user_offers": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    ],
    ids=["a-million-deep", "deep-error-code", "deep-offers"],
)
def test_absurdly_nested_json_is_an_unusable_payload_not_a_crash(client, requests_mock, payload):
    requests_mock.post(URL, content=payload)
    # Earlier tests' garbage is collected first and not while the parser is a thousand
    # frames deep: a finaliser's warning reported from there fails pytest's own hook
    # (a RecursionError formatting it), which is not what this test is about.
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(UpstreamError) as caught:
            fetch(client)
    finally:
        gc.enable()
    assert caught.value.status == 502


def test_an_error_code_is_repeated_only_as_a_short_code():
    code = "BAD\r\nX-Injected: 1 <script>" + "A" * 4_000_000
    error = parse_error({"status": "error", "errors": {"code": code}})
    assert error.message == f"SessionM answered with error {'BADX-INJECTED1SCRIPT' + 'A' * 44}."
    assert parse_error({"status": "error", "errors": {"code": {"nested": 1}}}).message == (
        "SessionM answered with error without a code."
    )


def parse_error(document: dict) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        parse_envelope(200, {}, json.dumps(document).encode())
    return caught.value


def test_a_page_with_more_offers_than_asked_for_is_refused(client, requests_mock):
    requests_mock.post(URL, json=ok([{"id": "a"}] * 1001, total=5000))
    with pytest.raises(InvalidUpstreamPayload, match="more offers than a page holds"):
        fetch(client)


def test_only_an_offers_first_media_are_read(client, requests_mock):
    media = [{"uri": f"https://x/{n}.jpg", "category_name": "Hero"} for n in range(MAX_MEDIA)]
    media.append({"uri": "https://x/logo.png", "category_name": "Logo"})  # one too far
    requests_mock.post(URL, json=ok([{"id": "a", "media": media}]))
    assert fetch(client).offers[0].logo_url == "https://x/0.jpg"


def test_unreadable_offers_are_logged_once_per_wallet(client, requests_mock, caplog):
    bad = [{"id": f"bad-{n}", "expiration_date": "soon"} for n in range(500)]
    requests_mock.post(URL, json=ok([*bad, "junk", {"id": "good"}]))
    with caplog.at_level(logging.WARNING, logger="wallet_proxy.sessionm"):
        assert [o.user_offer_id for o in fetch(client).offers] == ["good"]
    (line,) = caplog.messages
    assert line == "dropped 501 unreadable offers for u-1 (fields: _schema, expires_at)"


@pytest.mark.parametrize(
    "date",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:30:00-01:00",  # after year 9999 in UTC
        "0000-01-01T00:00:00Z",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00-99:00",
        "2026-02-30T00:00:00Z",
        "99999-01-01T00:00:00Z",
        "",
    ],
)
def test_an_offer_with_an_impossible_date_is_dropped_and_the_rest_answered(
    client, requests_mock, date
):
    offers = [{"id": "odd", "expiration_date": date}, {"id": "good"}]
    requests_mock.post(URL, json=ok(offers))
    ids = [o.user_offer_id for o in fetch(client).offers]
    assert ids == (["odd", "good"] if date == "" else ["good"])  # "" means never expires


def test_dates_at_the_edges_of_the_calendar_are_kept():
    first = OFFER_SCHEMA.load({"id": "a", "expiration_date": "0001-01-01T00:00:00-01:00"})
    last = OFFER_SCHEMA.load({"id": "b", "expiration_date": "9999-12-31T23:30:00+01:00"})
    assert first.expires_at == datetime(1, 1, 1, 1, 0, tzinfo=UTC)
    assert last.expires_at == datetime(9999, 12, 31, 22, 30, tzinfo=UTC)
    assert iso_z(first.expires_at) == "0001-01-01T01:00:00Z"


def test_wallet_caps_count_every_page(requests_mock):
    client = connect_client(BASE, max_offers=2000, max_bytes=10_000_000)
    requests_mock.post(URL, json=ok([{"id": "a"}] * 1000, total=2001))
    with pytest.raises(WalletTooLarge, match="more than 2,000 offers"):
        fetch(client)
    assert requests_mock.call_count == 1  # total_records on the first page already tells

    page = ok([{"id": "a", "description": "x" * 900} for _ in range(1000)], total=3000)
    requests_mock.post(URL, json=page)
    client = connect_client(BASE, max_offers=10_000, max_bytes=2_500_000)
    with pytest.raises(WalletTooLarge, match="larger than 2,500,000 bytes"):
        fetch(client)
    assert requests_mock.call_count == 1 + 3  # about 1 MB a page: refused at the third


def test_a_lone_surrogate_in_a_text_becomes_a_replacement_character(client, requests_mock):
    offer = r'{"id": "a", "name": "x\ud800y", "description": "\ud83d\ude00 pair"}'
    requests_mock.post(URL, text=f'{{"status": "ok", "payload": {{"user_offers": [{offer}]}}}}')
    (read,) = fetch(client).offers
    assert (read.title, read.description) == ("x\ufffdy", "\U0001f600 pair")
